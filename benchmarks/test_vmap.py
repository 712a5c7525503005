"""Batches of gradients and Hessians (``benchmarks/batches.py``): the loop of single calls, ``ft.vmap`` on one
thread and on every thread, and ``jax.jit(jax.vmap(...))``, one group per case, so the history tracks their
ratios."""

import pytest

from .batches import BATCH, CASES, columns, members

CALLS = {kind: columns(members(n), kind) for kind, n in CASES.items()}


@pytest.mark.parametrize(("kind", "column"), [(kind, column) for kind in CASES for column in CALLS[kind]])
def test_batch(benchmark, kind, column):
    benchmark.group = f"vmap-rosenbrock-{kind}-{CASES[kind]}x{BATCH}"
    benchmark.extra_info.update(workload="rosenbrock", transformation=kind, size=CASES[kind], batch=BATCH,
                                column=column)  # fmt: skip
    benchmark.pedantic(CALLS[kind][column], rounds=30, iterations=5, warmup_rounds=2)
