"""An independent float64 replay of the text-IBA authors' arithmetic, and a tiny token model.

Jiang et al. (Findings of EMNLP 2020), code at github.com/bazingagin/IBA,
``scripts/information_bottleneck/IBA.py`` and ``scripts/methods.py``, restated here from that code
with NumPy only (no function of ``iba``), so that the library's ``iba.text_config()`` can be
checked against it (docs/mathematics.md section 6):

- ``Estimator.feed`` is a per-point Welford update; ``std = sqrt(max(S, 1e-5) / max(N, 1))``
  with ``S`` the sum of squared deviations and ``N`` the number of points (no Bessel correction;
  the floor is on ``S``). No active-neuron mask.
- ``InformationBottleneck.forward``: ``x_norm = (x - mean) / std``, ``lam = sigmoid(alpha)``,
  ``log_var = log((1 - lam)^2)``; the sample is ``t = (lam * x_norm + exp(clamp(log_var, -10,
  10) / 2) * eps) * std + mean``; the capacity ``-0.5 * (1 + log_var - (lam * x_norm)^2 -
  exp(log_var))`` uses the unclamped ``log_var``.
- ``_train_bottleneck``: ``alpha = 5`` per token and channel, ``torch.optim.Adam(lr)``, ``steps``
  forward and backward passes over ``batch_size`` noisy copies of the one input, loss
  ``cross_entropy + beta * mean(capacity)``; ``bert_heatmap`` takes the capacity of the **last
  forward pass**, sums it over the hidden axis (nats) and min-max normalises it.
- ``scripts/methods.py`` fits the estimator on ``hidden_states[layer_idx]`` of the explained
  sentence alone (one point), while the bottleneck wraps ``encoder.layer[layer_idx]``: the
  statistics come from the **input** of the bottlenecked layer.

The gradients, which PyTorch's autograd computes in their code, are written out by hand (a test
checks them against finite differences). The clamp passes no gradient where it is active, as
``torch.clamp``.
"""

from __future__ import annotations

import numpy as np

EPS_S = 1e-5  # the authors' Estimator.eps, a floor on S
LOG_VAR_BOUND = 10.0  # _sample_t's clamp
ADAM = (0.9, 0.999, 1e-8)  # torch.optim.Adam's defaults

T, E, D, H, K = 7, 5, 6, 4, 3  # tokens, input width, hidden width, head width, classes


# -- the tiny token model ------------------------------------------------------------------------


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The token model's weights, float64, kernels as ``(in, out)``."""
    rng = np.random.default_rng(seed)

    def dense(d_in: int, d_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(0, scale / np.sqrt(d_in), (d_in, d_out)), rng.normal(0, 0.1, d_out)

    w = {}
    w["enc1.kernel"], w["enc1.bias"] = dense(E, D, 1.5)
    w["enc2.kernel"], w["enc2.bias"] = dense(D, D, 1.5)
    w["mix.kernel"], w["mix.bias"] = dense(D, H, 1.5)
    w["cls.kernel"], w["cls.bias"] = dense(H, K, 3.0)
    return w


def sentences(n: int, seed: int = 1) -> np.ndarray:
    """``n`` token sequences ``(n, T, E)`` (stand-ins for embedded sentences), float64."""
    return np.random.default_rng(seed).standard_normal((n, T, E))


def layer_input(w: dict, x: np.ndarray) -> np.ndarray:
    """``enc1``'s output (tanh): the input of the bottlenecked layer ``enc2``, ``(n, T, D)``."""
    return np.tanh(x @ w["enc1.kernel"] + w["enc1.bias"])


def features(w: dict, x: np.ndarray) -> np.ndarray:
    """``enc2``'s output (linear), where the bottleneck sits, ``(n, T, D)``."""
    return layer_input(w, x) @ w["enc2.kernel"] + w["enc2.bias"]


def head(w: dict, z: np.ndarray) -> np.ndarray:
    """Logits of the layers after ``enc2``: ``tanh(mix)``, mean over tokens, ``cls``."""
    u = np.tanh(z @ w["mix.kernel"] + w["mix.bias"])
    return u.mean(axis=-2) @ w["cls.kernel"] + w["cls.bias"]


def cross_entropy(w: dict, z: np.ndarray, label: int) -> tuple[float, np.ndarray]:
    """``F.cross_entropy`` of the head on ``z`` ``(B, T, D)``, mean over ``B``, and ``dL/dz``."""
    b = z.shape[0]
    u = np.tanh(z @ w["mix.kernel"] + w["mix.bias"])
    logits = u.mean(axis=1) @ w["cls.kernel"] + w["cls.bias"]
    top = logits.max(axis=1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    loss = -logp[:, label].mean()
    dlogits = np.exp(logp)
    dlogits[:, label] -= 1
    dlogits /= b
    du = (dlogits @ w["cls.kernel"].T)[:, None, :] / z.shape[1]
    dz = (du * (1 - u**2)) @ w["mix.kernel"].T
    return float(loss), dz


def head_callback(w: dict, labels: np.ndarray):
    """The head as ``iba.per_sample_bottleneck``'s ``head``: ``Z (N, B, T, D) -> (loss per input,
    dL/dZ)``, the loss of each input the mean over its noise samples."""

    def run(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = [cross_entropy(w, z[i], int(labels[i])) for i in range(z.shape[0])]
        return np.array([r[0] for r in results]), np.stack([r[1] for r in results])

    return run


# -- the authors' arithmetic ---------------------------------------------------------------------


def authors_estimator(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Estimator.feed`` point by point, then ``(mean(), std())``."""
    m = np.zeros(points.shape[1:])
    s = np.zeros(points.shape[1:])
    count = np.zeros(points.shape[1:])
    seen = 0
    for z in points:
        seen += 1
        diff = z - m
        count += 1
        m = m + diff / seen
        s = s + diff * (z - m)
    return m, np.sqrt(np.maximum(s, EPS_S) / np.maximum(count, 1.0))


def project_statistics(points: np.ndarray, min_std: float = 0.01, threshold: float = 0.01):
    """The project's default rule from its description (docs/mathematics.md section 1.2):
    ``(mean, max(std ddof=1, min_std), active)``."""
    std = np.maximum(points.std(axis=0, ddof=1), min_std)
    active = ((points != 0).mean(axis=0) > threshold).astype(np.float64)
    return points.mean(axis=0), std, active


def run_bottleneck(
    w: dict,
    x_feat: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    noise: np.ndarray,
    label: int,
    beta: float = 1e-5,
    steps: int = 10,
    lr: float = 1.0,
    initial_alpha: float = 5.0,
    clamp: bool = True,
    active: np.ndarray | float = 1.0,
) -> dict[str, np.ndarray]:
    """``IBAInterpreter._train_bottleneck`` for one input's features ``x_feat`` ``(T, D)``.

    ``noise``: the standard-normal ``eps`` of every step, ``(steps, B, T, D)``. ``clamp=False``
    and ``active`` give the project's default bottleneck (no clamp, masked) for comparison.
    Returns the capacity of the last forward pass (``buffer_capacity``), its token map
    (``bert_heatmap``: hidden-axis sum in nats, min-max) and the ``alpha`` of every step.
    """
    b1, b2, eps = ADAM
    alpha = np.full(x_feat.shape, float(initial_alpha))
    m = np.zeros_like(alpha)
    v = np.zeros_like(alpha)
    alphas, capacity = [alpha.copy()], None
    x_norm = (x_feat - mean) / std
    k = x_feat.size
    for step in range(1, steps + 1):
        lam = 1 / (1 + np.exp(-alpha))
        log_var = np.log((1 - lam) ** 2)
        if clamp:
            kept = (log_var >= -LOG_VAR_BOUND) & (log_var <= LOG_VAR_BOUND)
            noise_std = np.exp(np.clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND) / 2)
        else:
            kept = np.ones_like(lam, bool)
            noise_std = np.exp(log_var / 2)
        scaled = x_norm * lam
        t_norm = scaled + noise_std * noise[step - 1]
        capacity = -0.5 * (1 + log_var - scaled**2 - np.exp(log_var)) * active
        t = (t_norm * std + mean) * active
        _, grad_t = cross_entropy(w, t, label)
        grad_t = grad_t * active
        # d t / d lam = (x_norm + d noise_std / d lam * eps) * std, d noise_std / d lam = -1
        # where the clamp lets the gradient through, else 0
        d_noise_std = np.where(kept, -1.0, 0.0)
        grad_lam = (grad_t * (x_norm + d_noise_std * noise[step - 1]) * std).sum(axis=0)
        d_cap = (1 / (1 - lam) + lam * x_norm**2 - (1 - lam)) * active
        grad_lam = grad_lam + beta / k * d_cap
        grad = grad_lam * lam * (1 - lam)
        # torch.optim.Adam, single-tensor update
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        step_size = lr / (1 - b1**step)
        denom = np.sqrt(v) / np.sqrt(1 - b2**step) + eps
        alpha = alpha - step_size * m / denom
        alphas.append(alpha.copy())
    token = capacity.sum(axis=1)
    token_map = (token - token.min()) / (token.max() - token.min())
    return {"capacity": capacity, "map": token_map, "alphas": np.stack(alphas)}


def loss_of_alpha(w, x_feat, mean, std, eps_step, label, alpha, beta=1e-5, clamp=True):
    """The loss of one forward pass at ``alpha`` on one step's ``eps``, for finite differences."""
    lam = 1 / (1 + np.exp(-alpha))
    log_var = np.log((1 - lam) ** 2)
    bounded = np.clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND) if clamp else log_var
    x_norm = (x_feat - mean) / std
    scaled = x_norm * lam
    t = (scaled + np.exp(bounded / 2) * eps_step) * std + mean
    capacity = -0.5 * (1 + log_var - scaled**2 - np.exp(log_var))
    loss, _ = cross_entropy(w, t, label)
    return loss + beta * capacity.mean()


def first_gradient(w, x_feat, mean, std, eps_step, label, alpha, beta=1e-5):
    """The replay's ``dL/dalpha`` at ``alpha`` (one step, the clamp on), by the same hand-written
    chain rule as :func:`run_bottleneck`."""
    lam = 1 / (1 + np.exp(-alpha))
    log_var = np.log((1 - lam) ** 2)
    kept = (log_var >= -LOG_VAR_BOUND) & (log_var <= LOG_VAR_BOUND)
    noise_std = np.exp(np.clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND) / 2)
    x_norm = (x_feat - mean) / std
    t = (x_norm * lam + noise_std * eps_step) * std + mean
    _, grad_t = cross_entropy(w, t, label)
    grad_lam = (grad_t * (x_norm + np.where(kept, -1.0, 0.0) * eps_step) * std).sum(axis=0)
    grad_lam = grad_lam + beta / x_feat.size * (1 / (1 - lam) + lam * x_norm**2 - (1 - lam))
    return grad_lam * lam * (1 - lam)


def normalize(token: np.ndarray) -> np.ndarray:
    """Min-max to ``[0, 1]``, as ``bert_heatmap``."""
    return (token - token.min()) / (token.max() - token.min())
