"""nox sessions: ``tests`` (the suite, then the oracle's ``ci`` profile against JAX),
``lint``, ``demo`` (the showcase), ``oracle`` (the thorough cross-validation),
``mutants`` (the oracle's kill rate of planted faults), ``bench`` (pytest-benchmark
suites + report) and ``debug`` (the suite with Numba's bounds checking, then with its
JIT disabled; slow, not part of CI).

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
    # every kernel once, on every core, before the test processes load them (pytest-xdist: one per core)
    session.run("python", "-m", "fasttape", "warm", "--quiet")
    # the fault-instrumented build takes minutes to compile (never cached): nox -s mutants runs its tests
    session.run("python", "-m", "pytest", "tests", "-n", "auto", "-m", "not instrumented", *session.posargs)
    # the oracle checks the compiled sweeps (tests/test_executor.py holds the executor to them)
    compiled = {"FASTTAPE_TIERS": "compiled"}
    jobs = str(os.cpu_count() or 1)  # the oracle's checks run on a pool of processes
    session.run(
        "python", "-m", "oracle", "--profile", "ci", "--no-progress", "--jobs", jobs, "--json", "oracle-ci.json",
        env=compiled,
    )  # fmt: skip


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
    """Benchmark suites, saved by pytest-benchmark (with the commit and the machine) under .benchmarks/,
    then the report: tables, PNG plots in benchmarks/plots/ and benchmarks/SUMMARY.md.

        nox -s bench                              # everything (about 10-15 minutes on 2 cores)
        nox -s bench -- --compare                 # ... then against the previous saved run: every median
                                                  # that grew by more than 20% is listed under REGRESSIONS
        nox -s bench -- --compare --threshold=10  # another threshold, in percent
        nox -s bench -- --compare --strict        # exit status 1 when there are regressions
        nox -s bench -- -k logistic               # anything else goes to pytest (a subset: --compare then
                                                  # matches the medians that both runs hold)

    Set BENCH_JAX_PYLOOP=1 to also time JAX compiling Lorenz's plain Python loop (minutes).
    """
    session.install("-e", ".[bench]")
    report_args = [a for a in session.posargs if a in ("--compare", "--strict") or a.startswith("--threshold=")]
    pytest_args = [a for a in session.posargs if a not in report_args]
    session.run("python", "-m", "pytest", "benchmarks", "--benchmark-only", "--benchmark-autosave", *pytest_args)
    session.run("python", "-m", "benchmarks.report", *report_args)


@nox.session(python=None)
def oracle(session):
    """The oracle's full matrix (thorough profile): every primitive × derivative kind against JAX and FD, in
    the compiled interpreter; then the quick profile with every tape on its own kernels (fasttape.tape_kernels,
    built at each tape's first call: compiling one per case makes this pass slower than its size suggests)."""
    session.install("-e", ".[test]")
    jobs = str(os.cpu_count() or 1)  # the oracle's checks run on a pool of processes
    session.run(
        "python", "-m", "oracle", "--profile", "thorough", "--jobs", jobs, "--json", "oracle-report.json",
        *session.posargs, env={"FASTTAPE_TIERS": "compiled"},
    )  # fmt: skip
    session.run(
        "python", "-m", "oracle", "--profile", "quick", "--jobs", jobs, "--json", "oracle-report-tape-kernels.json",
        *session.posargs, env={"FASTTAPE_TIERS": "compiled", "FASTTAPE_TAPE_KERNELS": "always"},
    )  # fmt: skip


@nox.session(python=None)
def mutants(session):
    """The oracle's mutation score: every rule of every primitive broken in turn (``fasttape.faults``), the
    ``ci`` profile run against each; the kill rate per primitive and kind, every survivor listed.  The tests
    of the fault switch (marked ``instrumented``) run first.

        nox -s mutants                          # every site, into mutants.json
        nox -s mutants -- --primitive max       # one primitive's sites (see python -m oracle.mutants -h)
    """
    session.install("-e", ".[test]")
    # first the fault switch itself (tests/test_oracle_fault.py), then every planted fault in turn
    session.run("python", "-m", "pytest", "tests", "-m", "instrumented")
    jobs = str(os.cpu_count() or 1)  # each worker builds the instrumented kernels once and takes a share
    session.run("python", "-m", "oracle.mutants", "--jobs", jobs, "--json", "mutants.json", *session.posargs)


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
