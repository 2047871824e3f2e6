"""PyTorch: ``iba_torch.IBA`` (forward hooks) on ports of the CNN and the ViT, float64 and float32
(TF32 off), on the CPU and on CUDA where there is a GPU; on CUDA also with the compiled step
(device ``cuda-compiled``: ``IBA(compile=True)``, CUDA graphs), held to the same bounds as the
eager step, so that compiled and eager agree within them."""

from __future__ import annotations

import warnings

import numpy as np

from conformance import vectors
from conformance.backends import _common

DTYPES = ("float64", "float32")


def available() -> str | None:
    try:
        import torch  # noqa: F401

        import iba_torch  # noqa: F401
    except ImportError as err:
        return f"cannot import: {err}"
    return None


def devices() -> list[str]:
    import torch

    return ["cpu", "cuda", "cuda-compiled"] if torch.cuda.is_available() else ["cpu"]


def device_reasons() -> dict[str, str]:
    """Devices that are not there, with the reason (shown as skipped rows)."""
    if "cuda" in devices():
        return {}
    why = "no GPU: torch.cuda.is_available() is False"
    return {"cuda": why, "cuda-compiled": why}


def run(case: vectors.Case, dtype: str, device: str) -> dict:
    import torch

    from conformance.ports import torch_ports
    from iba_torch import IBA

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    compiled = device.endswith("-compiled")  # the compiled step (iba_torch._compiled)
    device = device.removesuffix("-compiled")
    torch_dtype = getattr(torch, dtype)
    model = torch_ports.model(case.architecture, case.weights, torch_dtype, device)
    x = torch.as_tensor(case.x, dtype=torch_dtype, device=device)
    first = case.targets[0]
    features = _common.features_by_estimate(
        lambda xi: IBA(first).estimate(model, xi, progress=False), x
    )
    targets = list(case.targets) if len(case.targets) > 1 else first
    explainer = IBA(targets, config=case.config, **({"compile": True} if compiled else {}))
    explainer.estimators = _common.estimators(case, last=False)
    noise = _common.noise(case, last=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explanation = explainer.analyze(
            model,
            x,
            target=np.asarray(case.target),
            noise=noise if len(noise) > 1 else noise[0],
            details=True,
            token_mask=case.token_mask,
        )
    if compiled and not explainer.last_compiled:
        raise RuntimeError(f"the compiled step did not run: {explainer.last_compile_reason}")
    return _common.stages(case, features, explanation, last=False)
