"""GradBench's intermediary without Docker or Rust: run an eval against a tool, log their exchange, judge it.

GradBench's own runner is the Rust CLI ``gradbench run --eval CMD --tool CMD [-o LOG] [--timeout SECS]``.  This
module plays the same part in plain Python, so that the suite can be run where there is no Rust toolchain::

    python -m fasttape.gradbench.driver --eval "python python/gradbench/gradbench/evals/lse/run.py" \\
        --tool "python -m fasttape.gradbench" --cwd "$GRADBENCH_DIR" -o lse-fasttape.jsonl --timeout 600

Each command is split as a shell would (``shlex``) and started as a process of its own group, with its stdin and
stdout piped and its stderr inherited.  For every line the eval writes, the driver logs it, checks that it is a
message (a JSON object of kind ``start``, ``define``, ``evaluate`` or ``analysis`` with that kind's fields), writes
it to the tool, reads exactly one line back (within ``--timeout`` seconds, else the tool's process group is
killed), checks that it is the answer that kind wants, logs it and writes it to the eval.

The log has the CLI's format, one JSON object a line, ``elapsed`` counted from the driver's start::

    { "elapsed": { "nanoseconds": 1234 }, "message": <the eval's line> }
    { "elapsed": { "nanoseconds": 5678 }, "response": <the tool's line> }

The outcome, and the exit status, are the CLI's: 0 ``success``, 1 ``error`` (a line that is not what the protocol
wants: not JSON, NaN, a float of nanoseconds, ``success`` true with an error or without an output; a process that
cannot start), 2 ``undefined`` (a ``define`` answered with ``success`` false), 3 ``failure`` (an ``evaluate``
answered with ``success`` false), 4 ``invalid`` (an ``analysis`` with ``valid`` false), 5 ``timeout``, 6
``interrupt`` (Ctrl-C: both processes are killed); undefined before failure before invalid.  One difference from
the CLI: an eval that exits with a non-zero status (it crashed, e.g. its reference tool is not built) makes the
outcome ``error``, where the CLI would report the counts alone.

From Python: ``run(eval_cmd, tool_cmd, log_path=None, cwd=None, timeout=None)`` returns the outcome's name, and
``EXIT_CODES`` maps it to the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

EXIT_CODES = {"success": 0, "error": 1, "undefined": 2, "failure": 3, "invalid": 4, "timeout": 5, "interrupt": 6}

# A message's fields: name -> (the types it may have, whether it is required).  ``None`` stands for JSON null,
# which the CLI reads as a missing optional field.
_INT, _STR, _BOOL, _NAME = (int,), (str, type(None)), (bool,), (str,)
MESSAGE_FIELDS = {
    "start": {"id": (_INT, True), "eval": (_STR, False)},
    "define": {"id": (_INT, True), "module": (_NAME, True)},
    "evaluate": {"id": (_INT, True), "module": (_NAME, True), "function": (_NAME, True), "description": (_STR, False)},
    "analysis": {"id": (_INT, True), "of": (_INT, True), "valid": (_BOOL, True), "error": (_STR, False)},
}
RESPONSE_FIELDS = {
    "start": {"id": (_INT, True), "tool": (_STR, False)},
    "define": {"id": (_INT, True), "success": (_BOOL, True), "error": (_STR, False)},
    "evaluate": {"id": (_INT, True), "success": (_BOOL, True), "error": (_STR, False)},
    "analysis": {"id": (_INT, True)},
}


class ProtocolError(ValueError):
    """A line that is not what GradBench's protocol wants at that point: the outcome is ``error``."""


class ToolTimeout(TimeoutError):
    """The tool did not answer within the timeout: the outcome is ``timeout``."""


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON (GradBench's runner rejects NaN and Infinity)")


def parse_line(line: str, who: str) -> dict:
    """A line of ``who`` (the eval or the tool) as a JSON object; ``ProtocolError`` naming the problem."""
    try:
        value = json.loads(line, parse_constant=_reject_constant)
    except ValueError as e:
        raise ProtocolError(f"invalid JSON from {who} ({e}): {line[:200]!r}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"invalid JSON from {who}: a JSON object was expected, got {line[:200]!r}")
    return value


def _check_fields(value: dict, fields: dict, what: str) -> None:
    for name, (types, required) in fields.items():
        if name not in value:
            if required:
                raise ProtocolError(f"{what} lacks its field {name!r}: {json.dumps(value)[:200]}")
            continue
        field = value[name]
        if (isinstance(field, bool) and bool not in types) or not isinstance(field, types):
            raise ProtocolError(f"{what}'s field {name!r} has the wrong type ({type(field).__name__}): {field!r:.200}")


def check_message(message: dict) -> str:
    """The kind of an eval's message, after checking its fields as the CLI does; ``ProtocolError`` if wrong."""
    kind = message.get("kind")
    if kind not in MESSAGE_FIELDS:
        known = ", ".join(MESSAGE_FIELDS)
        raise ProtocolError(f"invalid JSON from eval: unknown message kind {kind!r} (known: {known})")
    _check_fields(message, MESSAGE_FIELDS[kind], f"the eval's {kind} message")
    return kind


def _check_timings(timings, what: str) -> None:
    if timings is None:
        return
    if not isinstance(timings, list):
        raise ProtocolError(f"{what}'s timings should be a list, got {timings!r:.200}")
    for timing in timings:
        if not isinstance(timing, dict) or not isinstance(timing.get("name"), str):
            raise ProtocolError(f"{what} has a timing that is not {{name, nanoseconds}}: {timing!r:.200}")
        ns = timing.get("nanoseconds")
        if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
            raise ProtocolError(f"{what} has a timing whose nanoseconds is not a non-negative integer: {ns!r}")


def check_response(kind: str, response: dict) -> None:
    """Check the tool's answer to a message of ``kind`` as the CLI does; ``ProtocolError`` if it is wrong."""
    what = f"the tool's answer to {kind}"
    _check_fields(response, RESPONSE_FIELDS[kind], what)
    if kind in ("define", "evaluate"):
        _check_timings(response.get("timings"), what)
        if response["success"] and response.get("error") is not None:
            raise ProtocolError(f"tool reported success but gave an error: {response['error']!r:.300}")
    if kind == "evaluate" and response["success"] and "output" not in response:
        raise ProtocolError("tool reported success but gave no output")


def split_command(command) -> list[str]:
    """A command line as arguments: a string is split as a shell would; a list is taken as it is."""
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not args:
        raise ValueError(f"empty command {command!r}: give the program to run and its arguments")
    return args


def _start(command, cwd, env) -> subprocess.Popen:
    args = split_command(command)
    try:
        return subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True
        )
    except OSError as e:
        raise ProtocolError(f"cannot start {args[0]!r} (cwd {cwd or os.getcwd()}): {e}") from e


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL the process's group (it leads one of its own), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


class _LineReader:
    """The tool's stdout read line by line on a thread, so that a line can be awaited with a timeout."""

    def __init__(self, stream):
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in iter(stream.readline, b""):
            self._lines.put(line)
        self._lines.put(b"")  # end of file

    def next(self, timeout: float | None) -> bytes:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ToolTimeout(f"the tool did not answer within {timeout:g} s") from None


def _write_async(stream, data: bytes) -> None:
    """Write to a pipe on a thread: a tool that reads nothing cannot block the driver past its timeout."""

    def write():
        try:
            stream.write(data)
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the tool is gone: its missing answer says so

    threading.Thread(target=write, daemon=True).start()


class _Progress:
    """One line per define and evaluate on ``out``, like the CLI's: id, kind, name, input, time, verdict."""

    def __init__(self, out):
        self.out = out
        self.pending: tuple[int, str] | None = None  # an evaluate's line, awaiting its analysis

    def _emit(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def flush(self, mark: str = "") -> None:
        if self.pending is not None:
            self._emit(self.pending[1] + mark)
            self.pending = None

    def message(self, message: dict) -> None:
        kind = message["kind"]
        if kind == "analysis" and self.pending is not None and self.pending[0] == message["of"]:
            self.flush(" ok" if message["valid"] else " INVALID")
            if not message["valid"] and message.get("error"):
                self._emit(str(message["error"]).rstrip())
            return
        self.flush()

    def response(self, message: dict, response: dict, nanoseconds: int) -> None:
        kind, id_ = message["kind"], message["id"]
        if kind == "start":
            self._emit(f"[{id_}] start {message.get('eval') or ''} ({response.get('tool') or '?'})")
        elif kind == "define":
            verdict = "ok" if response["success"] else f"UNDEFINED\n{response.get('error') or ''}".rstrip()
            self._emit(f"[{id_}] def   {message['module']:15} {_ms(nanoseconds)} {verdict}")
        elif kind == "evaluate":
            name = f"{message['module']}::{message['function']}"
            line = f"[{id_}] eval  {name:24} {_describe(message):16} {_ms(nanoseconds)}{_timings(response)}"
            if response["success"]:
                self.pending = (id_, line)
            else:
                self._emit(f"{line} FAILED\n{response.get('error') or ''}".rstrip())


def _ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:10.3f} ms"


def _describe(message: dict) -> str:
    description = message.get("description")
    return description if description is not None else json.dumps(message.get("input"))[:16]


def _timings(response: dict) -> str:
    """The mean of each named timing and how many there are: ``~ 1.234 ms evaluate x 5, ...``."""
    groups: dict[str, list[int]] = {}
    for timing in response.get("timings") or []:
        groups.setdefault(timing["name"], []).append(timing["nanoseconds"])
    parts = [
        f"{sum(ns) / len(ns) / 1e6:.3f} ms {name}" + f" x {len(ns)}" * (len(ns) > 1) for name, ns in groups.items()
    ]
    return " ~ " + ", ".join(parts) if parts else ""


def _text(line: bytes, who: str) -> str:
    try:
        return line.decode()
    except UnicodeDecodeError as e:
        raise ProtocolError(f"invalid JSON from {who}: the line is not UTF-8 ({e})") from None


class _Session:
    """One eval against one tool: the forwarding loop and its counts."""

    def __init__(self, eval_process, tool_process, log, timeout, progress):
        self.eval, self.tool = eval_process, tool_process
        self.tool_lines = _LineReader(tool_process.stdout)
        self.log, self.timeout, self.progress = log, timeout, progress
        self.start = time.perf_counter_ns()
        self.undefined = self.failure = self.invalid = 0

    def _log(self, key: str, line: bytes) -> None:
        if self.log is not None:
            elapsed = time.perf_counter_ns() - self.start
            text = line.decode(errors="replace").strip()
            self.log.write(f'{{ "elapsed": {{ "nanoseconds": {elapsed} }}, "{key}": {text} }}\n')
            self.log.flush()

    def loop(self) -> str:
        for line in iter(self.eval.stdout.readline, b""):
            self._log("message", line)
            message = parse_line(_text(line, "eval"), "eval")
            kind = check_message(message)
            self.progress.message(message)
            if kind == "analysis" and not message["valid"]:
                self.invalid += 1
            sent = time.perf_counter_ns()
            _write_async(self.tool.stdin, line if line.endswith(b"\n") else line + b"\n")
            answer = self.tool_lines.next(self.timeout)
            if not answer:
                raise ProtocolError(f"the tool closed its stdout (exit status {self.tool.poll()}) instead of answering")
            response = parse_line(_text(answer, "tool"), "tool")
            check_response(kind, response)
            self._count(kind, response)
            self.progress.response(message, response, time.perf_counter_ns() - sent)
            self._log("response", answer)
            try:
                self.eval.stdin.write(answer if answer.endswith(b"\n") else answer + b"\n")
                self.eval.stdin.flush()
            except (BrokenPipeError, OSError):
                break  # the eval is gone: its exit status tells why
        self.progress.flush()
        if self.undefined:
            return "undefined"
        if self.failure:
            return "failure"
        return "invalid" if self.invalid else "success"

    def _count(self, kind: str, response: dict) -> None:
        if kind == "define" and not response["success"]:
            self.undefined += 1
        elif kind == "evaluate" and not response["success"]:
            self.failure += 1


def _close(stream) -> None:
    try:
        stream.close()
    except (BrokenPipeError, OSError):
        pass


def _finish(process: subprocess.Popen, *, grace: float = 10.0, close_stdout: bool = False) -> int:
    """Close the process's stdin (its end of the session) and wait for it; killed if it lingers."""
    _close(process.stdin)
    if close_stdout:
        _close(process.stdout)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _kill(process)
        return process.returncode


def run(eval_cmd, tool_cmd, log_path=None, cwd=None, timeout=None, *, env=None, out=None) -> str:
    """Run the eval against the tool, as ``gradbench run`` does; the outcome's name (a key of ``EXIT_CODES``).

    ``eval_cmd`` and ``tool_cmd`` are command lines (split as a shell would) or argument lists, both started in
    ``cwd`` with ``env``; ``log_path`` receives the log (none when ``None``); ``timeout`` bounds, in seconds, the
    wait for each answer of the tool; ``out`` (a text stream, e.g. ``sys.stdout``) receives a progress line per
    define and evaluate, as the CLI prints them (``None``, the default: silent).
    """
    progress = _Progress(out)
    log = open(log_path, "w", encoding="utf-8") if log_path is not None else None
    processes: list[subprocess.Popen] = []
    outcome = None
    try:
        processes.append(_start(eval_cmd, cwd, env))
        processes.append(_start(tool_cmd, cwd, env))
        outcome = _Session(processes[0], processes[1], log, timeout, progress).loop()
    except ProtocolError as e:
        progress.flush()
        print(f"gradbench driver: {e}", file=sys.stderr)
        outcome = "error"
    except ToolTimeout as e:
        progress.flush(" TIMEOUT")
        print(f"gradbench driver: {e}; its process group is killed", file=sys.stderr)
        outcome = "timeout"
    except KeyboardInterrupt:
        for process in processes:
            _kill(process)
        outcome = "interrupt"
        print("gradbench driver: interrupted; the eval and the tool are killed", file=sys.stderr)
    finally:
        if log is not None:
            log.close()
        if outcome is None:  # an unexpected exception on its way out: no process is left behind
            for process in processes:
                _kill(process)
    return _settle(processes, outcome)


def _settle(processes, outcome: str) -> str:
    """Wait for both processes to end; an eval that crashed turns a success into an error.

    The tool's stdin is closed, which ends a well-behaved tool; after an error or a timeout its process group is
    killed instead (a tool that stopped reading could block the close).  Then the eval's stdin is closed (it reads
    the end of the session) and so is its stdout (a write it was blocked in fails)."""
    if len(processes) == 2:
        if outcome in ("success", "undefined", "failure", "invalid"):
            _finish(processes[1])
        else:
            _kill(processes[1])
            _close(processes[1].stdin)
    statuses = [_finish(processes[0], close_stdout=True)] if processes else []
    if outcome in ("success", "undefined", "failure", "invalid") and statuses and statuses[0] != 0:
        print(f"gradbench driver: the eval exited with status {statuses[0]}", file=sys.stderr)
        return "error"
    return outcome


def main(argv=None) -> int:
    """``python -m fasttape.gradbench.driver``: the exit status is the outcome's (``EXIT_CODES``)."""
    parser = argparse.ArgumentParser(
        prog="python -m fasttape.gradbench.driver",
        description="Run a GradBench eval against a tool, as `gradbench run` does, without Docker or Rust.",
    )
    parser.add_argument("--eval", required=True, help='the eval\'s command, e.g. "python python/gradbench/...'
                        '/evals/lse/run.py" (run from --cwd)')  # fmt: skip
    parser.add_argument("--tool", required=True, help='the tool\'s command, e.g. "python -m fasttape.gradbench"')
    parser.add_argument("-o", "--output", type=Path, help="write the log (JSON lines) to this file")
    parser.add_argument("--timeout", type=float, help="seconds to wait for each answer of the tool (default: none)")
    parser.add_argument("--cwd", help="the directory both commands run in (evals want GradBench's repository root)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"--timeout should be a positive number of seconds, got {args.timeout}")
    if args.cwd is not None and not os.path.isdir(args.cwd):
        parser.error(f"--cwd {args.cwd!r} is not a directory")
    outcome = run(args.eval, args.tool, args.output, args.cwd, args.timeout, out=None if args.quiet else sys.stdout)
    print(f"outcome: {outcome}", file=sys.stderr)
    return EXIT_CODES[outcome]


if __name__ == "__main__":
    sys.exit(main())
