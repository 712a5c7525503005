"""nox sessions: ``tests`` (the suite, then the oracle's quick profile against JAX),
``lint``, ``demo`` (the showcase), ``oracle`` (the thorough cross-validation) and
``bench`` (pytest-benchmark suites + report).

Every session uses the interpreter nox runs under and installs what it needs.
"""

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
