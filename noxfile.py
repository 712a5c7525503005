"""nox sessions: ``tests`` (the suite, then the oracle's ``ci`` profile against JAX),
``lint``, ``demo`` (the showcase), ``oracle`` (the thorough cross-validation),
``mutants`` (the oracle's kill rate of planted faults), ``bench`` (pytest-benchmark
suites + report), ``debug`` (the suite with Numba's bounds checking, then with its
JIT disabled; slow, not part of CI) and ``gradbench`` (GradBench's evals against fasttape
and JAX, given a GradBench checkout in $GRADBENCH_DIR).

Every session uses the interpreter nox runs under and installs what it needs.
"""

import argparse
import os
import shlex
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
    # (--dist loadgroup: tests/test_dask.py's tests share one process, so one LocalCluster)
    session.run(
        "python", "-m", "pytest", "tests", "-n", "auto", "--dist", "loadgroup", "-m", "not instrumented",
        *session.posargs,
    )  # fmt: skip
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


GRADBENCH_HOWTO = """GradBench is not here: set GRADBENCH_DIR to a GradBench checkout with its C++ reference built.

    git clone https://github.com/gradbench/gradbench
    make -C gradbench/cpp && make -C gradbench/tools/manual    # the reference every eval but hello validates against
    export GRADBENCH_DIR=$PWD/gradbench
    nox -s gradbench -- --evals lse llsq

Nothing was run."""
GRADBENCH_UNVALIDATED = {"hello", "particle", "saddle"}  # evals that need no tools/manual/bin/<eval>


def _gradbench_options(posargs):
    parser = argparse.ArgumentParser(prog="nox -s gradbench --", description="GradBench's evals, fasttape and JAX.")
    parser.add_argument("--evals", nargs="+", help="eval names (default: every eval fasttape implements)")
    parser.add_argument("--tools", nargs="+", default=["fasttape", "jax"], choices=["fasttape", "jax"])
    parser.add_argument("--min-runs", type=int, help="passed to every eval that takes it (GradBench's default: 1)")
    parser.add_argument("--min-seconds", type=float, help="passed to every eval that takes it (default: 1)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for each answer of a tool (600)")
    parser.add_argument("--results", default="gradbench-results", help="where the logs go (gradbench-results)")
    parser.add_argument(
        "--eval-args", nargs="+", default=[], metavar="EVAL=ARGS",
        help='more arguments for an eval, e.g. "lse=-n 2500 20000" "ode=-n 1000 -s 1 10"',
    )  # fmt: skip
    return parser.parse_args(posargs)


def _gradbench_checkout():
    """$GRADBENCH_DIR when it is a GradBench checkout, else None."""
    root = os.environ.get("GRADBENCH_DIR")
    if root and os.path.isfile(os.path.join(root, "python", "gradbench", "gradbench", "eval.py")):
        return os.path.abspath(root)
    return None


def _gradbench_eval_command(session, root, name, options, python):
    """The eval's command line (run from the checkout's root), with --min-runs/--min-seconds where it takes them."""
    script = os.path.join("python", "gradbench", "gradbench", "evals", name, "run.py")
    if not os.path.isfile(os.path.join(root, script)):
        session.error(f"GradBench has no eval {name!r}: {os.path.join(root, script)} does not exist")
    if name not in GRADBENCH_UNVALIDATED and not os.path.isfile(os.path.join(root, "tools", "manual", "bin", name)):
        session.error(
            f"GradBench's reference for {name} is not built (no tools/manual/bin/{name}), and the eval validates"
            f" against it: run make -C {root}/cpp && make -C {root}/tools/manual"
        )
    command = [python, script]
    with open(os.path.join(root, script), encoding="utf-8") as f:
        takes_runs = "--min-runs" in f.read()
    if takes_runs and options.min_runs is not None:
        command += ["--min-runs", str(options.min_runs)]
    if takes_runs and options.min_seconds is not None:
        command += ["--min-seconds", str(options.min_seconds)]
    extra = dict(item.split("=", 1) for item in options.eval_args if "=" in item)
    return command + shlex.split(extra.get(name, ""))


@nox.session(python=None)
def gradbench(session):
    """GradBench's evals (github.com/gradbench/gradbench) against fasttape's tool and JAX's, each run through
    fasttape.gradbench.driver (GradBench's intermediary in Python: no Docker or Rust), one log per eval and tool
    in gradbench-results/<eval>-<tool>.jsonl, then the table (fasttape.gradbench.report).  JAX is GradBench's own
    JAX tool, its timings waited for (fasttape.gradbench.jax_tool).  Fails when a fasttape run is not a success.

        export GRADBENCH_DIR=~/gradbench                  # a checkout with its reference built (see below)
        nox -s gradbench                                  # every eval fasttape implements, fasttape and jax
        nox -s gradbench -- --evals gmm lse --tools fasttape --min-runs 3 --min-seconds 0.5
        nox -s gradbench -- --evals lse --eval-args "lse=-n 2500 20000"

    Without a checkout in $GRADBENCH_DIR it says how to get one, and exits 0 having run nothing.
    """
    options = _gradbench_options(session.posargs)
    root = _gradbench_checkout()
    if root is None:
        if os.environ.get("GRADBENCH_DIR"):
            session.log(f"GRADBENCH_DIR={os.environ['GRADBENCH_DIR']} is not a GradBench checkout.")
        session.log(GRADBENCH_HOWTO)
        return
    session.install("-e", ".[jax]", "pydantic", "dataclasses-json", "scipy")
    python = os.path.join(session.bin, "python")
    evals = (
        options.evals
        or session.run(
            "python", "-c", "from fasttape.gradbench.evals import MODULES; print(*sorted(MODULES))", silent=True
        ).split()
    )
    tools = {
        "fasttape": [python, "-m", "fasttape.gradbench"],
        "jax": [python, "-m", "fasttape.gradbench.jax_tool", "--gradbench-dir", root],
    }
    os.makedirs(options.results, exist_ok=True)
    env = {"PYTHONPATH": os.path.join(root, "python", "gradbench")}
    logs = []
    for name in evals:
        command = _gradbench_eval_command(session, root, name, options, python)
        for tool in options.tools:
            logs.append(os.path.abspath(os.path.join(options.results, f"{name}-{tool}.jsonl")))
            session.run(
                "python", "-m", "fasttape.gradbench.driver", "--eval", shlex.join(command),
                "--tool", shlex.join(tools[tool]), "--cwd", root, "-o", logs[-1], "--timeout", str(options.timeout),
                env=env, success_codes=list(range(7)),  # the outcome is the report's to judge
            )  # fmt: skip
    require = ["--require", "fasttape"] if "fasttape" in options.tools else []
    session.run("python", "-m", "fasttape.gradbench.report", *logs, *require)
