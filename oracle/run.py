"""The oracle's test matrix: every primitive of fasttape's table × every derivative kind.

:func:`run_matrix` runs :func:`oracle.check` on every program of
``oracle.cases.PRIMITIVE_CASES`` (made scalar by a fixed random weighting when
the program's output is not scalar) and attributes each kind's result to every
primitive the program's tape uses.  The :class:`Matrix` it returns prints as a
terminal table, saves as JSON and knows which cells were never exercised.
Optionally, randomly generated programs (``oracle.programs.search``) are
checked too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import functools
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field

import hypothesis
import numpy as np

import fasttape as ft
from fasttape.kernels import C_OP, PRIMITIVE_BY_NAME, PRIMITIVES

from .cases import NP, PRIMITIVE_CASES, checked_edges, scalar_loss
from .check import KINDS, Report, check
from .programs import search
from .strategies import DRAWN, INDEXING_KINDS, LINALG_KINDS, primitive_examples

PROFILES = {
    # seeds: input draws per hand-written case; examples: hypothesis-drawn checks per elementwise, comparison
    # and reduction primitive (shapes and operands); programs: random programs of 2-30 primitives; nested: the
    # cases the third-order "nested" kind runs on ("first": the first case of each name, not the drawn ones)
    "quick": {"seeds": 1, "examples": 1, "programs": 10, "nested": "first"},
    "ci": {"seeds": 1, "examples": 2, "programs": 25, "nested": "first"},
    "dev": {"seeds": 1, "examples": 5, "programs": 200, "nested": "all"},
    "thorough": {"seeds": 3, "examples": 25, "programs": 2000, "nested": "all"},
}
# the first case of each name (``add`` of ``add``, ``add-bcast-3x1-1x4``, ...), and lu-solve (the first to use
# permute): where the profiles that check "nested" on "first" check it
FIRST_OF_NAME = frozenset({c.name.split("-")[0]: c.name for c in reversed(PRIMITIVE_CASES)}.values()) | {"lu-solve"}
_OPNAME = {p.opcode: p.name for p in PRIMITIVES}


@dataclass
class Cell:
    """One primitive × one derivative kind, aggregated over every case using the primitive."""

    checks: int = 0
    passed: int = 0
    failed: int = 0
    cases: set = field(default_factory=set)
    max_error_jax: float = 0.0
    max_error_fd: float | None = None
    first_failure: str | None = None
    first_failure_case: str | None = None

    def add(self, case_name, result):
        self.checks += 1
        self.cases.add(case_name)
        if result.passed:
            self.passed += 1
        else:
            self.failed += 1
            if self.first_failure is None:
                self.first_failure = result.message or "failed"
                self.first_failure_case = case_name
        self.max_error_jax = max(self.max_error_jax, _finite_or_inf(result.error_jax))
        if result.error_fd is not None:
            self.max_error_fd = max(self.max_error_fd or 0.0, _finite_or_inf(result.error_fd))

    def to_dict(self):
        return {
            "cases": len(self.cases),
            "checks": self.checks,
            "passed": self.passed,
            "failed": self.failed,
            "max_error_jax": _json_float(self.max_error_jax),
            "max_error_fd": _json_float(self.max_error_fd),
            "first_failure": self.first_failure,
            "first_failure_case": self.first_failure_case,
        }


def _finite_or_inf(x):
    x = float(x)
    return float("inf") if np.isnan(x) else x


def _json_float(x):
    if x is None:
        return None
    return x if np.isfinite(x) else str(x)


@dataclass
class CaseRun:
    """One case at one input draw: its report (or the exception it raised) and the primitives it used."""

    case: str
    seed: int
    primitives: tuple
    report: Report | None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Matrix:
    """The result of :func:`run_matrix`."""

    profile: str
    kinds: tuple
    primitives: tuple
    cells: dict = field(default_factory=dict)  # (primitive, kind) -> Cell
    runs: list = field(default_factory=list)  # CaseRun
    errors: list = field(default_factory=list)  # (case, seed, traceback) for cases that raised
    drawn_failures: list = field(default_factory=list)  # (primitive, shrunk example, report) from hypothesis
    programs: dict = field(default_factory=dict)  # random-program search outcome
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # phase -> seconds (process seconds when ``in_processes``)
    in_processes: int = 0  # the pool's size when every phase ran on a pool of processes

    def cell(self, primitive, kind) -> Cell:
        return self.cells.setdefault((primitive, kind), Cell())

    @property
    def checks(self) -> int:
        return sum(len(r.report.results) for r in self.runs if r.report is not None)

    @property
    def missing(self) -> list:
        """(primitive, kind) cells of the table that no case exercised."""
        return [(p, k) for p in self.primitives for k in self.kinds if self.cell(p, k).checks == 0]

    @property
    def failures(self) -> list:
        return [(p, k, c) for (p, k), c in sorted(self.cells.items()) if c.failed]

    @property
    def passed(self) -> bool:
        return (
            not self.failures
            and not self.errors
            and not self.drawn_failures
            and not self.missing
            and self.programs.get("failure") is None
            and not self.programs.get("error")
        )

    # -- reports -------------------------------------------------------------
    def table(self) -> str:
        """A terminal table: rows primitives, columns kinds, then the largest errors."""
        width = max(9, *(len(k) for k in self.kinds))
        name_w = max(10, *(len(p) for p in self.primitives))
        head = f"{'primitive':<{name_w}} " + " ".join(f"{k:>{width}}" for k in self.kinds)
        head += f" {'max vs JAX':>10} {'max vs FD':>10}"
        lines = [head, "-" * len(head)]
        for p in self.primitives:
            row = [f"{p:<{name_w}}"]
            ejax, efd = 0.0, None
            for k in self.kinds:
                c = self.cell(p, k)
                if c.checks == 0:
                    text = "-"
                elif c.failed:
                    text = f"FAIL {c.failed}"
                else:
                    text = f"ok {c.checks}"
                row.append(f"{text:>{width}}")
                ejax = max(ejax, c.max_error_jax)
                if c.max_error_fd is not None:
                    efd = max(efd or 0.0, c.max_error_fd)
            row.append(f"{ejax:>10.1e}" if self.cell_count(p) else f"{'-':>10}")
            row.append(f"{'-':>10}" if efd is None else f"{efd:>10.1e}")
            lines.append(" ".join(row))
        if self.missing:
            lines.append("")
            by_primitive = {}
            for p, k in self.missing:
                by_primitive.setdefault(p, []).append(k)
            parts = [
                f"{p} (all kinds)" if len(ks) == len(self.kinds) > 1 else f"{p}×{'/'.join(ks)}"
                for p, ks in by_primitive.items()
            ]
            lines.append(f"missing cells ({len(self.missing)}): " + ", ".join(parts))
        for p, k, c in self.failures:
            lines.append(
                f"FAIL {p}×{k}: {c.failed}/{c.checks} failed; first: {c.first_failure_case}: {c.first_failure}"
            )
        for prim, example, detail in self.drawn_failures:
            lines.append(f"FAIL {prim}, shrunk by hypothesis to {example}:\n{detail}")
        for case, seed, tb in self.errors:
            last = tb.strip().splitlines()[-1] if tb.strip() else "error"
            lines.append(f"ERROR {case} (seed {seed}): {last}")
        if self.conventions():
            agreed = "; ".join(f"{p}: {text}" for p, text in self.conventions().items())
            lines.append(f"at ties and kinks, fasttape and JAX both follow: {agreed}")
        if self.programs:
            lines.append(self._programs_line())
        return "\n".join(lines)

    def first_failure(self) -> str:
        """The first failing check, in a line ('' when none failed)."""
        for _, kind, cell in self.failures:
            return f"{cell.first_failure_case} {kind}: {cell.first_failure}"
        for case, _, tb in self.errors:
            return f"{case} raised {tb.strip().splitlines()[-1]}"
        for primitive, example, _ in self.drawn_failures:
            return f"{primitive}~drawn {example}"
        if self.programs.get("failure") or self.programs.get("error"):
            return f"random program using {', '.join(self.programs.get('primitives') or ['?'])}"
        return ""

    def conventions(self) -> dict:
        """primitive -> its convention at ties or kinks (``Primitive.convention``), for every primitive whose
        edge checks ran and all passed: the convention fasttape and JAX were both seen to follow."""
        agreed = {}
        for p in PRIMITIVES:
            runs = [r for r in self.runs if r.case.startswith((f"{p.name}-edge-", f"{p.name}~drawn-"))]
            if p.convention and runs and all(r.report is not None and r.report.passed for r in runs):
                agreed[p.name] = p.convention
        return agreed

    def cell_count(self, primitive) -> int:
        return sum(self.cell(primitive, k).checks for k in self.kinds)

    def _programs_line(self):
        pr = self.programs
        if pr.get("skipped"):
            return f"random programs: skipped ({pr.get('note', '')})"
        if pr.get("error"):
            return f"random programs: ERROR {pr['error']}"
        if pr.get("failure") is not None:
            return f"random programs: FAIL (searched up to {pr.get('count')} programs):\n{pr['failure']}"
        return (
            f"random programs: {pr.get('programs', 0)} checked, {pr.get('checks', 0)} derivative checks, all passed "
            f"({pr.get('seconds', 0):.1f} s)"
        )

    def summary(self) -> str:
        drawn = sum(1 for r in self.runs if "~drawn" in r.case)
        programs = self.programs.get("programs", 0)
        checks = self.checks + self.programs.get("checks", 0)
        status = "all passed" if self.passed else "FAILED"
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items())
        where = f" on {self.in_processes} processes ({phases} of process time)" if self.in_processes else f" ({phases})"
        return (
            f"{len(self.primitives)} primitives x {len(self.kinds)} kinds: {len(self.runs) - drawn} case runs, "
            f"{drawn} hypothesis-drawn examples, {programs} random programs; {checks} derivative checks: "
            f"{status} in {self.seconds:.1f} s{where}"
        )

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "passed": self.passed,
            "fasttape_version": getattr(ft, "__version__", None),
            "git_commit": _git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": self.seconds,
            "timings": self.timings,
            "processes": self.in_processes or 1,
            "kinds": list(self.kinds),
            "primitives": list(self.primitives),
            "checks": self.checks,
            "cells": {p: {k: self.cell(p, k).to_dict() for k in self.kinds} for p in self.primitives},
            "missing": [[p, k] for p, k in self.missing],
            "conventions": self.conventions(),
            "errors": [{"case": c, "seed": s, "traceback": tb} for c, s, tb in self.errors],
            "drawn_failures": [{"primitive": p, "example": e, "report": r} for p, e, r in self.drawn_failures],
            "cases": [
                {
                    "case": r.case,
                    "seed": r.seed,
                    "primitives": list(r.primitives),
                    "seconds": round(r.seconds, 4),
                    "passed": r.report is not None and r.report.passed,
                }
                for r in self.runs
            ],
            "programs": {k: v for k, v in self.programs.items() if k != "object"},
        }

    def to_json(self, path) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, default=str)
            fh.write("\n")


def _git_commit():
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or None
    except Exception:
        return None


# -- running -------------------------------------------------------------------
def case_primitives(case, args) -> tuple:
    """Names of the primitives the case's own program (before the scalar loss) records."""
    tape = ft.trace(functools.partial(case.fn, NP), *args, argnums=tuple(range(len(args))))
    ops = np.unique(np.asarray(tape.ins)[:, C_OP]) if len(tape.ins) else []
    return tuple(_OPNAME[int(op)] for op in ops if int(op) in _OPNAME)


def select_cases(primitive=None, cases=None):
    """Cases whose tape uses ``primitive``'s opcode, or whose name is it or starts with it and a hyphen
    (``exp`` is not a prefix of ``expm-...``, ``expm`` is)."""
    cases = PRIMITIVE_CASES if cases is None else cases
    if primitive is None:
        return list(cases)
    names = {p.name for p in PRIMITIVES}
    selected = []
    for case in cases:
        if case.name == primitive or case.name.startswith(primitive + "-"):
            selected.append(case)
            continue
        if primitive in names:
            try:
                used = case_primitives(case, case.inputs(np.random.default_rng(0)))
            except Exception:
                continue
            if primitive in used:
                selected.append(case)
    return selected


class _Progress:
    def __init__(self, enabled, total):
        self.enabled = enabled
        self.total = total
        self.width = 0

    def update(self, i, text):
        if not self.enabled:
            return
        line = f"[{i}/{self.total}] {text}"[:100]
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()
        self.width = len(line)

    def done(self):
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _seed(name, draw):
    return (sum(ord(c) * 31**i for i, c in enumerate(name)) + 1_000_003 * draw) % 2**32


def run_matrix(
    profile="quick",
    primitive=None,
    kind=None,
    progress=True,
    random_programs=True,
    cases=None,
    on_report=None,
    jobs=1,
    first_failure=False,
) -> Matrix:
    """Run every case (optionally only those of one primitive, one kind) and aggregate the matrix.

    ``on_report(case_run)`` is called after each case (the CLI's ``-v`` prints reports with it).  With
    ``jobs`` > 1 every check runs on a pool of that many processes; hand-picked ``cases`` and
    ``first_failure`` runs keep one process, sharing only the random programs.  ``first_failure``: stop
    at the first failing check, shrinking nothing (``oracle.mutants`` only asks whether a planted fault
    is caught).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {sorted(PROFILES)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    if primitive is not None and primitive not in {p.name for p in PRIMITIVES}:
        if not any(c.name.startswith(primitive) for c in (PRIMITIVE_CASES if cases is None else cases)):
            raise ValueError(f"no primitive or case named {primitive!r}")
    settings = PROFILES[profile]
    kinds = KINDS if kind is None else (kind,)
    all_names = tuple(p.name for p in PRIMITIVES)
    rows = all_names if primitive is None or primitive not in all_names else (primitive,)
    matrix = Matrix(profile=profile, kinds=kinds, primitives=rows)
    start = time.perf_counter()
    work = [("cases", (case, draw)) for case in select_cases(primitive, cases) for draw in range(settings["seeds"])]
    if settings["examples"] and cases is None:  # hand-picked ``cases`` (tests of the runner) skip this phase
        drawn = [p for p in DRAWN if primitive is None or p.name == primitive]
        work += [("drawn", (prim, edge)) for prim in drawn for edge in (None, *checked_edges(prim))  # smooth, edges
                 if edge is None or prim.kind not in LINALG_KINDS | INDEXING_KINDS]  # fmt: skip
    programs = settings["programs"] if random_programs and primitive is None and kind is None else 0
    shares = [programs // jobs + (i < programs % jobs) for i in range(jobs)]  # seeds 0..jobs-1
    work += [("programs", (n, seed)) for seed, n in enumerate(shares) if n]
    enabled = progress and (progress is True or sys.stderr.isatty())
    if jobs > 1 and cases is None and not first_failure:
        _run_in_processes(matrix, work, jobs, enabled, on_report)
    else:
        _run_in_order(matrix, work, jobs, enabled, on_report, first_failure)
    if random_programs and not programs:
        matrix.programs = {"skipped": True, "note": "random programs run only for the full matrix"}
    matrix.seconds = time.perf_counter() - start
    return matrix


def _run_one(matrix, phase, item, on_report, shrink=True):
    """One task of a run: a case at one draw, a primitive's hypothesis examples (smooth or on one edge),
    or a share of the random programs, whose outcome it returns."""
    if phase == "cases":
        case, draw = item
        rng = np.random.default_rng(_seed(case.name, draw))
        _check_case(matrix, case, functools.partial(case.inputs, rng), draw, rng, on_report)
    elif phase == "drawn":
        prim, edge = item
        _check_drawn(matrix, prim, PROFILES[matrix.profile]["examples"], on_report, shrink, edge)
    else:
        n, seed = item
        return _search_share(n, seed, shrink)
    return None


def _label(phase, item) -> str:
    if phase == "cases":
        return f"{item[0].name} (draw {item[1]})"
    if phase == "drawn":
        return f"{item[0].name}{'@' + item[1] if item[1] else ''}: hypothesis examples"
    return f"{item[0]} random programs"


def _run_in_order(matrix, work, jobs, enabled, on_report, first_failure) -> None:
    """The phases one after another in this process (the random programs' shares on ``jobs`` processes)."""
    shrink = not first_failure
    for phase in ("cases", "drawn"):
        items = [item for p, item in work if p == phase]
        if phase == "drawn" and not items:
            continue
        t0 = time.perf_counter()
        bar = _Progress(enabled, len(items))
        for i, item in enumerate(items):
            bar.update(i + 1, _label(phase, item))
            _run_one(matrix, phase, item, on_report, shrink)
            if first_failure and matrix.first_failure():
                return
        bar.done()
        matrix.timings[phase] = time.perf_counter() - t0
    shares = [item for p, item in work if p == "programs"]
    if shares:
        t0 = time.perf_counter()
        bar = _Progress(enabled, 1)
        bar.update(1, f"{sum(n for n, _ in shares)} random programs on {len(shares)} process(es)")
        if len(shares) == 1:
            results = [_search_share(*shares[0], shrink)]
        else:
            with _pool(len(shares)) as pool:
                results = list(pool.map(_search_share, *zip(*shares), [shrink] * len(shares)))
        bar.done()
        matrix.programs = _merged_programs(results, work, jobs)
        matrix.programs["seconds"] = matrix.timings["programs"] = time.perf_counter() - t0


def _run_in_processes(matrix, work, jobs, enabled, on_report) -> None:
    """Every task of the run on a pool of ``jobs`` processes, the longest first (the random programs'
    shares, then the drawn examples, then the cases); results are recorded in the order of ``work``, as
    :func:`_run_in_order` gives them, so the report does not depend on the scheduling.  Phase timings are
    then process seconds, summed over the pool."""
    matrix.in_processes = jobs
    index = {id(case): i for i, case in enumerate(PRIMITIVE_CASES)}
    keys = {"cases": lambda case, draw: (index[id(case)], draw), "drawn": lambda prim, edge: (prim.name, edge)}
    picklable = [(phase, keys[phase](*item) if phase in keys else item) for phase, item in work]
    submitted = sorted(range(len(work)), key=lambda i: ("programs", "drawn", "cases").index(work[i][0]))
    bar = _Progress(enabled, len(work))
    outcomes = {}
    with _pool(jobs) as pool:
        futures = {pool.submit(_task, *picklable[i], matrix.profile, matrix.kinds): i for i in submitted}
        for done, future in enumerate(concurrent.futures.as_completed(futures)):
            i = futures[future]
            outcomes[i] = future.result()
            bar.update(done + 1, f"{_label(*work[i])} (on {jobs} processes)")
            if on_report is not None:
                for run in outcomes[i]["runs"]:
                    on_report(run)
    bar.done()
    program_results = []
    for i, (phase, _) in enumerate(work):
        outcome = outcomes[i]
        for run in outcome["runs"]:
            _record(matrix, run)
        matrix.errors += outcome["errors"]
        matrix.drawn_failures += outcome["drawn_failures"]
        matrix.timings[phase] = matrix.timings.get(phase, 0.0) + outcome["seconds"]
        if outcome["programs"] is not None:
            program_results.append(outcome["programs"])
    if program_results:
        matrix.programs = _merged_programs(program_results, work, jobs)
        matrix.programs["seconds"] = matrix.timings["programs"]


def _pool(jobs):
    context = multiprocessing.get_context("spawn")  # JAX's threads do not survive a fork
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context)


def _task(phase, key, profile, kinds) -> dict:
    """:func:`_run_one` in a pool process, for a task given by picklable keys (a case by its index in
    ``PRIMITIVE_CASES``, a primitive by its name); returns what it added to a matrix of its own."""
    item = {
        "cases": lambda i, draw: (PRIMITIVE_CASES[i], draw),
        "drawn": lambda name, edge: (PRIMITIVE_BY_NAME[name], edge),
    }
    matrix = Matrix(profile=profile, kinds=kinds, primitives=())
    t0 = time.perf_counter()
    programs = _run_one(matrix, phase, item[phase](*key) if phase in item else key, None)
    return {
        "runs": matrix.runs,
        "errors": matrix.errors,
        "drawn_failures": matrix.drawn_failures,
        "programs": programs,
        "seconds": time.perf_counter() - t0,
    }


class _BuildFailures(logging.Handler):
    """The tape kernels' build failures logged while it is attached: ``fasttape.tape_kernels`` logs one and
    lets the interpreter answer, which would hide it from a run that checks the kernels (an error here)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if "could not be built" in message:
            self.messages.append(message)


def _check_case(matrix, case, draw_inputs, draw, rng, on_report, name=None) -> CaseRun:
    """``oracle.check`` of one case on inputs from ``draw_inputs()``, added to the matrix's cells for every
    primitive its tape uses."""
    t0 = time.perf_counter()
    name = name or case.name
    run = CaseRun(name, draw, (), None)
    quiet = np.errstate(all="ignore") if case.eager else contextlib.nullcontext()  # NaN and inf on purpose
    failures = _BuildFailures()
    logging.getLogger("fasttape").addHandler(failures)
    try:
        args = draw_inputs()
        with quiet:
            run.primitives = case_primitives(case, args)
            loss = scalar_loss(case, args, rng)
        kinds = tuple(k for k in matrix.kinds if not case.kinds or k in case.kinds)
        if PROFILES[matrix.profile]["nested"] == "first" and name not in FIRST_OF_NAME:
            kinds = tuple(k for k in kinds if k != "nested")
        run.report = check(
            loss, *args, namespace=True, kinds=kinds, fd=case.smooth, seed=draw, name=name, eager=case.eager
        )
    except Exception:
        run.error = traceback.format_exc()
        matrix.errors.append((name, draw, run.error))
    finally:
        logging.getLogger("fasttape").removeHandler(failures)
    if failures.messages and run.error is None:
        run.error = "\n".join(failures.messages)
        matrix.errors.append((name, draw, run.error))
    run.seconds = time.perf_counter() - t0
    _record(matrix, run)
    if on_report is not None:
        on_report(run)
    return run


def _record(matrix, run) -> None:
    """Add a case run to the matrix: to its runs, and its checks to the cells of the primitives it used."""
    matrix.runs.append(run)
    if run.report is not None:
        for result in run.report.results:
            k = result.kind.split(":")[0]  # "value:jnp" (native jax.numpy run) counts as value
            for p in run.primitives:
                if p in matrix.primitives:
                    matrix.cell(p, k).add(run.case, result)


def _check_drawn(matrix, prim, examples, on_report, shrink=True, edge=None) -> None:
    """``examples`` checks of ``prim`` on shapes and operands drawn by hypothesis
    (:func:`oracle.strategies.primitive_examples`; on one of its declared edges if ``edge``).  A failure
    is shrunk by hypothesis to its simplest example (unless ``shrink=False``), which the matrix keeps as
    the reproducer."""
    last = {}

    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,  # the same examples on every run: a report compares with the previous one
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        report_multiple_bugs=False,
        phases=tuple(p for p in hypothesis.Phase if shrink or p != hypothesis.Phase.shrink),
    )
    @hypothesis.given(primitive_examples(prim, edge))
    def drawn(example):
        rng = np.random.default_rng(0)
        name = f"{prim.name}~drawn" + (f"-{edge}" if edge else "")
        run = _check_case(matrix, example.case, lambda: example.args, 0, rng, on_report, name)
        last["example"], last["run"] = example, run
        assert run.report is not None and run.report.passed

    try:
        drawn()
    except Exception:  # hypothesis re-raises after replaying the shrunk example, which ran last
        run = last["run"]
        detail = str(run.report) if run.report is not None else run.error
        matrix.drawn_failures.append((prim.name, repr(last["example"]), detail))


def _search_share(n, seed, shrink=True) -> dict:
    """One process's share of the random-program search (module level, so a process pool can run it)."""
    stats = {}
    try:
        failure = search(n, seed=seed, stats=stats, shrink=shrink)
    except Exception:
        return {**stats, "error": traceback.format_exc(limit=5)}
    if failure is None:
        return {**stats, "failure": None}
    return {**stats, "failure": str(failure), "source": failure.source, "primitives": failure.primitives}


def _merged_programs(results, work, jobs) -> dict:
    """The random-program search's shares (:func:`_search_share`, seeds 0..jobs-1) as one outcome: how
    many programs ran, their derivative checks, and the shrunk failure if one failed."""
    n = sum(item[0] for phase, item in work if phase == "programs")
    merged = {"count": n, "jobs": jobs, "programs": 0, "checks": 0, "failure": None}
    for result in results:
        merged["programs"] += result.get("programs", 0)
        merged["checks"] += result.get("checks", 0)
        for key in ("error", "failure", "source", "primitives"):
            if result.get(key) is not None and merged.get(key) is None:
                merged[key] = result[key]
    return merged
