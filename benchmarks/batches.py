"""Batches of gradients and Hessians: ``ft.vmap`` against a Python loop of single calls and JAX's ``vmap``.

The cases (``CASES``): the issue's, 1 024 gradients of Rosenbrock at n = 100, and 1 024 Hessians of
Rosenbrock at n = 10 (a Newton step per restart: blocks of directions per member, ``fasttape.batch_blocks``).
Columns, all in one process and timed in interleaved turns (a busy moment of the shared machine falls on
every column alike):

* ``loop``: ``[g(w) for w in W]``, the single calls on the calling thread (one core);
* ``vmap_1``: ``ft.vmap(g, workers=1)(W)``, the batch's serial driver;
* ``vmap``: ``ft.vmap(g)(W)``, every thread Numba has (the CPUs this process may use);
* ``jax``: ``jax.jit(jax.vmap(jax.grad(f)))(W)`` (``jax.hessian``) in float64, waited for, XLA on the same cores.

Every fasttape column runs the tape's own kernels (``tape_kernels="always"``), as a hot function does.
``python -m benchmarks.batches`` prints the medians and the ratios; ``benchmarks/test_vmap.py`` keeps them
in pytest-benchmark's history.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import fasttape as ft
from fasttape import tiers

from .workloads import make_rosenbrock

N, BATCH = 100, 1024
CASES = {"grad": N, "hessian": 10}  # transformation -> Rosenbrock's n


def members(n=N, batch=BATCH):
    return np.random.default_rng(0).uniform(-1.5, 1.5, (batch, n))


def columns(W, kind="grad"):
    """name -> a call computing every member's gradient (``kind`` "hessian": Hessian) (warmed: traced, kernels
    built, drivers compiled)."""
    rosenbrock = make_rosenbrock(np)
    with ft.options(tape_kernels="always"):
        g = getattr(ft, kind)(rosenbrock)
        g(W[0])
    tiers.wait()  # (the interpreter's sweeps the first call started compiling: every column runs compiled code)
    one, every = ft.vmap(g, workers=1), ft.vmap(g)
    calls = {"loop": lambda: [g(w) for w in W], "vmap_1": lambda: one(W), "vmap": lambda: every(W)}
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        batched = jax.jit(jax.vmap(getattr(jax, kind)(make_rosenbrock(jax.numpy))))
        calls["jax"] = lambda: jax.block_until_ready(batched(W))
    except ImportError:
        pass
    reference = np.stack(calls["loop"]())
    for name, call in calls.items():
        result = np.asarray(call())
        if name == "jax":
            np.testing.assert_allclose(result, reference, rtol=1e-10, atol=1e-12)
        else:
            assert np.array_equal(np.stack(result) if isinstance(result, list) else result, reference)
    return calls


def measure(calls, turns=30, turn_seconds=0.05):
    """Median seconds per call of each column over ``turns`` interleaved turns (each turn repeats a call for
    about ``turn_seconds``)."""
    samples = {name: [] for name in calls}
    for _ in range(turns):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            once = time.perf_counter() - start
            repeats = max(1, int(turn_seconds / max(once, 1e-9)))
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            samples[name].append((time.perf_counter() - start) / repeats)
    return {name: statistics.median(times) for name, times in samples.items()}


def main():
    import numba

    for kind, n in CASES.items():
        W = members(n)
        medians = measure(columns(W, kind))
        threads = numba.config.NUMBA_NUM_THREADS
        print(f"Rosenbrock n={n}, {BATCH} {kind}s, {threads} threads (medians, µs per batch)")
        for name, seconds in medians.items():
            print(f"  {name:8s} {seconds * 1e6:10.1f}")
        print(f"  loop / vmap   {medians['loop'] / medians['vmap']:.2f}x (target >= 1.7)")
        print(f"  vmap_1 / vmap {medians['vmap_1'] / medians['vmap']:.2f}x")
        if "jax" in medians:
            print(f"  jax / vmap    {medians['jax'] / medians['vmap']:.2f}x (above 1: fasttape faster)")


if __name__ == "__main__":
    main()
