"""GradBench's JAX tool, timed to the end of each computation: the comparison fasttape is measured against.

GradBench's own JAX tool (``python/gradbench/gradbench/tools/jax/`` in its repository) times each call with
``gradbench.wrap.multiple_runs``, which never waits for JAX's asynchronous dispatch: its timings measure the
dispatch, not the computation (lse at n = 1.28 M: 0.045 ms reported for a call that takes 28.7 ms), and its first
timing holds the tracing and compilation.  This module serves GradBench's protocol with that tool's own modules,
imported from a GradBench checkout (nothing of them is copied here), after replacing ``gradbench.wrap``'s two
decorators with waiting ones:

- every timed call ends with ``jax.block_until_ready`` on its output, inside the timed region;
- the first call is timed apart as ``prepare`` (tracing and compilation), as fasttape's own tool times its first
  call (the recording of the tape);
- then the function runs at least ``min_runs`` times and until ``min_seconds`` have passed, one ``evaluate``
  timing each (GradBench's scoring reads only these); the conversions before and after are not timed.

Run it from anywhere, naming the checkout::

    python -m fasttape.gradbench.jax_tool --gradbench-dir ~/gradbench     # or: export GRADBENCH_DIR=~/gradbench

As GradBench's tool, it pins itself to one core (the first this process may use) unless ``--multithreaded``, and
answers ``define`` of a module that the JAX tool lacks (det, lstm, ...) with ``success: false``.  A call that
raises is answered with ``success: false`` and the error, and the tool serves the next message.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path

from .protocol import pin_to_one_core, serve_stdio, timed

NAME = "jax"
WRAP = Path("python/gradbench/gradbench/wrap.py")  # paths inside a GradBench checkout
TOOL = Path("python/gradbench/gradbench/tools/jax")
PACKAGE = "gradbench.tools.jax"
TIMING = "jax.block_until_ready inside every timed call; the first call timed apart as prepare"


def checkout(directory=None) -> Path:
    """The GradBench checkout: ``directory``, else ``$GRADBENCH_DIR``; ``FileNotFoundError`` naming the fix."""
    directory = directory or os.environ.get("GRADBENCH_DIR")
    if not directory:
        raise FileNotFoundError(
            "no GradBench checkout: pass --gradbench-dir or set GRADBENCH_DIR "
            "(git clone https://github.com/gradbench/gradbench)"
        )
    root = Path(directory).expanduser().resolve()
    for part in (WRAP, TOOL):
        if not (root / part).exists():
            raise FileNotFoundError(f"{root} is not a GradBench checkout: it has no {part}")
    return root


def timed_calls(function, value, min_runs: int, min_seconds: float, wait):
    """Call ``function(value)``, each call's output passed to ``wait`` inside the timed region: the first call
    timed as ``prepare``, then at least ``min_runs`` calls and until ``min_seconds`` have passed, one
    ``evaluate`` timing each.  ``(last output, timings)``."""

    def call():
        return wait(function(value))

    return timed(call, call, min_runs, min_seconds)


def waiting_decorators(wrap, wait):
    """Replacements for ``wrap.function`` and ``wrap.multiple_runs`` (same keywords) that time with
    ``timed_calls``; they return ``wrap.Wrapped``, so that a tool module can still call a decorated function."""

    def multiple_runs(*, pre, post, min_runs=lambda raw: raw["min_runs"], min_seconds=lambda raw: raw["min_seconds"]):
        def decorator(function):
            def wrapped(raw):
                output, timings = timed_calls(function, pre(raw), min_runs(raw), min_seconds(raw), wait)
                return {"success": True, "output": post(output), "timings": timings}

            return wrap.Wrapped(function=function, wrapped=wrapped)

        return decorator

    def function(*, pre, post):
        return multiple_runs(pre=pre, post=post, min_runs=lambda raw: 1, min_seconds=lambda raw: 0.0)

    return function, multiple_runs


def install(root: Path, wait=None):
    """Put the checkout's ``gradbench`` package and the JAX tool's directory on ``sys.path`` and replace
    ``gradbench.wrap``'s decorators with waiting ones (``wait`` defaults to ``jax.block_until_ready``); this must
    come before any tool module is imported.  Returns the patched ``gradbench.wrap``."""
    package, tool = str(root / WRAP.parent.parent), str(root / TOOL)
    if package not in sys.path:
        sys.path.insert(0, package)  # before anything else: the checkout's gradbench
    if tool not in sys.path:
        sys.path.append(tool)  # last: its modules' bare names (lse, ode, ...) shadow nothing
    wrap = importlib.import_module("gradbench.wrap")
    if not Path(wrap.__file__).resolve().is_relative_to(root):
        raise ImportError(f"gradbench.wrap was imported from {wrap.__file__}, not from the checkout {root}")
    if wait is None:
        import jax

        wait = jax.block_until_ready
    wrap.function, wrap.multiple_runs = waiting_decorators(wrap, wait)
    return wrap


def modules(root: Path) -> list[str]:
    """The modules of GradBench's JAX tool: its directory's Python files that use ``gradbench.wrap`` (not its
    run loop, nor a helper such as ``gmm_objective``)."""
    paths = (root / TOOL).glob("*.py")
    return sorted(p.stem for p in paths if p.stem != "run" and "from gradbench import wrap" in p.read_text())


class JaxTool:
    """Answers to GradBench's messages with the JAX tool's modules (after ``install``)."""

    def __init__(self, root: Path, multithreaded: bool):
        self.root, self.multithreaded = root, multithreaded

    def answer(self, line: str) -> dict:
        try:
            message = json.loads(line)
        except json.JSONDecodeError as e:
            return {"id": None, "success": False, "error": f"malformed JSON message ({e}): {line[:200]!r}"}
        id_, kind = message.get("id"), message.get("kind")
        try:
            if kind == "start":
                return {"id": id_, "tool": NAME, "config": self.config()}
            if kind == "define":
                self.module(message.get("module"))
                return {"id": id_, "success": True}
            if kind == "evaluate":
                return {"id": id_} | self.evaluate(message)
            return {"id": id_}
        except Exception as e:  # noqa: BLE001  (the eval is told, and the tool serves the next message)
            error = "".join(traceback.format_exception_only(e)).strip()
            return {"id": id_, "success": False, "error": error}

    def module(self, name):
        """The JAX tool's module ``name``; ``ModuleNotFoundError`` naming those it has."""
        known = modules(self.root)
        if name not in known:
            raise ModuleNotFoundError(f"GradBench's JAX tool has no module {name!r} (it has: {', '.join(known)})")
        return importlib.import_module(f"{PACKAGE}.{name}")

    def evaluate(self, message) -> dict:
        module, name = self.module(message.get("module")), message.get("function")
        function = getattr(module, str(name), None)
        if not hasattr(function, "wrapped"):
            raise AttributeError(f"GradBench's JAX module {module.__name__!r} has no timed function {name!r}")
        response = function.wrapped(message.get("input"))
        json.dumps(response["output"], allow_nan=False)  # ValueError now, not a line the runner rejects
        return response

    def config(self) -> dict:
        import jax

        return {"jax": jax.__version__, "timing": TIMING, "multithreaded": self.multithreaded, "from": str(self.root)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fasttape.gradbench.jax_tool",
        description="GradBench's JAX tool, each timed call waited for (jax.block_until_ready).",
    )
    parser.add_argument("--gradbench-dir", help="a GradBench checkout (default: $GRADBENCH_DIR)")
    parser.add_argument("--multithreaded", action="store_true", help="do not pin the process to one core")
    args = parser.parse_args(argv)
    try:
        root = checkout(args.gradbench_dir)
    except FileNotFoundError as e:
        parser.error(str(e))
    if not args.multithreaded:
        pin_to_one_core()  # (before JAX starts its threads, which inherit it)
    install(root)
    serve_stdio(JaxTool(root, args.multithreaded).answer)


if __name__ == "__main__":
    main()
