"""``python -m conformance [--backend NAME ...] [--case NAME ...]``: the table of deviations.

Exits non-zero if any stage of any backend is out of tolerance or a backend fails.
"""

import argparse
import sys

from conformance import backends, vectors
from conformance.report import Row, format_table, plan, prefetch, run_one
from conformance.tolerances import TOLERANCE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument("--backend", action="append", choices=list(backends.BACKENDS))
    parser.add_argument("--case", action="append", choices=list(vectors.CASES))
    args = parser.parse_args(argv)
    rows = []
    planned = list(plan(args.backend))
    prefetch(planned)
    for name, module, dtype, device, reason in planned:
        if reason:
            rows.append(Row(name, dtype, device, "-", {}, skipped=reason))
            continue
        for case_name in args.case or vectors.CASES:
            rows.append(run_one(name, module, dtype, device, case_name))
            print(
                f"  {name} {dtype} {device} {case_name}: {'ok' if rows[-1].ok else 'FAIL'}",
                file=sys.stderr,
            )
    print(format_table(rows))
    print(f"\ntolerances: {TOLERANCE}; '!' marks a stage out of tolerance")
    for r in rows:
        if r.error:
            print(f"\n{r.backend} {r.dtype} {r.device} {r.case}:\n{r.error}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
