"""Summarise a pytest-benchmark run: median time per call and the ratios measured in that same run.

    python -m benchmarks.report                  # the newest run saved under .benchmarks/
    python -m benchmarks.report path/to/run.json # a given --benchmark-json / --benchmark-autosave file

Times are medians in microseconds per call.  ``vg/fwd`` is tape.value_and_grad over the tape's forward
replay (the cost of the reverse sweep, plus one); ``vg/f`` is tape.value_and_grad over the plain function
(for Lorenz, run on Python floats); ``ns/instr`` (scalar workloads only) is the reverse sweep's time per
recorded instruction, (vg - fwd) / instructions.  Ratios from one run are comparable across machines;
absolute times are not.
"""

import json
import math
import sys
from pathlib import Path

COLUMNS = ("numpy", "tape_fwd", "tape_vg", "api_vg", "jax_jit", "jax_jit_vg")
PER_INSTRUCTION = {"lorenz"}  # workloads whose tape is long and made of scalar instructions


def latest_run(storage=Path(".benchmarks")):
    runs = sorted(storage.glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        sys.exit(f"no saved benchmark runs under {storage}/: run pytest with --benchmark-autosave first")
    return runs[-1]


def medians(run):
    """{(workload, n): {column: median seconds, "instructions": count}} from the benchmarks' extra_info."""
    table = {}
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        if "workload" not in info:
            continue
        row = table.setdefault((info["workload"], info["n"]), {"instructions": info["instructions"]})
        row[info["column"]] = bench["stats"]["median"]
    return table


def fmt(value, spec, width):
    text = "-" if value is None or math.isnan(value) else format(value, spec)
    return f"{text:>{width}}"


def row_text(workload, n, row):
    t = {c: row.get(c, math.nan) for c in COLUMNS}
    reverse = t["tape_vg"] - t["tape_fwd"]
    per_instr = reverse / row["instructions"] * 1e9 if workload in PER_INSTRUCTION else None
    return (
        f"{workload:<11}{n:>9}"
        + "".join(fmt(t[c] * 1e6, ".1f", 12) for c in COLUMNS)
        + fmt(t["tape_vg"] / t["tape_fwd"], ".2f", 8)
        + fmt(t["tape_vg"] / t["numpy"], ".2f", 8)
        + f"{row['instructions']:>8}"
        + fmt(per_instr, ".1f", 10)
    )


def main(argv):
    path = Path(argv[0]) if argv else latest_run()
    run = json.loads(path.read_text())
    commit = run.get("commit_info", {})
    dirty = " (dirty)" if commit.get("dirty") else ""
    cpu = run["machine_info"]["cpu"].get("brand_raw", "?")
    print(f"{path}: {run.get('datetime', '?')[:19]}, commit {commit.get('id', '?')[:8]}{dirty}, {cpu}")
    print("median microseconds per call; ratios and ns/instr from the same run\n")
    header = f"{'workload':<11}{'n':>9}" + "".join(f"{c:>12}" for c in COLUMNS)
    header += f"{'vg/fwd':>8}{'vg/f':>8}{'instr':>8}{'ns/instr':>10}"
    print(header)
    print("-" * len(header))
    for (workload, n), row in sorted(medians(run).items(), key=lambda item: (item[0][0] != "rosenbrock", item[0])):
        print(row_text(workload, n, row))


if __name__ == "__main__":
    main(sys.argv[1:])
