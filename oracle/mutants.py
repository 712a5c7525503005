"""``python -m oracle.mutants``: how many wrong rules the oracle catches on its own.

Every site of ``fasttape.faults`` (each primitive's family kernel for each sweep, the
formulas of the elementwise ones, and each of those again wrong only at the primitive's
declared edges) is broken in turn, and one profile of the oracle (``ci`` by default: what
CI runs) is run against it.  A fault is *killed* when a check fails,
*survives* when every check passes although the fault fired, and is *not reached* when no
check ran the broken rule (its hit count stayed 0): such a site says what the profile never
exercises, not what it would miss.  The kill rate is killed / (killed + survived).  For a
survivor, the ``thorough`` profile's checks of its primitive are run too, and the first that
exposes it is reported.

One instrumented build serves every fault (``FASTTAPE_FAULT=instrument``, compiled once
per process, never cached); JAX's results are computed in a first pass with no fault
planted, which must pass, and reused for every fault (``oracle.check.ReferenceMemo``);
a check whose tape lacks the broken primitive is skipped.  ``--jobs N`` splits the sites
over N processes, each with its own build and first pass.

    python -m oracle.mutants                           # every site, the ci profile
    python -m oracle.mutants --primitive max --json mutants.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass

ENVIRONMENT = {"FASTTAPE_FAULT": "instrument", "FASTTAPE_TIERS": "compiled"}
EXPOSING_PROFILE = "thorough"  # where a survivor's exposing input is looked for
STATUSES = ("killed", "survived", "not reached")


@dataclass
class Outcome:
    """One planted fault: its status, the first check that failed, how often it fired, and for a survivor
    the check of a larger profile that exposes it (if one does)."""

    site: str
    status: str
    killer: str = ""
    hits: int = 0
    seconds: float = 0.0
    exposed_by: str = ""


def _pass(profile, run_matrix):
    return run_matrix(profile, progress=False, jobs=1, first_failure=True).first_failure()


def run_sites(profile: str, sites: list[str], progress: bool = True) -> list[Outcome]:
    """Plant each of ``sites`` in turn in this process (instrumented) and run ``profile`` against it."""
    from fasttape import faults

    from .check import MEMO, ReferenceMemo
    from .run import run_matrix

    if not faults.INSTRUMENTED:
        raise RuntimeError("oracle.mutants needs the instrumented kernels: run it with FASTTAPE_FAULT=instrument")
    memo = MEMO[0] = ReferenceMemo()
    faults.clear()
    failure = _pass(profile, run_matrix)
    if failure:
        raise RuntimeError(f"the {profile} profile fails with no fault planted ({failure}): fix that first")
    outcomes = []
    for text in sites:
        site = faults.plant(text)
        memo.opcode = faults.STATE[0]
        t0 = time.perf_counter()
        killer = _pass(profile, run_matrix)
        hits = faults.hits()
        status = "killed" if killer else ("survived" if hits else "not reached")
        outcome = Outcome(str(site), status, killer, hits, time.perf_counter() - t0)
        if status == "survived":  # look for an input that exposes it: the primitive's cases, more draws
            matrix = run_matrix(EXPOSING_PROFILE, primitive=site.primitive, progress=False, first_failure=True)
            outcome.exposed_by = matrix.first_failure()
        outcomes.append(outcome)
        if progress:
            sys.stderr.write(f"[{len(outcomes)}/{len(sites)}] {site}: {status}\n")
    faults.clear()
    memo.opcode = None
    return outcomes


def _share(profile, sites):
    """One worker process's share (spawned with the instrumented environment)."""
    return [asdict(o) for o in run_sites(profile, sites)]


def run(profile="ci", sites=None, jobs=1) -> list[Outcome]:
    """Every site (or ``sites``) against ``profile``, in ``jobs`` processes."""
    from fasttape import faults

    sites = [str(s) for s in faults.sites()] if sites is None else list(sites)
    if jobs <= 1 and faults.INSTRUMENTED:
        return run_sites(profile, sites)
    jobs = max(1, min(jobs, len(sites)))
    os.environ.update(ENVIRONMENT)  # inherited by the spawned workers, read when they import fasttape
    shares = [sites[j::jobs] for j in range(jobs)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        results = list(pool.map(_share, [profile] * jobs, shares))
    by_site = {o["site"]: Outcome(**o) for share in results for o in share}
    return [by_site[s] for s in sites]


def kill_rate(outcomes) -> float:
    killed = sum(o.status == "killed" for o in outcomes)
    judged = killed + sum(o.status == "survived" for o in outcomes)
    return killed / judged if judged else float("nan")


def table(outcomes) -> str:
    """Rows: primitives (``max@ties``: its faults at an edge); columns: fault kinds.  K killed,
    S survived, . not reached, blank: no such rule."""
    from fasttape.faults import KINDS

    marks = {"killed": "K", "survived": "S", "not reached": "."}
    cells: dict[str, dict[str, str]] = {}
    for o in outcomes:
        site, _, edge = o.site.partition("@")
        name, kind = site.split(":")
        cells.setdefault(name + (f"@{edge}" if edge else ""), {})[kind] = marks[o.status]
    short = [k.replace("formula-", "f-") for k in KINDS]
    width = max(len(row) for row in cells)
    lines = [" " * width + " " + " ".join(f"{k:>9}" for k in short)]
    for row, marked in cells.items():
        lines.append(f"{row:<{width}} " + " ".join(f"{marked.get(k, ''):>9}" for k in KINDS))
    return "\n".join(lines)


def summary(outcomes, profile) -> str:
    from fasttape.primitives import PRIMITIVE_BY_NAME

    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    lines = [
        f"{len(outcomes)} planted faults against the {profile} profile: {counts['killed']} killed, "
        f"{counts['survived']} survived, {counts['not reached']} not reached; "
        f"kill rate {100 * kill_rate(outcomes):.1f}% (killed / (killed + survived))"
    ]
    for o in outcomes:
        if o.status == "survived":
            found = f"exposed by {o.exposed_by}" if o.exposed_by else f"no {EXPOSING_PROFILE} check exposes it either"
            lines.append(f"SURVIVED {o.site}: fired {o.hits} times, every check passed; {found}")
    unreached: dict[str, list[str]] = {}
    for o in outcomes:
        if o.status == "not reached":
            name, kind = o.site.split(":")
            unreached.setdefault(name, []).append(kind)
    for name, kinds in unreached.items():
        why = "no check ran these rules"
        if not PRIMITIVE_BY_NAME[name].differentiable:  # its output is never active: no sweep runs them
            why = "its derivative is zero wherever it exists, so its output is never active and no sweep runs them"
        lines.append(f"not reached {name}: {', '.join(kinds)} ({why})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oracle.mutants", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", help="the oracle profile run against each fault (default: ci)")
    parser.add_argument("--primitive", action="append", help="only this primitive's sites (repeatable)")
    parser.add_argument("--site", action="append", help="only this site, e.g. max:reverse (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes")
    parser.add_argument("--json", metavar="PATH", help="write every outcome to PATH")
    args = parser.parse_args(argv)
    if os.environ.get("FASTTAPE_FAULT", "") != "instrument" and args.jobs <= 1:
        # fasttape reads the switch when imported: start again with it set
        os.execve(sys.executable, [sys.executable, "-m", "oracle.mutants", *(argv or sys.argv[1:])],
                  {**os.environ, **ENVIRONMENT})  # fmt: skip
    from fasttape import faults

    from .run import PROFILES

    if args.profile not in PROFILES:
        parser.error(f"unknown profile {args.profile!r}; one of {sorted(PROFILES)}")
    sites = [str(s) for s in faults.sites()]
    if args.primitive:
        sites = [s for s in sites if s.split(":")[0] in args.primitive]
    if args.site:
        sites = [str(faults.parse(s)) for s in args.site]
    if not sites:
        parser.error("no site selected")
    start = time.perf_counter()
    outcomes = run(args.profile, sites, args.jobs)
    print(table(outcomes))
    print(summary(outcomes, args.profile))
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"profile": args.profile, "kill_rate": kill_rate(outcomes),
                       "outcomes": [asdict(o) for o in outcomes]}, fh, indent=2)  # fmt: skip
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
