"""Run every backend x dtype x device x case and collect the deviations per stage."""

from __future__ import annotations

import dataclasses
import traceback

from conformance import backends, vectors
from conformance.compare import compare


@dataclasses.dataclass
class Row:
    backend: str
    dtype: str
    device: str
    case: str
    stages: dict  # stage -> (deviation, ok)
    error: str | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is not None or (
            self.error is None and all(ok for _, ok in self.stages.values())
        )


def plan(names=None):
    """``(backend, module or None, dtype, device, reason)`` for every combination to run; a
    ``reason`` marks a backend (device ``"-"``) or a device of it that is skipped."""
    for name in names or backends.BACKENDS:
        try:
            module = backends.load(name)
            reason = module.available()
        except ImportError as err:
            module, reason = None, f"cannot import: {err}"
        if reason:
            yield name, None, "-", "-", reason
            continue
        for dtype in module.DTYPES:
            for device in module.devices():
                yield name, module, dtype, device, None
        for device, why in device_reasons(module).items():
            yield name, None, "-", device, why


def device_reasons(module) -> dict[str, str]:
    """``{device: why it is not there}`` of a backend (a GPU the machine lacks): skipped rows."""
    reasons = getattr(module, "device_reasons", None)
    return dict(reasons()) if reasons else {}


def prefetch(plan_rows) -> None:
    """Let backends that run in a subprocess start it now (``prefetch()``), so that it runs
    beside the backends of this process."""
    started = set()
    for name, module, _, _, reason in plan_rows:
        if module is not None and not reason and name not in started:
            started.add(name)
            if hasattr(module, "prefetch"):
                module.prefetch()


def run_one(name, module, dtype, device, case_name) -> Row:
    case = vectors.case(case_name)
    try:
        got = module.run(case, dtype, device)
    except Exception:
        return Row(name, dtype, device, case_name, {}, error=traceback.format_exc(limit=3))
    return Row(name, dtype, device, case_name, compare(got, case.expected, dtype))


def format_table(rows) -> str:
    from conformance.tolerances import STAGES

    head = ["backend", "dtype", "device", "case", *STAGES, "result"]
    lines = []
    for r in rows:
        if r.skipped:
            cells = [r.backend, "-", r.device, "-", *["" for _ in STAGES], f"skipped: {r.skipped}"]
        elif r.error:
            last = r.error.strip().splitlines()[-1]
            cells = [r.backend, r.dtype, r.device, r.case, *["" for _ in STAGES], f"ERROR {last}"]
        else:
            cells = [r.backend, r.dtype, r.device, r.case]
            for stage in STAGES:
                dev, ok = r.stages.get(stage, (None, True))
                cells.append("-" if dev is None else f"{dev:.1e}{'' if ok else ' !'}")
            cells.append("ok" if r.ok else "FAIL")
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)
