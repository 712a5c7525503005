"""``python -m oracle``: the primitive × derivative-kind matrix against JAX and finite differences.

python -m oracle --quick
python -m oracle --profile thorough --json oracle-report.json
python -m oracle --primitive tanh --kind hvp -v
"""

from __future__ import annotations

import argparse
import sys

from .check import KINDS
from .run import PROFILES, run_matrix


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oracle", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="profile", help="the quick profile")
    group.add_argument("--profile", choices=sorted(PROFILES), dest="profile", help="quick, ci, dev or thorough")
    parser.add_argument("--primitive", help="only cases using this primitive (or named it, or it and a hyphen first)")
    parser.add_argument("--kind", choices=KINDS, help="only this derivative kind")
    parser.add_argument("--json", metavar="PATH", help="write a machine-readable report to PATH")
    parser.add_argument("--no-programs", action="store_true", help="skip the random-program search")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="processes that share the checks")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case's report in full")
    args = parser.parse_args(argv)
    profile = args.profile or "quick"

    def on_report(run):
        if not args.verbose:
            return
        sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "")
        used = ", ".join(run.primitives) or "(no primitive)"
        if run.report is not None:
            print(f"{run.report}\n  primitives: {used}; draw {run.seed}; {run.seconds:.2f} s", flush=True)
        else:
            print(f"oracle.check({run.case}): ERROR (draw {run.seed})\n{run.error}", flush=True)

    try:
        matrix = run_matrix(
            profile,
            primitive=args.primitive,
            kind=args.kind,
            progress=not args.no_progress and sys.stderr.isatty(),
            random_programs=not args.no_programs,
            on_report=on_report,
            jobs=max(1, args.jobs),
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(matrix.table())
    if args.json:
        matrix.to_json(args.json)
        print(f"report written to {args.json}")
    print(matrix.summary())
    return 0 if matrix.passed else 1


if __name__ == "__main__":
    sys.exit(main())
