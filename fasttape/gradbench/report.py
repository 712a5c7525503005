"""A Markdown table of GradBench runs: fasttape and JAX side by side, from the driver's logs.

Each log (``python -m fasttape.gradbench.driver -o LOG``, or ``gradbench run -o LOG``: the same format) is one
eval against one tool.  The table has one section per eval, and in it one row per input and tool, the tools of
an input next to each other::

    | input | tool | primal | gradient | gradient/primal | prepare | verdict |

- a function's time is the **mean of its ``evaluate`` timings**, in milliseconds: what GradBench's scoring
  reads (the mean per message);
- the ratio is the derivative's time over the primal's (the eval's second function over its first);
- ``prepare`` is the first call, timed apart and in no mean (fasttape: the tape's recording; the JAX tool of
  ``fasttape.gradbench.jax_tool``: tracing and compilation), one per function;
- the verdict is the eval's analysis: ``valid``, or per function ``invalid`` / ``failed`` with the first line of
  the error, ``not validated`` (no analysis came), ``no answer`` (the run ended there), ``not run`` (that tool's run had
  no such input).

A row is the eval's first function and those that follow it up to its next call, labelled by the evaluate
message's description (its input when it has none, as hello's); rows of the same label are matched across tools
(the k-th row of a label with the k-th), so runs of different inputs still line up.

    python -m fasttape.gradbench.report gradbench-results/            # every *.jsonl there
    python -m fasttape.gradbench.report a.jsonl b.jsonl --require fasttape
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Evaluation:
    """One evaluate message, its answer (``None``: none came) and the eval's analysis of it (``None``: none)."""

    function: str
    label: str
    response: dict | None = None
    analysis: dict | None = None

    def mean_ms(self, name: str = "evaluate") -> float | None:
        """The mean of the answer's timings called ``name``, in milliseconds (``None`` when there are none)."""
        ns = [t["nanoseconds"] for t in (self.response or {}).get("timings") or [] if t.get("name") == name]
        return sum(ns) / len(ns) / 1e6 if ns else None

    def verdict(self) -> str | None:
        """``None`` when valid; else what went wrong, in a few words."""
        if self.response is None:
            return "no answer"
        if not self.response.get("success"):
            return f"failed: {_first_line(self.response.get('error'))}"
        if self.analysis is None:
            return "not validated"
        if not self.analysis.get("valid"):
            return f"invalid: {_first_line(self.analysis.get('error'))}"
        return None


@dataclass
class Session:
    """One log: an eval against a tool."""

    path: Path
    eval: str = "?"
    tool: str = "?"
    define: dict | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    unanswered: int | None = None  # the id of the last message when it has no answer in the log
    unreadable: int = 0  # lines that are not JSON

    def outcome(self) -> str:
        """The run's outcome as far as its log tells: the driver's, but ``error`` and ``timeout`` both read as
        ``incomplete`` (a message without an answer), and ``not validated`` when an output had no analysis (the
        eval stopped: the driver says ``error``)."""
        if self.unreadable or self.unanswered is not None:
            return "incomplete"
        if self.define is not None and not self.define.get("success"):
            return "undefined"
        if any(not (e.response or {}).get("success") for e in self.evaluations):
            return "failure"
        if any(e.analysis is not None and not e.analysis.get("valid") for e in self.evaluations):
            return "invalid"
        return "not validated" if any(e.analysis is None for e in self.evaluations) else "success"

    def rows(self) -> list[list[Evaluation]]:
        """The evaluations in rows: each row starts at a call of the eval's first function."""
        rows: list[list[Evaluation]] = []
        for evaluation in self.evaluations:
            if not rows or evaluation.function == self.evaluations[0].function:
                rows.append([])
            rows[-1].append(evaluation)
        return rows


def _first_line(text) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else "(no error given)"


def _label(message: dict) -> str:
    if message.get("description") is not None:
        return str(message["description"])
    return json.dumps(message.get("input"))[:24]


def read_log(path) -> Session:
    """The session of one log file (JSON lines of ``message`` and ``response`` entries)."""
    session = Session(Path(path))
    by_id: dict[int, Evaluation] = {}
    last: dict | None = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            session.unreadable += 1
            continue
        if "message" in entry:
            last = entry["message"]
            _take_message(session, last, by_id)
        elif "response" in entry and last is not None:
            _take_response(session, last, entry["response"], by_id)
            last = None
    session.unanswered = last.get("id") if isinstance(last, dict) else None
    return session


def _take_message(session: Session, message: dict, by_id: dict) -> None:
    kind = message.get("kind")
    if kind == "start" and message.get("eval"):
        session.eval = message["eval"]
    elif kind == "define" and session.eval == "?":
        session.eval = str(message.get("module"))
    elif kind == "evaluate":
        evaluation = Evaluation(str(message.get("function")), _label(message))
        session.evaluations.append(evaluation)
        by_id[message.get("id")] = evaluation
    elif kind == "analysis" and message.get("of") in by_id:
        by_id[message["of"]].analysis = message


def _take_response(session: Session, message: dict, response: dict, by_id: dict) -> None:
    kind = message.get("kind")
    if kind == "start":
        session.tool = str(response.get("tool") or session.path.stem)
    elif kind == "define":
        session.define = response
    elif kind == "evaluate":
        by_id[message.get("id")].response = response


def read_logs(paths) -> list[Session]:
    """The sessions of the given log files and of every ``*.jsonl`` in the given directories."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.glob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no log at {path}: give driver logs (*.jsonl) or directories holding them")
    return [read_log(f) for f in files]


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    for bound, digits in ((100, 0), (10, 1), (1, 2)):
        if value >= bound:
            return f"{value:.{digits}f}"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _functions(sessions: list[Session]) -> list[str]:
    names: list[str] = []
    for session in sessions:
        for evaluation in session.evaluations:
            if evaluation.function not in names:
                names.append(evaluation.function)
    return names


def _row(label: str, session: Session, row: list[Evaluation] | None, functions: list[str]) -> str:
    """One Markdown row: an input as one tool ran it."""
    calls = {e.function: e for e in row or []}
    means = [calls[f].mean_ms() if f in calls else None for f in functions]
    cells = [label, session.tool, *(_ms(m) for m in means)]
    if len(functions) == 2:
        cells.append(f"{means[1] / means[0]:.2f}" if None not in means and means[0] > 0 else "—")
    cells.append(" / ".join(_ms(calls[f].mean_ms("prepare")) if f in calls else "—" for f in functions))
    cells.append(_verdict(session, calls, functions))
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _verdict(session: Session, calls: dict, functions: list[str]) -> str:
    if session.outcome() == "undefined":
        return f"not defined: {_first_line((session.define or {}).get('error'))}"
    if not calls:
        return "not run"
    verdicts = {f: calls[f].verdict() if f in calls else "not run" for f in functions}
    if all(v is None for v in verdicts.values()):
        return "valid"
    if all(v == "not validated" for v in verdicts.values()):
        return "not validated"
    return "; ".join(f"{f}: {v}" for f, v in verdicts.items() if v is not None)


def _keyed(rows: list[list[Evaluation]]) -> dict[tuple[str, int], list[Evaluation]]:
    """The rows by their label and how many rows before had that label: runs of different inputs still match."""
    keyed: dict[tuple[str, int], list[Evaluation]] = {}
    seen: dict[str, int] = {}
    for row in rows:
        label = row[0].label
        seen[label] = seen.get(label, 0) + 1
        keyed[(label, seen[label])] = row
    return keyed


def _header(functions: list[str]) -> list[str]:
    columns = ["input", "tool", *(f"{f} (ms)" for f in functions)]
    if len(functions) == 2:
        columns.append(f"{functions[1]}/{functions[0]}")
    columns += [f"prepare {' / '.join(functions)} (ms)", "verdict"]
    return ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]


def _total(session: Session, functions: list[str]) -> str | None:
    """GradBench's score of the session per function: the sum over its messages of the mean evaluate time."""
    sums = []
    for function in functions:
        means = [e.mean_ms() for e in session.evaluations if e.function == function]
        sums.append(_ms(sum(means)) if means and None not in means else "—")
    return f"{session.tool}: " + ", ".join(f"{f} {s} ms" for f, s in zip(functions, sums))


def eval_section(name: str, sessions: list[Session]) -> list[str]:
    """The Markdown lines of one eval: its tools' outcomes, then the table."""
    lines = [f"## {name}", ""]
    outcomes = []
    for s in sessions:
        outcome = s.outcome()
        if outcome == "undefined":
            outcome += f" ({_first_line((s.define or {}).get('error'))})"
        outcomes.append(f"{s.tool}: {outcome} (`{s.path.name}`)")
    lines += ["Outcomes: " + "; ".join(outcomes) + ".", ""]
    functions = _functions(sessions)
    if not functions:
        return lines + ["No evaluation ran.", ""]
    lines += _header(functions)
    tables = [_keyed(s.rows()) for s in sessions]
    keys = list(dict.fromkeys(key for table in tables for key in table))
    for session in sessions:
        if not session.evaluations:  # an undefined tool: one row saying so
            lines.append(_row(keys[0][0] if keys else "—", session, None, functions))
    for key in keys:
        for session, table in zip(sessions, tables):
            if session.evaluations:
                lines.append(_row(key[0], session, table.get(key), functions))
    totals = [t for t in (_total(s, functions) for s in sessions if s.evaluations) if t]
    return lines + ["", "Sums of the means (GradBench's score): " + "; ".join(totals) + ".", ""]


HEADER = """# GradBench: fasttape and JAX

Times in milliseconds. A function's time is the **mean of its `evaluate` timings** for that input, as GradBench's
scoring reads them; `prepare` is the first call, timed apart and in no mean (fasttape: recording the tapes,
then the calls that make them hot and the build of their own kernels; JAX: tracing and compiling). The ratio is
the derivative's time over the primal's. The verdict is the eval's analysis of the outputs (checked against
GradBench's C++ reference, except hello)."""


def markdown(sessions: list[Session]) -> str:
    """The whole report: one section per eval (in the order of the logs), the tools of each input adjacent."""
    by_eval: dict[str, list[Session]] = {}
    for session in sessions:
        by_eval.setdefault(session.eval, []).append(session)
    for group in by_eval.values():
        names = [s.tool for s in group]
        for session in group:
            if names.count(session.tool) > 1:
                session.tool = f"{session.tool} ({session.path.stem})"
    lines = [HEADER, ""]
    for name, group in by_eval.items():
        lines += eval_section(name, sorted(group, key=lambda s: (s.tool != "fasttape", s.tool)))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fasttape.gradbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", help="driver logs (*.jsonl), or directories holding them")
    parser.add_argument(
        "--require", metavar="TOOL", action="append", default=[],
        help="exit with status 1 unless every run of TOOL succeeded, each output valid (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sessions = read_logs(args.logs)
    if not sessions:
        parser.error(f"no logs (*.jsonl) in {' '.join(args.logs)}")
    print(markdown(sessions))
    bad = [s for s in sessions if s.tool in args.require and s.outcome() != "success"]
    for session in bad:
        print(f"{session.tool} on {session.eval}: {session.outcome()} ({session.path})", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
