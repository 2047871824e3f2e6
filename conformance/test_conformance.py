"""Every backend, dtype, device and case against the reference (``nox -s conformance``).

A backend whose framework is not installed, or a device that is not there, is skipped with the
reason shown in pytest's summary.
"""

import pytest

from conformance import report, vectors
from conformance.tolerances import tolerance

PLAN = list(report.plan())


def _params():
    for name, module, dtype, device, reason in PLAN:
        if reason:
            where = "unavailable" if device == "-" else f"{device}-unavailable"
            yield pytest.param(name, None, "-", device, "-", reason, id=f"{name}-{where}")
            continue
        for case in vectors.CASES:
            yield pytest.param(
                name, module, dtype, device, case, None, id=f"{name}-{dtype}-{device}-{case}"
            )


@pytest.mark.parametrize("name, module, dtype, device, case, reason", list(_params()))
def test_backend_matches_reference(name, module, dtype, device, case, reason):
    if reason:
        pytest.skip(f"{name}: {reason}")
    row = report.run_one(name, module, dtype, device, case)
    assert row.error is None, row.error
    bad = {s: (dev, tolerance(dtype, s)) for s, (dev, ok) in row.stages.items() if not ok}
    assert not bad, f"stages out of tolerance (deviation, bound): {bad}"
    assert "heatmap" in row.stages


@pytest.mark.parametrize("name", vectors.CASES)
def test_vectors_are_reproducible_and_meaningful(name):
    case = vectors.case(name)
    vectors.case.cache_clear()
    again = vectors.case(name)
    for stage, value in case.expected.items():
        assert (value == again.expected[stage]).all(), stage
    heat = case.expected["heatmap"]
    assert heat.shape == (vectors.N_INPUTS, 8, 8) and (heat >= 0).all() and heat.max() > 0
    alphas = case.expected["alphas"]
    assert alphas.shape[0] == case.config.updates + 1 and (alphas[0] == 5.0).all()
    assert not (alphas[-1] == 5.0).all()
