"""PNG plots of a run (matplotlib, Agg backend), written by ``python -m benchmarks.report``.

* ``time_vs_n.png``: median time per call against n (the number of differentiated inputs), log-log,
  one panel per workload, one line per column (every column the run holds);
* ``ratio_vs_n.png``: gradient ÷ function and HVP ÷ function against n, one panel per workload:
  fasttape's time ratios (over its forward replay and over NumPy's f), JAX's own ratios and the exact
  operation-count ratios (dashed), with the issue's targets (3 and 6) as grey lines;
* ``first_use.png``: trace plus first gradient (fasttape) against trace plus compile plus first call
  (JAX, PyTensor), per workload and size, log scale.
"""

from pathlib import Path

from .report import CALL_COLUMNS, FIRST_USE_COLUMNS, WORKLOAD_ORDER, ratio, sorted_rows

STYLE = {  # column: (colour, marker, line style)
    "numpy": ("black", "o", "-"),
    "tape_fwd": ("tab:blue", "o", "--"),
    "tape_vg": ("tab:blue", "s", "-"),
    "tape_hvp": ("tab:blue", "^", ":"),
    "api_vg": ("tab:cyan", "s", "-"),
    "fused_vg": ("tab:green", "D", "-"),
    "jax_jit": ("tab:red", "o", "--"),
    "jax_jit_vg": ("tab:red", "s", "-"),
    "jax_jit_hvp": ("tab:red", "^", ":"),
    "pytensor_f": ("tab:purple", "o", "--"),
    "pytensor_vg": ("tab:purple", "s", "-"),
    "pytensor_hvp": ("tab:purple", "^", ":"),
}
RATIO_LINES = (  # (label, numerator, denominator, colour, style)
    ("fasttape vg / fwd", "tape_vg", "tape_fwd", "tab:blue", "-"),
    ("fasttape hvp / fwd", "tape_hvp", "tape_fwd", "tab:blue", ":"),
    ("fasttape vg / NumPy f", "tape_vg", "numpy", "tab:cyan", "-"),
    ("JAX vg / f", "jax_jit_vg", "jax_jit", "tab:red", "-"),
    ("JAX hvp / f", "jax_jit_hvp", "jax_jit", "tab:red", ":"),
    ("OPS(grad) / OPS(f)", "ops_grad", "ops_f", "grey", "--"),
    ("OPS(hvp) / OPS(f)", "ops_hvp", "ops_f", "silver", "--"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def by_workload(table, columns):
    """{workload: [(n, size, row)]} in size order, for the rows holding any of ``columns``."""
    out = {}
    for (workload, n, size), row in sorted_rows(table, columns):
        out.setdefault(workload, []).append((n, size, row))
    return dict(sorted(out.items(), key=lambda item: WORKLOAD_ORDER.get(item[0], 9)))


def _panels(plt, count, title):
    cols = min(3, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return fig, list(axes.flat)


def _annotate_sizes(ax, entries):
    for n, size, _ in entries:
        ax.annotate(size, (n, 1), xycoords=("data", "axes fraction"), xytext=(0, -26), textcoords="offset points",
                    ha="center", fontsize=6, color="dimgrey")  # fmt: skip


def time_vs_n(plt, table, title):
    groups = by_workload(table, CALL_COLUMNS)
    if not groups:
        return None
    fig, axes = _panels(plt, len(groups), f"median time per call vs n (log-log) — {title}")
    for ax, (workload, entries) in zip(axes, groups.items()):
        for column in CALL_COLUMNS:
            points = [(n, row[column] * 1e6) for n, _, row in entries if column in row]
            if points:
                colour, marker, style = STYLE[column]
                ax.plot(*zip(*points), marker=marker, linestyle=style, color=colour, label=column, markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(workload)
        ax.set_xlabel("n (differentiated inputs)")
        ax.set_ylabel("µs per call")
        ax.grid(True, which="both", alpha=0.3)
        _annotate_sizes(ax, entries)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def ratio_vs_n(plt, table, title):
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    groups = by_workload(table, ("tape_vg",))
    if not groups:
        return None
    fig, axes = _panels(plt, len(groups), f"gradient and HVP cost over the function vs n — {title}")
    for ax, (workload, entries) in zip(axes, groups.items()):
        for name, top, bottom, colour, style in RATIO_LINES:
            points = [(n, ratio(row, top, bottom)) for n, _, row in entries]
            points = [p for p in points if p[1] is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=4, color=colour, linestyle=style, label=name)
        ax.axhline(3.0, color="grey", linewidth=0.8, alpha=0.6)
        ax.axhline(6.0, color="grey", linewidth=0.8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(workload)
        ax.set_xlabel("n (differentiated inputs)")
        ax.set_ylabel("ratio (same run)")
        ax.grid(True, which="both", alpha=0.3)
        _annotate_sizes(ax, entries)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def first_use(plt, table, title):
    rows = sorted_rows(table, FIRST_USE_COLUMNS)
    if not rows:
        return None
    columns = [c for c in FIRST_USE_COLUMNS if any(c in row for _, row in rows)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    width = 0.8 / len(columns)
    colours = {"first_ft_trace": "lightsteelblue", "first_ft_vg": "tab:blue", "first_jax_vg": "tab:red"}
    colours |= {"first_jax_vg_pyloop": "salmon", "first_pytensor_vg": "tab:purple"}
    for j, column in enumerate(columns):
        xs = [i + (j - (len(columns) - 1) / 2) * width for i in range(len(rows))]
        ys = [row.get(column, float("nan")) * 1e3 for _, row in rows]
        ax.bar(xs, ys, width=width, label=column, color=colours.get(column))
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{w}\n{size}" for (w, _, size), _ in rows], fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("ms, once per function and shape")
    ax.set_title(f"first use: trace + first gradient vs trace + compile — {title}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def write_plots(table, directory, title=""):
    """Write the PNGs into ``directory``; returns their paths."""
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in (("time_vs_n", time_vs_n), ("ratio_vs_n", ratio_vs_n), ("first_use", first_use)):
        fig = make(plt, table, title)
        if fig is None:
            continue
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
