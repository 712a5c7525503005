"""nox sessions: ``tests`` (the suite, then the oracle's quick profile against JAX),
``lint``, ``demo`` (the showcase), ``oracle`` (the thorough cross-validation),
``bench`` (pytest-benchmark suites + report) and ``debug`` (the suite with Numba's
bounds checking, then with its JIT disabled; slow, not part of CI).

Every session uses the interpreter nox runs under and installs what it needs.
"""

import os
import shutil

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=None)
def tests(session):
    """The test suite: every primitive and derivative against JAX and finite differences."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests", *session.posargs)
    session.run("python", "-m", "oracle", "--quick", "--no-progress", "--json", "oracle-quick.json")


@nox.session(python=None)
def lint(session):
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=None)
def demo(session):
    """A short showcase: tracing, gradients, timings and the JAX cross-check."""
    session.install("-e", ".[jax]")
    session.run("python", "-m", "fasttape.demo", *session.posargs)


@nox.session(python=None)
def bench(session):
    """Benchmark suites (saved by pytest-benchmark), then the report."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "pytest", "benchmarks", "--benchmark-only", "--benchmark-autosave", *session.posargs)
    session.run("python", "-m", "benchmarks.report")


@nox.session(python=None)
def oracle(session):
    """The oracle's full matrix (thorough profile): every primitive × derivative kind against JAX and FD."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "oracle", "--profile", "thorough", "--json", "oracle-report.json", *session.posargs)


@nox.session(python=None)
def debug(session):
    """The suite twice: with Numba's bounds checking (an index outside a buffer raises IndexError instead of
    reading or writing memory), then with Numba's JIT disabled (the sweeps run as Python, for coverage).

    The bounds-checked kernels are compiled into a fresh Numba cache of their own (NUMBA_CACHE_DIR), so that
    no kernel compiled without the checks is reused and the child processes of the tests compile only once.
    """
    session.install("-e", ".[test]")
    cache = os.path.join(session.create_tmp(), "numba-boundscheck-cache")
    shutil.rmtree(cache, ignore_errors=True)
    profile = {"HYPOTHESIS_PROFILE": "debug"}
    session.run(
        "python", "-m", "pytest", "tests", "-p", "no:cacheprovider", *session.posargs,
        env={**profile, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": cache},
    )  # fmt: skip
    session.run(
        "python", "-m", "pytest", "tests", "-p", "no:cacheprovider", *session.posargs,
        env={**profile, "NUMBA_DISABLE_JIT": "1", "FASTTAPE_NO_CACHE": "1"},
    )  # fmt: skip
