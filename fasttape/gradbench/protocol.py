"""GradBench's protocol, the tool's side: one JSON answer per JSON message, on stdin and stdout.

Messages (one JSON object per line, each with an integer ``id`` and a ``kind``):

- ``start``: answered with the tool's name and its configuration (versions);
- ``define`` of a ``module``: ``success`` true when this tool implements it (``fasttape.gradbench.evals``),
  else false with an error;
- ``evaluate`` of a ``module``'s ``function`` on an ``input``: the input is read into arrays (untimed); the
  first call, which records the function's tape when its shapes are new, and the calls that make its tapes
  hot (up to a second of them) with the wait for their own kernels (10 s at most), are timed as ``prepare`` (see
  :func:`prepare`); then the function runs at least ``min_runs`` times and until ``min_seconds`` have
  passed, one ``evaluate`` timing each; the last output is answered;
- ``analysis``: the eval's verdict on an earlier output, acknowledged.

Every call runs on the compiled sweeps (``tiers.only("compiled")``): the first call of a sweep waits for its
kernel (loaded from the disk cache, or compiled on a cold one) inside its ``prepare`` timing, instead of running
in the NumPy executor meanwhile as an interactive session does.  As GradBench's tools do, it runs on one core
(the first this process may use, with BLAS limited to one thread) unless started with ``--multithreaded``.

A message that cannot be served (malformed JSON, an unknown kind, module or function, an input of the wrong
shape, a failure of the function itself) is answered with ``success: false`` and an error that names the
problem, and the tool serves the next.  Nothing but answers is written to stdout: while the tool runs,
``sys.stdout`` is stderr, so a stray ``print`` cannot break the protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from .. import tape_kernels, tiers
from .evals import MODULES

NAME = "fasttape"
WARM_SECONDS = 1.0  # calls of prepare after the first, at most (a slower function runs no faster compiled)
SETTLE_SECONDS = 10.0  # the wait for background builds, at most (a function that retraces often keeps making new tapes)


def _plain(value):
    """The output as JSON values: arrays as (nested) lists of floats, NumPy scalars as floats; dicts and lists
    recursively.  A value that is not finite cannot be written (JSON has no NaN): ``ValueError``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        if not np.all(np.isfinite(value)):
            raise ValueError("the output holds a value that is not finite, which JSON cannot carry")
        return value.tolist()
    if isinstance(value, (float, np.floating, int, np.integer)) and not isinstance(value, bool):
        value = float(value) if isinstance(value, (float, np.floating)) else int(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("the output is not finite, which JSON cannot carry")
        return value
    return value


def _runs(data) -> tuple[int, float]:
    """``min_runs`` and ``min_seconds`` of an input (1 and 0 when it has none, as hello's bare number)."""
    if not isinstance(data, dict):
        return 1, 0.0
    runs, seconds = data.get("min_runs", 1), data.get("min_seconds", 0.0)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"min_runs should be an integer of at least 1, got {runs!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"min_seconds should be a number of at least 0, got {seconds!r}")
    return runs, float(seconds)


def _failure(id_, error: str) -> dict:
    return {"id": id_, "success": False, "error": error}


def timed(call, first, min_runs: int, min_seconds: float):
    """``first()`` timed as ``prepare``, then ``call()`` at least ``min_runs`` times and until ``min_seconds`` have
    passed, one ``evaluate`` timing each: ``(the last output, the timings)``."""
    start = time.perf_counter_ns()
    output = first()
    timings = [{"name": "prepare", "nanoseconds": time.perf_counter_ns() - start}]
    total = 0
    while len(timings) <= min_runs or total < min_seconds * 1e9:
        start = time.perf_counter_ns()
        output = call()
        elapsed = time.perf_counter_ns() - start
        timings.append({"name": "evaluate", "nanoseconds": elapsed})
        total += elapsed
    return output, timings


class Tool:
    """Answers to an eval's messages (``warm_seconds``: of ``prepare``'s calls after the first)."""

    def __init__(self, warm_seconds: float = None):
        self.warm_seconds = WARM_SECONDS if warm_seconds is None else warm_seconds

    def answer(self, line: str) -> dict:
        """The answer to one message line."""
        try:
            message = json.loads(line)
        except json.JSONDecodeError as e:
            return _failure(None, f"malformed JSON message ({e}): {line[:200]!r}")
        if not isinstance(message, dict) or "id" not in message:
            return _failure(None, f"a message is a JSON object with an id, got {line[:200]!r}")
        id_ = message["id"]
        kind = message.get("kind")
        try:
            if kind == "start":
                return {"id": id_, "tool": NAME, "config": _config()}
            if kind == "define":
                return self.define(id_, message.get("module"))
            if kind == "evaluate":
                return self.evaluate(id_, message)
            if kind == "analysis":
                return {"id": id_}
            return _failure(id_, f"unknown message kind {kind!r} (start, define, evaluate and analysis are served)")
        except Exception as e:  # noqa: BLE001  (the eval is told, and the tool serves the next message)
            return _failure(id_, f"{type(e).__name__}: {e}")

    def define(self, id_, module) -> dict:
        if module in MODULES:
            return {"id": id_, "success": True}
        known = ", ".join(sorted(MODULES))
        return _failure(id_, f"fasttape does not implement module {module!r} (it has: {known})")

    def evaluate(self, id_, message) -> dict:
        module, function = message.get("module"), message.get("function")
        functions = MODULES.get(module)
        if functions is None:
            return _failure(id_, f"unknown module {module!r}")
        if function not in functions:
            known = ", ".join(sorted(functions))
            return _failure(id_, f"module {module!r} has no function {function!r} ({known})")
        data = message.get("input")
        runs, seconds = _runs(data)
        run = functions[function](data)  # (the input read into arrays: not timed)
        output, timings = timed(run, lambda: prepare(run, self.warm_seconds), runs, seconds)
        return {"id": id_, "success": True, "output": _plain(output), "timings": timings}


def prepare(run, warm_seconds: float = WARM_SECONDS):
    """The first call (the tapes recorded, when their shapes are new), then calls for up to ``warm_seconds`` so
    that hot tapes get kernels of their own (``HOT_CALLS`` calls make a tape hot), and the wait for those
    builds (``SETTLE_SECONDS`` at most): what JAX's first call does when it compiles, so that every ``evaluate``
    is a steady-state call."""
    output = run()
    start, calls = time.perf_counter(), 1
    while calls <= tape_kernels.HOT_CALLS and time.perf_counter() - start < warm_seconds:
        output, calls = run(), calls + 1
    tape_kernels.settle(timeout=SETTLE_SECONDS)
    if calls > tape_kernels.HOT_CALLS:  # a jvp or hvp entry is asked for on its first call after the build
        output = run()
        tape_kernels.settle(timeout=SETTLE_SECONDS)
    return output


def _config() -> dict:
    import numba

    import fasttape

    return {
        "fasttape": fasttape.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def pin_to_one_core() -> None:
    """Run on the first core this process may use (as GradBench's tools do, on core 0); threads started later
    inherit it."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def one_core() -> None:
    """``pin_to_one_core``, and BLAS with one thread (NumPy's, already loaded: its pool is resized through
    threadpoolctl).  fasttape's background compilation shares that core."""
    pin_to_one_core()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def respond(answer, lines, write) -> None:
    """``write`` the JSON line of ``answer(line)`` for every message line of ``lines``."""
    for line in lines:
        if line.strip():
            write(json.dumps(answer(line), allow_nan=False) + "\n")


def serve(lines, write, warm_seconds: float = None) -> None:
    """Answer every message of ``lines`` (an iterable of lines) with ``write(line)`` (``warm_seconds``: of
    ``prepare``'s calls after the first, ``WARM_SECONDS`` unless given)."""
    respond(Tool(warm_seconds).answer, lines, write)


def serve_stdio(answer) -> None:
    """``respond`` on this process's stdin and stdout, ``sys.stdout`` being stderr meanwhile (answers only)."""
    out = sys.stdout
    sys.stdout = sys.stderr

    def write(line: str) -> None:
        out.write(line)
        out.flush()

    respond(answer, sys.stdin, write)


def main(argv=None) -> None:
    """The tool on this process's stdin and stdout (sys.stdout is stderr meanwhile: answers only)."""
    parser = argparse.ArgumentParser(prog="python -m fasttape.gradbench", description="fasttape as a GradBench tool")
    parser.add_argument("--multithreaded", action="store_true", help="use every core this process may (default: one)")
    if not parser.parse_args(argv).multithreaded:
        one_core()
    with tiers.only("compiled"):
        serve_stdio(Tool().answer)
