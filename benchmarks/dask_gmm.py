"""Gradients of the GMM objective on a Dask ``LocalCluster`` against one process: ``python -m benchmarks.dask_gmm``.

Issue 18's target: a 4-worker ``LocalCluster`` computing 10⁵ gradients of the GMM objective
(``fasttape.gradbench.evals.gmm.log_posterior``, one parameter set per member, the points shared) reaches at
least 80 % of the sum of its workers' single-process throughputs.

* ``T1``: gradients per second of this process running the same chunks one after another with
  ``tape.value_and_grad_batch(..., workers=1)`` (one thread and one BLAS thread, as each Dask worker runs a
  chunk);
* ``Tp``: the same chunks on ``W`` plain processes (a ``ProcessPoolExecutor``, each holding the tape: the
  chunks in, the gradients back), what the machine gives ``W`` processes without Dask;
* ``Tc``: a cluster of ``W`` single-threaded worker processes, ``ft.dask.compute`` of all the members (the
  split, the shipping of the shared points, the chunks, the gather), after one untimed run that ships the
  tape and builds its kernels on every worker.

Each is the median of ``--repeats`` runs, the three timed in turns while the cluster is up (the machine is
shared: a busy moment falls on each alike).

All run the tape's own kernels (``tape_kernels="always"``: what a hot function runs).  Printed per cluster:
``Tc / (W·T1)``, the issue's ratio, ``Tc / (min(W, cores)·T1)``, the same against what the machine's cores
can give (W processes on fewer cores share them), ``Tp / (min(W, cores)·T1)``, how far plain processes get
there, and ``Tc / Tp``, what Dask costs beyond them.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

import fasttape as ft
from fasttape import tiers
from fasttape.gradbench.evals.gmm import log_posterior

GAMMA, M = 1.0, 0  # the Wishart prior's (benchmarks.workloads' WISHART_GAMMA, WISHART_M)


def inputs(members, d, k, n, seed=0):
    """``(alpha, mu, q, l)`` per member (ADBench's distributions, as ``benchmarks.workloads.gmm_input``) and the
    shared points ``X``."""
    rng = np.random.default_rng(seed)
    params = (
        rng.standard_normal((members, k)),
        rng.random((members, k, d)),
        0.5 * rng.standard_normal((members, k, d)),
        0.5 * rng.standard_normal((members, k, d * (d - 1) // 2)),
    )
    return params, rng.random((n, d))


def single_process(tape, params, X, chunk_size) -> float:
    """Gradients per second of ``tape``'s batches over the chunks, one after another on one thread."""
    members = len(params[0])
    with threadpool_limits(1):
        start = time.perf_counter()
        for s in range(0, members, chunk_size):
            tape.value_and_grad_batch(*(p[s : s + chunk_size] for p in params), X, GAMMA, M, workers=1)
        return members / (time.perf_counter() - start)


_PROCESS = {}  # in a pool's process: its tape, its BLAS limit


def _process_setup(data):
    tiers.set_mode("compiled")
    ft.set_options(tape_kernels="always")
    _PROCESS["blas"] = threadpool_limits(1)
    _PROCESS["tape"] = ft.load_tape(io.BytesIO(data))


def _process_chunk(chunk, X):
    return _PROCESS["tape"].value_and_grad_batch(*chunk, X, GAMMA, M, workers=1)


def plain_processes(pool, params, X, chunk_size) -> float:
    """Gradients per second of the chunks on a pool of processes without Dask (the same chunks in, the same
    gradients back): what the machine gives ``W`` processes."""
    members = len(params[0])
    chunks = [tuple(p[s : s + chunk_size] for p in params) for s in range(0, members, chunk_size)]
    start = time.perf_counter()
    list(pool.map(_process_chunk, chunks, [X] * len(chunks)))
    return members / (time.perf_counter() - start)


def compare(workers, gradient, tape, params, X, chunk_size, repeats) -> tuple[float, float, float]:
    """The medians of T1, Tp and Tc (a LocalCluster of ``workers`` single-threaded processes), timed in turns
    (the machine's other load falls on each alike)."""
    import distributed

    import fasttape.dask  # noqa: F401  (ft.dask)

    members = len(params[0])
    saved = io.BytesIO()
    tape.save(saved)
    spawn = multiprocessing.get_context("spawn")
    with (
        distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as c,
        distributed.Client(c) as client,
        ProcessPoolExecutor(workers, spawn, _process_setup, (saved.getvalue(),)) as pool,
    ):
        client.wait_for_workers(workers)
        # untimed: ships the tape and builds its kernels on every worker and process
        ft.dask.compute(gradient, *params, X, GAMMA, M, client=client, chunk_size=chunk_size)
        plain_processes(pool, params, X, chunk_size)
        t1, tp, tc = [], [], []
        for _ in range(repeats):
            t1.append(single_process(tape, params, X, chunk_size))
            tp.append(plain_processes(pool, params, X, chunk_size))
            start = time.perf_counter()
            ft.dask.compute(gradient, *params, X, GAMMA, M, client=client, chunk_size=chunk_size)
            tc.append(members / (time.perf_counter() - start))
    return statistics.median(t1), statistics.median(tp), statistics.median(tc)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000, help="gradients per run (default 10^5)")
    parser.add_argument("--d", type=int, default=2, help="the points' dimension")
    parser.add_argument("--k", type=int, default=5, help="the mixture's components")
    parser.add_argument("--n", type=int, default=1000, help="the points")
    parser.add_argument("--chunk-size", type=int, default=2500)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 2], help="cluster sizes (default 4 2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    tiers.set_mode("compiled")
    ft.set_options(tape_kernels="always")
    params, X = inputs(args.members, args.d, args.k, args.n)
    gradient = ft.grad(log_posterior, argnums=(0, 1, 2, 3), static_argnums=(5,))
    tape = gradient.tape(*(p[0] for p in params), X, GAMMA, M)  # (its kernels built now)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"GMM d={args.d} K={args.k} n={args.n}: {args.members} gradients in chunks of {args.chunk_size}, "
          f"{cores} cores, medians of {args.repeats}")  # fmt: skip
    print(f"{'W':>3} {'T1':>7} {'Tp':>7} {'Tc':>7} {'Tc/(W·T1)':>10} {'Tc/(min(W,cores)·T1)':>21} "
          f"{'Tp/(min(W,cores)·T1)':>21} {'Tc/Tp':>6}   (gradients/s)")  # fmt: skip
    for workers in args.workers:
        t1, tp, tc = compare(workers, gradient, tape, params, X, args.chunk_size, args.repeats)
        usable = min(workers, cores)
        print(f"{workers:>3} {t1:>7.0f} {tp:>7.0f} {tc:>7.0f} {tc / (workers * t1):>10.1%} {tc / (usable * t1):>21.1%} "
              f"{tp / (usable * t1):>21.1%} {tc / tp:>6.1%}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
