"""Concurrency: one gradient function (or tape) called from many threads gives exactly the serial results.

Every call in flight takes a workspace of its own from the tape's pool, the tape
cache is locked, and threads that miss the cache together record one tape.  The
compiled sweeps release the GIL (``nogil=True``), so the threads also overlap;
the speed-up is measured in the benchmarks, never asserted here.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

import fasttape as ft
from fasttape import kernels as K

N_THREADS = 8
CALLS = 200


def _loss(x):
    return np.sum(np.tanh(x) * np.sin(x[::-1]) + 0.5 * x**2) + np.max(x) * np.sum(np.cumsum(x) ** 2) * 1e-3


def _inputs(n=64):
    rng = np.random.default_rng(7)
    return [rng.normal(size=n) for _ in range(N_THREADS * CALLS)]


def _threaded(fn, inputs):
    """fn(inputs[k]) for every k, 8 threads each taking every 8th input, all released at once."""
    results = [None] * len(inputs)
    errors = []
    barrier = threading.Barrier(N_THREADS)

    def worker(t):
        try:
            barrier.wait()
            for k in range(t, len(inputs), N_THREADS):
                results[k] = fn(inputs[k])
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    return results


def _assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x if isinstance(x, tuple) else (x,), y if isinstance(y, tuple) else (y,)):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v), strict=True)


def test_one_value_and_grad_object_from_eight_threads():
    inputs = _inputs()
    vg = ft.value_and_grad(_loss)
    serial = [vg(x) for x in inputs]
    threaded = _threaded(vg, inputs)
    _assert_bitwise_equal(threaded, serial)
    assert len(vg.cache) == 1


def test_one_tape_from_eight_threads():
    inputs = _inputs()
    tape = ft.trace(_loss, inputs[0])
    serial = [tape.value_and_grad(x) for x in inputs]
    _assert_bitwise_equal(_threaded(tape.value_and_grad, inputs), serial)
    _assert_bitwise_equal(_threaded(tape, inputs), [tape(x) for x in inputs])


def test_hvp_and_jvp_from_eight_threads():
    inputs = _inputs(16)[: N_THREADS * 25]
    v = np.linspace(-1.0, 1.0, 16)
    hvp = [ft.hvp(_loss, (x,), (v,)) for x in inputs]
    _assert_bitwise_equal(_threaded(lambda x: ft.hvp(_loss, (x,), (v,)), inputs), hvp)
    jvp = [ft.jvp(_loss, (x,), (v,)) for x in inputs]
    _assert_bitwise_equal(_threaded(lambda x: ft.jvp(_loss, (x,), (v,)), inputs), jvp)


def test_threads_that_miss_the_cache_together_record_one_tape():
    calls = []

    def f(x):
        calls.append(1)
        return np.sum(x * x)

    inputs = [np.full(5, float(k)) for k in range(N_THREADS)]
    g = ft.grad(f)
    results = _threaded(g, inputs)
    assert len(calls) == 1 and len(g.cache) == 1
    _assert_bitwise_equal(results, [2.0 * x for x in inputs])


def test_branching_function_from_eight_threads():
    """Threads alternate between two branches of a Python ``if``: each gets its own branch's tape."""

    def f(x):
        if np.sum(x) > 0:
            return np.sum(np.exp(x))
        return np.sum(x**3)

    inputs = [np.linspace(0.0, 1.0, 4) * (1 if k % 2 else -1) for k in range(N_THREADS * 20)]
    g = ft.grad(f)
    serial = [ft.grad(f)(x) for x in inputs]
    _assert_bitwise_equal(_threaded(g, inputs), serial)
    assert len(g.cache) == 2


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="without the JIT there are no compiled sweeps to release the GIL")
def test_compiled_entry_points_release_the_gil():
    for name in ("run_forward", "run_value_and_grad", "run_reverse", "run_jvp", "run_hvp", "run_vector_reverse"):
        assert getattr(K, name).targetoptions.get("nogil") is True, name
