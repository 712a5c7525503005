"""Batches of gradients (``benchmarks/batches.py``): the loop of single calls, ``ft.vmap`` on one thread and on
every thread, and ``jax.jit(jax.vmap(jax.grad))``, one group, so the history tracks their ratios."""

import pytest

from .batches import BATCH, N, columns, members

CALLS = columns(members())


@pytest.mark.parametrize("column", list(CALLS))
def test_batch_of_gradients(benchmark, column):
    benchmark.group = f"vmap-rosenbrock-{N}x{BATCH}"
    benchmark.extra_info.update(workload="rosenbrock", size=N, batch=BATCH, column=column)
    benchmark.pedantic(CALLS[column], rounds=30, iterations=5, warmup_rounds=2)
