"""Summarise a pytest-benchmark run: median time per call and the ratios measured in that same run.

    python -m benchmarks.report                     # the newest run saved under .benchmarks/
    python -m benchmarks.report path/to/run.json    # a given --benchmark-json / --benchmark-autosave file
    python -m benchmarks.report --compare           # the newest run against the one saved before it
    python -m benchmarks.report new.json --compare old.json --threshold 10

Prints the tables, writes PNG plots (``--plots``, default ``benchmarks/plots/``; ``--no-plots`` to
skip) and a Markdown summary (``--summary``, default ``benchmarks/SUMMARY.md``; ``--no-summary``).

Times are medians, in microseconds per call (first-use times in milliseconds).  The tables:

* **per call**: every column of the run, in µs.  fasttape: ``numpy`` (the plain function; Lorenz on
  Python floats), ``tape_fwd`` (forward replay), ``tape_vg`` (tape.value_and_grad), ``tape_hvp``
  (tape.hvp, one direction), ``api_vg`` (ft.value_and_grad(f), cache warm), all interpreted, and
  ``kern_fwd``, ``kern_vg``, ``kern_api_vg`` the same on the tape's own kernels; peers: ``fused_vg``
  (hand-written fused Numba adjoint), ``jax_jit`` / ``jax_jit_vg`` / ``jax_jit_hvp`` (jit of f, of
  value_and_grad, of jvp(grad)), ``pytensor_f`` / ``pytensor_vg`` / ``pytensor_hvp`` (Numba mode).
* **ratios**, all from the same run: ``vg/fwd`` and ``hvp/fwd`` (over the tape's forward replay),
  ``vg/f`` (over NumPy's f), ``OPS g/f`` and ``OPS h/f`` (exact element-operation counts of the
  gradient and HVP sweeps over the forward's, see ``opcount.py``; machine-independent), ``J vg/f`` and
  ``J hvp/f`` (JAX's own ratios), ``ft/J f``, ``ft/J vg``, ``ft/J hvp`` (fasttape over JAX per call:
  above 1 means fasttape is slower), ``vg/fused`` (over the hand-written floor), ``ft/PT vg`` (over
  PyTensor's), ``api/vg`` (the transform's overhead over the bare tape), ``K ...`` the tape kernels' (over
  their forward, the interpreter, JAX, PyTensor, the floor), ``ns/instr`` (Lorenz: reverse-sweep time per
  instruction).
* **gradient vs peers**: ``kern_api_vg`` (what a user's hot ft.value_and_grad runs) against JAX, PyTensor and
  the hand-written floor, with the fastest peer and the ratios to it and to the floor.
* **first use**: ``ft trace`` (ft.trace), ``ft first vg`` (a fresh ft.value_and_grad(f)'s first call:
  trace plus first gradient), ``jax first vg`` (a fresh jit(value_and_grad(f))'s first call: trace,
  compile, one call), ``jax/ft``; PyTensor's compile plus first call when installed.
* k-direction HVPs and the dense Hessian (``test_second_order.py``), then the issue-5 targets, each
  marked ok or FAIL with the rows that miss it.

``--compare [OLD]`` matches every (workload, size, column) of the two runs and lists each median that
grew by more than ``--threshold`` percent (default 20) under REGRESSIONS, improvements likewise;
``--strict`` makes regressions exit with status 1.  Ratios from one run are comparable across
machines; absolute times are not.  NumPy's and fasttape's matmuls run on single-threaded OpenBLAS (set
in conftest.py; JAX keeps its own thread pool).
"""

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).parent
CALL_COLUMNS = (
    "numpy",
    "tape_fwd",
    "tape_vg",
    "tape_hvp",
    "api_vg",
    "kern_fwd",
    "kern_vg",
    "kern_hvp",
    "kern_api_vg",
    "fused_vg",
    "jax_jit",
    "jax_jit_vg",
    "jax_jit_hvp",
    "pytensor_f",
    "pytensor_vg",
    "pytensor_hvp",
)
FIRST_USE_COLUMNS = ("first_ft_trace", "first_ft_vg", "first_jax_vg", "first_jax_vg_pyloop", "first_pytensor_vg")
HVP_K_COLUMNS = ("tape_hvp_4x1", "tape_hvp_k4")
HESSIAN_COLUMNS = ("ft_hessian", "jax_jit_hessian", "jax_hessian")
NESTED_COLUMNS = ("nested_ft", "nested_jax_jit", "nested_ft_hessian")  # benchmarks/test_nested.py
DIRECTION_COLUMNS = (  # test_directions
    "dir_ft_fwd", "dir_ft_jvp", "dir_ft_jacfwd", "dir_kern_fwd", "dir_kern_jvp", "dir_kern_jacfwd", "dir_jax_fwd",
    "dir_jax_jacfwd",
)  # fmt: skip
PER_INSTRUCTION = {"lorenz"}  # workloads whose tape is long and made of scalar instructions
WORKLOAD_ORDER = {"rosenbrock": 0, "lorenz": 1, "logistic": 2, "mlp": 3, "softmax": 4, "xent": 5, "gmm": 6,
                  "kmeans": 7, "gp": 8}  # fmt: skip

# (name, numerator, denominator): ratios of medians from the same run; "ops_*" are exact counts
RATIOS = (
    ("vg/fwd", "tape_vg", "tape_fwd"),
    ("hvp/fwd", "tape_hvp", "tape_fwd"),
    ("vg/f", "tape_vg", "numpy"),
    ("OPS g/f", "ops_grad", "ops_f"),
    ("OPS h/f", "ops_hvp", "ops_f"),
    ("J vg/f", "jax_jit_vg", "jax_jit"),
    ("J hvp/f", "jax_jit_hvp", "jax_jit"),
    ("ft/J f", "tape_fwd", "jax_jit"),
    ("ft/J vg", "tape_vg", "jax_jit_vg"),
    ("ft/J hvp", "tape_hvp", "jax_jit_hvp"),
    ("vg/fused", "tape_vg", "fused_vg"),
    ("ft/PT vg", "tape_vg", "pytensor_vg"),
    ("api/vg", "api_vg", "tape_vg"),
    ("K vg/fwd", "kern_vg", "kern_fwd"),
    ("K/int vg", "kern_vg", "tape_vg"),
    ("K/J vg", "kern_vg", "jax_jit_vg"),
    ("K/J hvp", "kern_hvp", "jax_jit_hvp"),
    ("K/PT vg", "kern_vg", "pytensor_vg"),
    ("K/fused", "kern_vg", "fused_vg"),
)
# the peer table: fasttape's gradient as a user gets it (ft.value_and_grad, the tape's own kernels once hot),
# against the peers' in the same run, and the hand-written Numba floor
PEER_COLUMNS = ("kern_api_vg", "api_vg", "jax_jit_vg", "pytensor_vg", "fused_vg")
ROSENBROCK_10_API_TARGET = 1.5e-6
LORENZ_KERNELS_VG_TARGET = 20e-6
LORENZ_KERNELS_HVP_TARGET = 45e-6
TRACING_PER_ROW_TARGET = 2e-6  # issue 16: tracing scalar code, per recorded row
TRACING_COLUMNS = ("trace_ft", "trace_jax")  # test_tracing

LORENZ_VG_TARGET = 60e-6
ROSENBROCK_10_VG_TARGET = 2e-6


# --------------------------------------------------------------------------
# reading runs
# --------------------------------------------------------------------------
def saved_runs(storage=Path(".benchmarks")):
    """Every run saved by --benchmark-autosave, oldest first."""
    return sorted(storage.glob("*/*.json"), key=lambda p: p.stat().st_mtime)


def latest_run(storage=Path(".benchmarks"), before=None):
    """The newest saved run (or the newest one saved before the run ``before``)."""
    runs = [p for p in saved_runs(storage) if before is None or p.resolve() != Path(before).resolve()]
    if before is not None:
        mtime = Path(before).stat().st_mtime
        runs = [p for p in runs if p.stat().st_mtime <= mtime]
    if not runs:
        sys.exit(f"no saved benchmark runs under {storage}/: run pytest with --benchmark-autosave first")
    return runs[-1]


def medians(run):
    """{(workload, n, size): row} where a row maps each column to its median in seconds, plus
    "instructions", "size", the exact counts ("ops_f", "ops_grad", "ops_hvp", when recorded) and,
    per column, that benchmark's extra_info under (column, "info")."""
    table = {}
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        if "workload" not in info:
            continue
        size = info.get("size", str(info["n"]))
        row = table.setdefault((info["workload"], info["n"], size), {"size": size})
        for key in ("instructions", "ops_f", "ops_grad", "ops_hvp", "ops_nested"):
            if key in info:
                row[key] = info[key]
        row[info["column"]] = bench["stats"]["median"]
        row[(info["column"], "info")] = info
    return table


def ratio(row, numerator, denominator):
    top, bottom = row.get(numerator), row.get(denominator)
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def sorted_rows(table, columns):
    """The rows holding at least one of ``columns``, by workload, then by size."""
    rows = [(key, row) for key, row in table.items() if any(c in row for c in columns)]
    return sorted(rows, key=lambda item: (WORKLOAD_ORDER.get(item[0][0], 9), item[0][1], item[0][2]))


def present(table, columns):
    return [c for c in columns if any(c in row for row in table.values())]


# --------------------------------------------------------------------------
# terminal tables
# --------------------------------------------------------------------------
def fmt(value, spec, width):
    text = "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
    return f"{text:>{width}}"


def time_spec(seconds, scale=1e6):
    """Three significant figures or so, whatever the magnitude."""
    value = seconds * scale
    return ".3g" if value < 1000 else ".0f"


def label(workload, row, width=28):
    return f"{workload + ' ' + row['size']:<{width}}"


def call_table(table):
    columns = present(table, CALL_COLUMNS)
    width = max(12, max(len(c) for c in columns) + 2)
    header = f"{'per call, median µs':<28}" + "".join(f"{c:>{width}}" for c in columns)
    lines = [header, "-" * len(header)]
    for (workload, _, _), row in sorted_rows(table, columns):
        cells = "".join(fmt(row[c] * 1e6 if c in row else None, time_spec(row.get(c, 0)), width) for c in columns)
        lines.append(label(workload, row) + cells)
    return lines


def ratio_table(table):
    header = f"{'ratios, same run':<28}" + "".join(f"{name:>9}" for name, _, _ in RATIOS) + f"{'ns/instr':>9}"
    lines = [header, "-" * len(header)]
    for (workload, _, _), row in sorted_rows(table, ("tape_vg", "jax_jit_vg")):
        cells = "".join(fmt(ratio(row, a, b), ".2f", 9) for _, a, b in RATIOS)
        per_instr = None
        if workload in PER_INSTRUCTION and "tape_vg" in row and "tape_fwd" in row and "instructions" in row:
            per_instr = (row["tape_vg"] - row["tape_fwd"]) / row["instructions"] * 1e9
        lines.append(label(workload, row) + cells + fmt(per_instr, ".1f", 9))
    return lines


def best_peer(row):
    """(name, seconds) of the fastest peer gradient in ``row`` (JAX, PyTensor), or (None, None)."""
    peers = [(c, row[c]) for c in ("jax_jit_vg", "pytensor_vg") if c in row]
    return min(peers, key=lambda p: p[1]) if peers else (None, None)


def peer_table(table):
    """Issue 16's table: ft.value_and_grad (its tape's own kernels) against the fastest peer, the floor."""
    columns = present(table, PEER_COLUMNS)
    if "kern_api_vg" not in columns:
        return []
    header = f"{'gradient vs peers, median µs':<28}" + "".join(f"{c:>13}" for c in columns)
    header += f"{'best peer':>13}{'ft/best':>9}{'ft/floor':>9}"
    lines = [header, "-" * len(header)]
    for (workload, _, _), row in sorted_rows(table, ("kern_api_vg",)):
        cells = "".join(fmt(row[c] * 1e6 if c in row else None, time_spec(row.get(c, 0)), 13) for c in columns)
        name, seconds = best_peer(row)
        best = ratio(row, "kern_api_vg", name) if name else None
        lines.append(label(workload, row) + cells + f"{(name or '-').replace('_jit_vg', '').replace('_vg', ''):>13}"
                     + fmt(best, ".2f", 9) + fmt(ratio(row, "kern_api_vg", "fused_vg"), ".2f", 9))  # fmt: skip
    return lines


def first_use_table(table):
    columns = present(table, FIRST_USE_COLUMNS)
    if not columns:
        return []
    header = f"{'first use, ms':<28}" + "".join(f"{c:>20}" for c in columns) + f"{'jax/ft':>8}"
    lines = [header, "-" * len(header)]
    for (workload, _, _), row in sorted_rows(table, columns):
        cells = "".join(fmt(row[c] * 1e3 if c in row else None, time_spec(row.get(c, 0), 1e3), 20) for c in columns)
        lines.append(label(workload, row) + cells + fmt(ratio(row, "first_jax_vg", "first_ft_vg"), ".1f", 8))
    return lines


def hvp_k_table(table):
    header = f"{'hvp, k directions':<28}{'k':>3}{'1 hvp':>12}{'k separate':>12}{'one k-sweep':>12}"
    header += f"{'k-sweep/sep':>12}{'k-sweep/1':>10}"
    lines = [header, "-" * len(header)]
    for (workload, _, _), row in sorted_rows(table, HVP_K_COLUMNS):
        k = next(row[(c, "info")]["k"] for c in HVP_K_COLUMNS if (c, "info") in row)
        times = [row.get(c) for c in ("tape_hvp",) + HVP_K_COLUMNS]
        lines.append(
            label(workload, row)
            + f"{k:>3}"
            + "".join(fmt(t * 1e6 if t else None, ".1f", 12) for t in times)
            + fmt(ratio(row, "tape_hvp_k4", "tape_hvp_4x1"), ".2f", 12)
            + fmt(ratio(row, "tape_hvp_k4", "tape_hvp"), ".2f", 10)
        )
    return lines


def hessian_table(table):
    header = f"{'dense hessian':<28}" + "".join(f"{c:>16}" for c in HESSIAN_COLUMNS)
    header += f"{'ft/jax_jit':>11}{'ft/jax':>8}{'sweeps x k':>12}"
    lines = [header, "-" * len(header)]
    for (workload, _, _), row in sorted_rows(table, HESSIAN_COLUMNS):
        info = row.get(("ft_hessian", "info"), {})
        sweeps = f"{info['sweeps']} x {info['k']}" if "sweeps" in info else "-"
        lines.append(
            label(workload, row)
            + "".join(fmt(row[c] * 1e6 if c in row else None, ".1f", 16) for c in HESSIAN_COLUMNS)
            + fmt(ratio(row, "ft_hessian", "jax_jit_hessian"), ".2f", 11)
            + fmt(ratio(row, "ft_hessian", "jax_hessian"), ".3f", 8)
            + f"{sweeps:>12}"
        )
    return lines


def nested_table(table):
    """Transformations inside traced functions: fasttape's recorded program against jax.jit of JAX's
    composition, and the nested program's exact cost in units of its function (OPS nested/f)."""
    header = f"{'nested, median µs':<40}" + "".join(f"{c:>19}" for c in NESTED_COLUMNS)
    header += f"{'ft/jax_jit':>11}{'OPS nested/f':>14}"
    lines = [header, "-" * len(header)]
    for (_, _, size), row in sorted_rows(table, NESTED_COLUMNS):
        ops = row.get("ops_nested"), row.get("ops_f")
        lines.append(
            f"{size:<40}"
            + "".join(fmt(row[c] * 1e6 if c in row else None, ".1f", 19) for c in NESTED_COLUMNS)
            + fmt(ratio(row, "nested_ft", "nested_jax_jit"), ".2f", 11)
            + fmt(ops[0] / ops[1] if all(ops) else None, ".1f", 14)
        )
    return lines


def directions_table(table):
    """28 tangent directions in one sweep against one forward, fasttape's and JAX's (same run)."""
    header = f"{'28 directions, median µs':<32}" + "".join(f"{c[4:]:>11}" for c in DIRECTION_COLUMNS)
    header += f"{'ft jvp/fwd':>11}{'jacfwd/fwd':>11}{'kern j/f':>9}{'JAX j/f':>9}{'kern/JAX':>9}"
    lines = [header, "-" * len(header)]
    for (_, _, size), row in sorted_rows(table, DIRECTION_COLUMNS):
        lines.append(
            f"{size:<32}"
            + "".join(fmt(row[c] * 1e6 if c in row else None, ".0f", 11) for c in DIRECTION_COLUMNS)
            + fmt(ratio(row, "dir_ft_jvp", "dir_ft_fwd"), ".1f", 11)
            + fmt(ratio(row, "dir_ft_jacfwd", "dir_ft_fwd"), ".1f", 11)
            + fmt(ratio(row, "dir_kern_jacfwd", "dir_kern_fwd"), ".1f", 9)
            + fmt(ratio(row, "dir_jax_jacfwd", "dir_jax_fwd"), ".1f", 9)
            + fmt(ratio(row, "dir_kern_jacfwd", "dir_jax_jacfwd"), ".2f", 9)
        )
    return lines


def tracing_table(table):
    """Recording a tape, per recorded row, beside JAX's make_jaxpr of the same Python (same run)."""
    header = f"{'tracing, median':<28}{'rows':>8}{'ft ms':>9}{'µs/row':>8}{'JAX ms':>9}{'µs/row':>8}{'ft/JAX':>8}"
    lines = [header, "-" * len(header)]
    for (_, rows, size), row in sorted_rows(table, TRACING_COLUMNS):
        per_row = {c: row[c] / rows * 1e6 if c in row else None for c in TRACING_COLUMNS}
        lines.append(
            f"{size:<28}{rows:>8}"
            + fmt(row.get("trace_ft", 0) * 1e3 if "trace_ft" in row else None, ".1f", 9)
            + fmt(per_row["trace_ft"], ".2f", 8)
            + fmt(row.get("trace_jax", 0) * 1e3 if "trace_jax" in row else None, ".1f", 9)
            + fmt(per_row["trace_jax"], ".2f", 8)
            + fmt(ratio(row, "trace_ft", "trace_jax"), ".2f", 8)
        )
    return lines


# --------------------------------------------------------------------------
# the issue-5 targets and where fasttape loses to JAX
# --------------------------------------------------------------------------
def targets(table):
    """[(target, [failing rows as text], [rows checked])] for the issue's per-call and first-use targets."""
    rows = sorted_rows(table, ("tape_vg",))
    name = lambda key: f"{key[0]} {key[2]}"  # noqa: E731

    def check(title, test, needs):
        checked, failing = [], []
        for key, row in rows:
            if all(c in row for c in needs):
                ok, text = test(key, row)
                if ok is None:  # a target about another workload
                    continue
                checked.append(name(key))
                if not ok:
                    failing.append(f"{name(key)}: {text}")
        return title, failing, checked

    results = [
        check(
            "value_and_grad <= 3x forward replay",
            lambda k, r: (r["tape_vg"] <= 3 * r["tape_fwd"], f"{r['tape_vg'] / r['tape_fwd']:.2f}x"),
            ("tape_vg", "tape_fwd"),
        ),
        check(
            "value_and_grad <= 3x NumPy f",
            lambda k, r: (r["tape_vg"] <= 3 * r["numpy"], f"{r['tape_vg'] / r['numpy']:.2f}x"),
            ("tape_vg", "numpy"),
        ),
        check(
            "hvp <= 6x forward replay",
            lambda k, r: (r["tape_hvp"] <= 6 * r["tape_fwd"], f"{r['tape_hvp'] / r['tape_fwd']:.2f}x"),
            ("tape_hvp", "tape_fwd"),
        ),
        check(
            "Rosenbrock n=10 value_and_grad <= 2 µs",
            lambda k, r: (
                (r["tape_vg"] <= ROSENBROCK_10_VG_TARGET, f"{r['tape_vg'] * 1e6:.2f} µs")
                if k[:2] == ("rosenbrock", 10)
                else (None, "")
            ),
            ("tape_vg",),
        ),
        check(
            "Lorenz value_and_grad <= 60 µs",
            lambda k, r: (
                (r["tape_vg"] <= LORENZ_VG_TARGET, f"{r['tape_vg'] * 1e6:.1f} µs") if k[0] == "lorenz" else (None, "")
            ),
            ("tape_vg",),
        ),
        check(
            "Lorenz value_and_grad within 2x of JAX's jitted fori_loop gradient",
            lambda k, r: (
                (r["tape_vg"] <= 2 * r["jax_jit_vg"], f"{r['tape_vg'] / r['jax_jit_vg']:.2f}x JAX")
                if k[0] == "lorenz"
                else (None, "")
            ),
            ("tape_vg", "jax_jit_vg"),
        ),
        check(
            "first use: trace + first gradient faster than JAX's trace + compile",
            lambda k, r: (
                r["first_ft_vg"] < r["first_jax_vg"],
                f"{r['first_ft_vg'] * 1e3:.1f} ms vs JAX {r['first_jax_vg'] * 1e3:.1f} ms",
            ),
            ("first_ft_vg", "first_jax_vg"),
        ),
    ]
    results += targets_of_issue_16(table)
    return [(title, failing, checked) for title, failing, checked in results if checked]


def targets_of_issue_16(table):
    """Per-tape kernels: the fastest gradient of the measured peers, and two absolute targets."""
    rows = sorted_rows(table, ("kern_api_vg",))

    def check(title, test):
        checked, failing = [], []
        for key, row in rows:
            verdict = test(key, row)
            if verdict is None:
                continue
            ok, text = verdict
            checked.append(f"{key[0]} {key[2]}")
            if not ok:
                failing.append(f"{key[0]} {key[2]}: {text}")
        return title, failing, checked

    def fastest(key, row):
        name, seconds = best_peer(row)
        if name is None:
            return None
        return row["kern_api_vg"] <= seconds, f"{row['kern_api_vg'] / seconds:.2f}x {name}"

    tracing = [(f"{size}", row["trace_ft"] / rows) for (_, rows, size), row in sorted_rows(table, ("trace_ft",))]
    tracing_check = (
        "tracing <= 2 µs per recorded row",
        [f"{size}: {seconds * 1e6:.2f} µs" for size, seconds in tracing if seconds > TRACING_PER_ROW_TARGET],
        [size for size, _ in tracing],
    )
    return [
        tracing_check,
        check("ft.value_and_grad (tape kernels) fastest of the measured peers", fastest),
        check(
            "Rosenbrock n=10 ft.value_and_grad <= 1.5 µs",
            lambda k, r: (
                (r["kern_api_vg"] <= ROSENBROCK_10_API_TARGET, f"{r['kern_api_vg'] * 1e6:.2f} µs")
                if k[:2] == ("rosenbrock", 10)
                else None
            ),
        ),
        check(
            "tape kernels' HVP no slower than JAX's",
            lambda k, r: (
                (r["kern_hvp"] <= r["jax_jit_hvp"], f"{r['kern_hvp'] / r['jax_jit_hvp']:.2f}x JAX")
                if "kern_hvp" in r and "jax_jit_hvp" in r
                else None
            ),
        ),
        check(
            "Lorenz tape kernels HVP <= 45 µs",
            lambda k, r: (
                (r["kern_hvp"] <= LORENZ_KERNELS_HVP_TARGET, f"{r['kern_hvp'] * 1e6:.1f} µs")
                if k[0] == "lorenz" and "kern_hvp" in r
                else None
            ),
        ),
        check(
            "Lorenz tape kernels value_and_grad <= 20 µs",
            lambda k, r: (
                (r["kern_vg"] <= LORENZ_KERNELS_VG_TARGET, f"{r['kern_vg'] * 1e6:.1f} µs")
                if k[0] == "lorenz" and "kern_vg" in r
                else None
            ),
        ),
    ]


def target_lines(table):
    lines = ["targets (this run): issue 5's, then issue 16's", "-" * 46]
    for title, failing, checked in targets(table):
        status = "ok  " if not failing else "FAIL"
        lines.append(f"{status} {title}  ({len(checked) - len(failing)}/{len(checked)} rows)")
        lines.extend(f"       {text}" for text in failing)
    return lines


def losses_to_jax(table):
    """[(row name, column pair, factor)] wherever a fasttape column is slower than JAX's counterpart."""
    pairs = (
        ("f", "tape_fwd", "jax_jit"),
        ("value_and_grad", "tape_vg", "jax_jit_vg"),
        ("hvp", "tape_hvp", "jax_jit_hvp"),
    )
    losses = []
    for (workload, _, size), row in sorted_rows(table, ("tape_vg",)):
        for what, ours, theirs in pairs:
            factor = ratio(row, ours, theirs)
            if factor is not None and factor > 1.0:
                losses.append((f"{workload} {size}", what, factor))
    return losses


# --------------------------------------------------------------------------
# compare mode
# --------------------------------------------------------------------------
def compare(new_run, old_run, threshold):
    """Lines listing every (workload, size, column) whose median grew (REGRESSIONS) or shrank by more
    than ``threshold`` percent between two runs; returns (lines, number of regressions)."""
    new, old = medians(new_run), medians(old_run)
    regressions, improvements, matched = [], [], 0
    for key, row in new.items():
        before = old.get(key)
        if before is None:
            continue
        for column, median in row.items():
            if not isinstance(column, str) or column not in before or (column, "info") not in row:
                continue
            matched += 1
            change = (median / before[column] - 1.0) * 100.0
            where = f"{key[0]} {key[2]}"
            entry = f"{where:<28} {column:<20} {before[column] * 1e6:12.2f} -> {median * 1e6:12.2f} µs"
            entry += f"  {change:+.0f}%"
            if change > threshold:
                regressions.append((change, entry))
            elif change < -threshold:
                improvements.append((change, entry))
    lines = [f"compare: {describe_run(old_run)}", f"     -> {describe_run(new_run)}"]
    lines.append(f"{matched} medians matched, threshold {threshold:g}%")
    if new_run["machine_info"].get("node") != old_run["machine_info"].get("node"):
        lines.append("warning: the two runs come from different machines; compare ratios, not times")
    lines.append(f"REGRESSIONS ({len(regressions)}):" if regressions else "no regressions beyond the threshold")
    lines.extend("  " + e for _, e in sorted(regressions, reverse=True))
    if improvements:
        lines.append(f"improvements ({len(improvements)}):")
        lines.extend("  " + e for _, e in sorted(improvements))
    return lines, len(regressions)


def describe_run(run):
    commit = run.get("commit_info", {})
    dirty = " (dirty)" if commit.get("dirty") else ""
    cpu = run["machine_info"].get("cpu", {}).get("brand_raw", "?")
    return f"{run.get('datetime', '?')[:19]}, commit {commit.get('id', '?')[:8]}{dirty}, {cpu}"


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------
def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="a saved run (default: the newest under .benchmarks/)")
    parser.add_argument("--compare", nargs="?", const="previous", metavar="OLD", help="compare with a run")
    parser.add_argument("--threshold", type=float, default=20.0, help="percent change flagged (default 20)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 on regressions")
    parser.add_argument("--plots", type=Path, default=HERE / "plots", help="directory of the PNG plots")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--summary", type=Path, default=HERE / "SUMMARY.md", help="the Markdown summary")
    parser.add_argument("--no-summary", action="store_true")
    return parser.parse_args(argv)


def main(argv):
    args = parse(argv)
    path = args.run or latest_run()
    run = json.loads(path.read_text())
    print(f"{path}: {describe_run(run)}")
    print("medians of the same run; ratios and ns/instr from that run; OPS counts exact")
    table = medians(run)
    for lines in (call_table(table), ratio_table(table), peer_table(table), first_use_table(table), hvp_k_table(table)):
        if len(lines) > 2:
            print()
            print("\n".join(lines))
    for lines in (hessian_table(table), nested_table(table), directions_table(table), tracing_table(table)):
        if len(lines) > 2:
            print()
            print("\n".join(lines))
    missing = [c for c in CALL_COLUMNS + FIRST_USE_COLUMNS if c not in present(table, CALL_COLUMNS + FIRST_USE_COLUMNS)]
    if missing:
        print(f"\nnot in this run (skipped or not selected): {', '.join(missing)}")
    print()
    print("\n".join(target_lines(table)))
    losses = losses_to_jax(table)
    if losses:
        print(f"\nfasttape slower than JAX per call ({len(losses)}):")
        print("\n".join(f"  {name}: {what} {factor:.2f}x JAX" for name, what, factor in losses))

    if not args.no_plots:
        from .plots import write_plots

        for written in write_plots(table, args.plots, title=describe_run(run)):
            print(f"wrote {written}")
    if not args.no_summary:
        from .summary import write_summary

        write_summary(table, run, path, args.summary, args.plots)
        print(f"wrote {args.summary}")

    regressions = 0
    if args.compare:
        old_path = latest_run(before=path) if args.compare == "previous" else Path(args.compare)
        print()
        lines, regressions = compare(run, json.loads(old_path.read_text()), args.threshold)
        print(f"{old_path} -> {path}")
        print("\n".join(lines))
    return 1 if regressions and args.strict else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
