"""Summarise a pytest-benchmark run: median time per call and the ratios measured in that same run.

    python -m benchmarks.report                  # the newest run saved under .benchmarks/
    python -m benchmarks.report path/to/run.json # a given --benchmark-json / --benchmark-autosave file

Times are medians in microseconds per call.  Three tables:

* per workload and size: ``vg/fwd`` is tape.value_and_grad over the tape's forward replay (the
  cost of the reverse sweep, plus one); ``hvp/fwd`` is tape.hvp (one direction, forward-over-reverse)
  over the same forward replay, and ``jhvp/jf`` JAX's jit(jvp(grad)) over its jit(f); ``vg/f`` is
  tape.value_and_grad over the plain function (for Lorenz, run on Python floats); ``ns/instr``
  (scalar workloads only) is the reverse sweep's time per recorded instruction, (vg - fwd) /
  instructions;
* HVP with k directions: one k-direction sweep against k separate single-direction calls
  (``k-sweep/sep``), and against one single-direction call (``k-sweep/1``);
* the dense Hessian: ft.hessian(f) against jax.jit(jax.hessian(f)) and un-jitted jax.hessian(f),
  with the number of HVP sweeps (and directions per sweep) fasttape needs.

Ratios from one run are comparable across machines; absolute times are not.  Instruction and sweep
counts are exact.  NumPy's and fasttape's matmuls run on single-threaded OpenBLAS (set in conftest.py;
JAX keeps its own thread pool).
"""

import json
import math
import sys
from pathlib import Path

COLUMNS = ("numpy", "tape_fwd", "tape_vg", "tape_hvp", "api_vg", "jax_jit", "jax_jit_vg", "jax_jit_hvp")
HVP_K_COLUMNS = ("tape_hvp_4x1", "tape_hvp_k4")
HESSIAN_COLUMNS = ("ft_hessian", "jax_jit_hessian", "jax_hessian")
PER_INSTRUCTION = {"lorenz"}  # workloads whose tape is long and made of scalar instructions
WORKLOAD_ORDER = {"rosenbrock": 0, "lorenz": 1, "mlp": 2}


def latest_run(storage=Path(".benchmarks")):
    runs = sorted(storage.glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        sys.exit(f"no saved benchmark runs under {storage}/: run pytest with --benchmark-autosave first")
    return runs[-1]


def medians(run):
    """{(workload, n): {column: median seconds, plus "instructions", "size" and, per column, the
    extra_info of that column under (column, "info")}} from the benchmarks' extra_info."""
    table = {}
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        if "workload" not in info:
            continue
        row = table.setdefault(
            (info["workload"], info["n"]),
            {"instructions": info["instructions"], "size": info.get("size", str(info["n"]))},
        )
        row[info["column"]] = bench["stats"]["median"]
        row[(info["column"], "info")] = info
    return table


def sorted_rows(table, columns):
    """The rows holding at least one of ``columns``, Rosenbrock first, then by size."""
    rows = [(key, row) for key, row in table.items() if any(c in row for c in columns)]
    return sorted(rows, key=lambda item: (WORKLOAD_ORDER.get(item[0][0], 9), item[0]))


def fmt(value, spec, width):
    text = "-" if value is None or math.isnan(value) else format(value, spec)
    return f"{text:>{width}}"


def times(row, columns):
    return {c: row.get(c, math.nan) for c in columns}


def label(workload, row, width=22):
    return f"{workload + ' ' + row['size']:<{width}}"


def main_table(table):
    header = f"{'workload':<22}{'n':>7}" + "".join(f"{c:>12}" for c in COLUMNS)
    header += f"{'vg/fwd':>8}{'hvp/fwd':>8}{'jhvp/jf':>8}{'vg/f':>8}{'instr':>7}{'ns/instr':>9}"
    lines = [header, "-" * len(header)]
    for (workload, n), row in sorted_rows(table, COLUMNS):
        t = times(row, COLUMNS)
        reverse = t["tape_vg"] - t["tape_fwd"]
        per_instr = reverse / row["instructions"] * 1e9 if workload in PER_INSTRUCTION else None
        lines.append(
            label(workload, row)
            + f"{n:>7}"
            + "".join(fmt(t[c] * 1e6, ".1f", 12) for c in COLUMNS)
            + fmt(t["tape_vg"] / t["tape_fwd"], ".2f", 8)
            + fmt(t["tape_hvp"] / t["tape_fwd"], ".2f", 8)
            + fmt(t["jax_jit_hvp"] / t["jax_jit"], ".2f", 8)
            + fmt(t["tape_vg"] / t["numpy"], ".2f", 8)
            + f"{row['instructions']:>7}"
            + fmt(per_instr, ".1f", 9)
        )
    return lines


def hvp_k_table(table):
    header = f"{'hvp, k directions':<22}{'n':>7}{'k':>3}{'1 hvp':>12}{'k separate':>12}{'one k-sweep':>12}"
    header += f"{'k-sweep/sep':>12}{'k-sweep/1':>10}"
    lines = [header, "-" * len(header)]
    for (workload, n), row in sorted_rows(table, HVP_K_COLUMNS):
        t = times(row, HVP_K_COLUMNS + ("tape_hvp",))
        k = next(row[(c, "info")]["k"] for c in HVP_K_COLUMNS if (c, "info") in row)
        lines.append(
            label(workload, row)
            + f"{n:>7}{k:>3}"
            + "".join(fmt(t[c] * 1e6, ".1f", 12) for c in ("tape_hvp",) + HVP_K_COLUMNS)
            + fmt(t["tape_hvp_k4"] / t["tape_hvp_4x1"], ".2f", 12)
            + fmt(t["tape_hvp_k4"] / t["tape_hvp"], ".2f", 10)
        )
    return lines


def hessian_table(table):
    header = f"{'dense hessian':<22}{'n':>7}" + "".join(f"{c:>16}" for c in HESSIAN_COLUMNS)
    header += f"{'ft/jax_jit':>11}{'ft/jax':>8}{'sweeps x k':>12}"
    lines = [header, "-" * len(header)]
    for (workload, n), row in sorted_rows(table, HESSIAN_COLUMNS):
        t = times(row, HESSIAN_COLUMNS)
        info = row.get(("ft_hessian", "info"), {})
        sweeps = f"{info['sweeps']} x {info['k']}" if "sweeps" in info else "-"
        lines.append(
            label(workload, row)
            + f"{n:>7}"
            + "".join(fmt(t[c] * 1e6, ".1f", 16) for c in HESSIAN_COLUMNS)
            + fmt(t["ft_hessian"] / t["jax_jit_hessian"], ".2f", 11)
            + fmt(t["ft_hessian"] / t["jax_hessian"], ".3f", 8)
            + f"{sweeps:>12}"
        )
    return lines


def main(argv):
    path = Path(argv[0]) if argv else latest_run()
    run = json.loads(path.read_text())
    commit = run.get("commit_info", {})
    dirty = " (dirty)" if commit.get("dirty") else ""
    cpu = run["machine_info"]["cpu"].get("brand_raw", "?")
    print(f"{path}: {run.get('datetime', '?')[:19]}, commit {commit.get('id', '?')[:8]}{dirty}, {cpu}")
    print("median microseconds per call; ratios and ns/instr from the same run")
    table = medians(run)
    for lines in (main_table(table), hvp_k_table(table), hessian_table(table)):
        if len(lines) > 2:
            print()
            print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
