"""GradBench without GradBench: the driver (fasttape.gradbench.driver) between a stand-in eval and fasttape's tool
or a scripted tool, the report built from its logs, and the JAX tool's waiting timer on a stand-in checkout.

The stand-in eval (``FAKE_EVAL``, written to tmp_path) sends a plan of messages, records every line it sent and
every answer it got back, and validates lse's outputs itself (sending the ``analysis``), so that the driver's
forwarding, its log and its outcome can be checked against what really went through.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from fasttape.gradbench import driver, jax_tool, report

FAKE_EVAL = r'''
"""A stand-in for a GradBench eval: the plan's messages, one at a time; lse outputs checked here."""
import json, math, sys

steps = json.load(open(sys.argv[1]))
record = open(sys.argv[2], "w")


def exchange(message):
    line = json.dumps(message)
    print(line, flush=True)
    answer = sys.stdin.readline()
    record.write(json.dumps({"sent": line, "answer": answer}) + "\n")
    record.flush()
    return answer


for step in steps:
    answer = exchange(step["send"])
    if not answer:
        break  # the session ended
    check = step.get("check")
    if check and json.loads(answer).get("success"):
        x, output = step["send"]["input"]["x"], json.loads(answer)["output"]
        top = max(x)
        lse = top + math.log(sum(math.exp(v - top) for v in x)) + (1.0 if check == "wrong" else 0.0)
        expected = lse if step["send"]["function"] == "primal" else [math.exp(v - lse) for v in x]
        if isinstance(expected, list):
            close = len(expected) == len(output) and all(abs(a - b) <= 1e-9 for a, b in zip(expected, output))
        else:
            close = abs(expected - output) <= 1e-9
        analysis = {"id": step["send"]["id"] + 1, "kind": "analysis", "of": step["send"]["id"], "valid": close}
        if not close:
            analysis["error"] = f"expected {expected}\nbut got {output}"
        if not exchange(analysis):
            break
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
'''

FAKE_TOOL = r'''
"""A scripted tool: answers start and define, then answers evaluate as its mode says."""
import json, os, subprocess, sys, time

mode = sys.argv[1]
EVALUATE = {
    "ok": '{"id": ID, "success": true, "output": 1.5, "timings": [{"name": "evaluate", "nanoseconds": 7}]}',
    "nan": '{"id": ID, "success": true, "output": NaN, "timings": []}',
    "float-ns": '{"id": ID, "success": true, "output": 1.5, "timings": [{"name": "evaluate", "nanoseconds": 7.0}]}',
    "success-with-error": '{"id": ID, "success": true, "output": 1.5, "error": "but something broke"}',
    "no-output": '{"id": ID, "success": true, "timings": []}',
    "garbage": 'Loading the model... done',
}
for line in sys.stdin:
    message = json.loads(line)
    if message["kind"] == "evaluate":
        if mode == "hang":
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            with open(sys.argv[2], "w") as f:
                f.write(f"{os.getpid()} {child.pid}")
            time.sleep(600)
        print(EVALUATE[mode].replace("ID", str(message["id"])), flush=True)
    elif message["kind"] == "define":
        print(json.dumps({"id": message["id"], "success": True}), flush=True)
    else:
        print(json.dumps({"id": message["id"]}), flush=True)
'''

LOG_LINE = re.compile(r'^\{ "elapsed": \{ "nanoseconds": (\d+) \}, "(message|response)": (.*) \}$')
X = [0.25, -1.5, 2.0, 0.5, 3.25]
FASTTAPE = [sys.executable, "-m", "fasttape.gradbench"]


def start(id_=0, eval_="lse"):
    return {"send": {"id": id_, "kind": "start", "eval": eval_}}


def define(id_=1, module="lse"):
    return {"send": {"id": id_, "kind": "define", "module": module}}


def evaluate(id_, function, x=X, check="right", description="n=5"):
    data = {"x": x, "min_runs": 2, "min_seconds": 0}
    message = {"id": id_, "kind": "evaluate", "module": "lse", "function": function, "input": data}
    return {"send": message | {"description": description}, "check": check}


def play(tmp_path, steps, tool, *, timeout=None, eval_status=0, name="run"):
    """The driver between the stand-in eval (playing ``steps``) and ``tool``: (outcome, log lines, record)."""
    (tmp_path / "eval.py").write_text(FAKE_EVAL)
    plan, record, log = tmp_path / f"{name}.plan.json", tmp_path / f"{name}.record.jsonl", tmp_path / f"{name}.jsonl"
    plan.write_text(json.dumps(steps))
    eval_cmd = [sys.executable, tmp_path / "eval.py", plan, record, str(eval_status)]
    outcome = driver.run(eval_cmd, tool, log, cwd=tmp_path, timeout=timeout, out=None)
    recorded = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return outcome, log.read_text().splitlines(), recorded


def fake_tool(tmp_path, mode, *args):
    (tmp_path / "tool.py").write_text(FAKE_TOOL)
    return [sys.executable, str(tmp_path / "tool.py"), mode, *map(str, args)]


def softmax(x):
    top = max(x)
    total = sum(math.exp(v - top) for v in x)
    return [math.exp(v - top) / total for v in x]


@pytest.fixture(scope="module")
def lse_session(tmp_path_factory):
    """One whole lse session with fasttape's tool (the tool's start-up, ~2 s, paid once)."""
    tmp_path = tmp_path_factory.mktemp("lse")
    steps = [start(), define(), evaluate(2, "primal"), evaluate(4, "gradient")]
    return (tmp_path, *play(tmp_path, steps, FASTTAPE, timeout=60))


def test_a_session_through_the_driver_is_logged_in_the_cli_format_and_forwarded_verbatim(lse_session):
    _, outcome, log, recorded = lse_session
    assert outcome == "success"
    entries = [LOG_LINE.match(line) for line in log]
    assert all(entries), log
    # messages and responses alternate; each is the very line the eval sent, then the very line it got back
    assert [m.group(2) for m in entries] == ["message", "response"] * len(recorded)
    assert [m.group(3) for m in entries[0::2]] == [r["sent"] for r in recorded]
    assert [m.group(3) for m in entries[1::2]] == [r["answer"].strip() for r in recorded]
    elapsed = [int(m.group(1)) for m in entries]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    answers = [json.loads(r["answer"]) for r in recorded]
    assert [a["id"] for a in answers] == [0, 1, 2, 3, 4, 5]
    assert answers[0]["tool"] == "fasttape" and answers[1]["success"] is True
    top = max(X)
    assert answers[2]["output"] == pytest.approx(top + math.log(sum(math.exp(v - top) for v in X)), rel=1e-12)
    assert answers[4]["output"] == pytest.approx(softmax(X), rel=1e-12)
    assert [t["name"] for t in answers[2]["timings"]] == ["prepare", "evaluate", "evaluate"]
    # the stand-in eval validated both outputs itself: its analyses went through
    assert [json.loads(r["sent"]).get("valid") for r in recorded[3::2]] == [True, True]


def test_the_report_reads_the_log_means_prepare_and_verdicts(lse_session, tmp_path):
    lse_dir, _, log, _ = lse_session
    jax_log = tmp_path / "lse-jax.jsonl"
    jax_log.write_text(
        '{ "elapsed": { "nanoseconds": 1 }, "message": {"id": 0, "kind": "start", "eval": "lse"} }\n'
        '{ "elapsed": { "nanoseconds": 2 }, "response": {"id": 0, "tool": "jax"} }\n'
        '{ "elapsed": { "nanoseconds": 3 }, "message": {"id": 1, "kind": "define", "module": "lse"} }\n'
        '{ "elapsed": { "nanoseconds": 4 }, "response": {"id": 1, "success": false, "error": "no lse\\nat all"} }\n'
    )
    sessions = report.read_logs([lse_dir / "run.jsonl", jax_log])
    assert [s.outcome() for s in sessions] == ["success", "undefined"]
    text = report.markdown(sessions)
    responses = [json.loads(LOG_LINE.match(line).group(3)) for line in log[1::2]]
    primal, gradient = responses[2]["timings"], responses[4]["timings"]

    def mean(timings, name="evaluate"):
        ns = [t["nanoseconds"] for t in timings if t["name"] == name]
        return sum(ns) / len(ns) / 1e6

    (row,) = [line for line in text.splitlines() if line.startswith("| n=5 | fasttape |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == report._ms(mean(primal)) and cells[3] == report._ms(mean(gradient))
    assert cells[4] == f"{mean(gradient) / mean(primal):.2f}"
    assert cells[5] == f"{report._ms(mean(primal, 'prepare'))} / {report._ms(mean(gradient, 'prepare'))}"
    assert cells[6] == "valid"
    (jax_row,) = [line for line in text.splitlines() if "| jax |" in line]
    assert jax_row.endswith("| not defined: no lse |")
    assert "mean of its `evaluate` timings" in text


@pytest.mark.parametrize(
    ("steps", "outcome"),
    [
        ([start(), define(module="nosuch")], "undefined"),
        ([start(), define(), evaluate(2, "primal", x="not numbers", check=None)], "failure"),
        ([start(), define(), evaluate(2, "primal"), evaluate(4, "gradient", check="wrong")], "invalid"),
        # undefined before failure before invalid
        ([start(), define(), evaluate(2, "primal", check="wrong"), evaluate(4, "nosuch", check=None)], "failure"),
        ([start(), define(), evaluate(2, "primal", check="wrong"), define(4, "nosuch")], "undefined"),
    ],
    ids=["undefined", "failure", "invalid", "failure-over-invalid", "undefined-over-invalid"],
)
def test_outcomes_of_fasttape_s_tool(tmp_path, steps, outcome):
    got, log, recorded = play(tmp_path, steps, FASTTAPE, timeout=60)
    assert got == outcome
    assert len(log) == 2 * len(recorded)  # every message answered, every answer logged
    if outcome == "invalid":
        analyses = [json.loads(r["sent"]) for r in recorded if json.loads(r["sent"])["kind"] == "analysis"]
        assert [a["valid"] for a in analyses] == [True, False]
        assert analyses[1]["error"].startswith("expected [")  # the wrong expectation, not the tool's output
        sessions = report.read_logs([tmp_path / "run.jsonl"])
        assert "gradient: invalid: expected [" in report.markdown(sessions)


def test_the_exit_status_is_the_outcome_s(tmp_path):
    (tmp_path / "eval.py").write_text(FAKE_EVAL)
    (tmp_path / "plan.json").write_text(json.dumps([start(), define(), evaluate(2, "primal", check="wrong")]))
    eval_cmd = f"{sys.executable} eval.py plan.json record.jsonl"
    tool_cmd = " ".join(fake_tool(tmp_path, "ok"))
    args = ["--eval", eval_cmd, "--tool", tool_cmd, "--cwd", str(tmp_path), "-o", str(tmp_path / "log.jsonl")]
    done = subprocess.run([sys.executable, "-m", "fasttape.gradbench.driver", *args], capture_output=True, text=True)
    assert done.returncode == driver.EXIT_CODES["invalid"] == 4, done.stderr
    assert "outcome: invalid" in done.stderr
    assert "[2] eval  lse::primal" in done.stdout and "INVALID" in done.stdout
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 8


@pytest.mark.parametrize("mode", ["garbage", "nan", "float-ns", "success-with-error", "no-output"])
def test_an_answer_the_protocol_forbids_is_an_error(tmp_path, mode):
    steps = [start(), define(), evaluate(2, "primal", check=None)]
    outcome, log, recorded = play(tmp_path, steps, fake_tool(tmp_path, mode))
    assert outcome == "error"
    # the evaluate message is logged, its answer is not, and the eval never received it
    assert json.loads(LOG_LINE.match(log[-1]).group(3))["kind"] == "evaluate"
    assert len(log) == 5 and recorded[-1]["answer"] == ""


def test_a_scripted_tool_that_answers_well_succeeds(tmp_path):
    steps = [start(), define(), evaluate(2, "primal", check=None)]
    outcome, log, recorded = play(tmp_path, steps, fake_tool(tmp_path, "ok"))
    assert outcome == "success" and len(log) == 6 and json.loads(recorded[-1]["answer"])["output"] == 1.5


def test_an_eval_that_crashes_is_an_error(tmp_path):
    steps = [start(), define(), evaluate(2, "primal", check=None)]
    outcome, log, _ = play(tmp_path, steps, fake_tool(tmp_path, "ok"), eval_status=3)
    assert outcome == "error" and len(log) == 6


def test_a_tool_that_cannot_start_is_an_error_and_the_eval_ends(tmp_path):
    begun = time.monotonic()
    outcome, log, recorded = play(tmp_path, [start(), define()], [str(tmp_path / "no-such-tool")])
    assert outcome == "error" and log == [] and time.monotonic() - begun < 10
    assert recorded == [] or recorded[0]["answer"] == ""  # the eval read the end of the session


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie: dead, not yet reaped by its new parent
    except FileNotFoundError:
        return True


def test_a_tool_that_hangs_times_out_and_its_process_group_is_killed(tmp_path):
    pids = tmp_path / "pids"
    begun = time.monotonic()
    outcome, log, recorded = play(
        tmp_path, [start(), define(), evaluate(2, "primal", check=None)], fake_tool(tmp_path, "hang", pids), timeout=1.5
    )
    assert outcome == "timeout"
    assert 1.5 <= time.monotonic() - begun < 30
    tool, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while not (_gone(tool) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(tool) and _gone(child), "the hung tool or its child survived"
    assert len(log) == 5 and recorded[-1]["answer"] == ""


def test_ctrl_c_kills_both_and_exits_6(tmp_path):
    (tmp_path / "eval.py").write_text(FAKE_EVAL)
    (tmp_path / "plan.json").write_text(json.dumps([start(), define(), evaluate(2, "primal", check=None)]))
    pids = tmp_path / "pids"
    args = ["--eval", f"{sys.executable} eval.py plan.json record.jsonl", "--cwd", str(tmp_path), "--quiet"]
    args += ["--tool", " ".join(fake_tool(tmp_path, "hang", pids))]
    # (the driver's Ctrl-C handler set explicitly: a test run started as a shell's background job inherits
    # SIGINT ignored, and Python then leaves it ignored in every child)
    start_driver = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'driver'; runpy.run_module('fasttape.gradbench.driver', run_name='__main__')"
    )
    process = subprocess.Popen([sys.executable, "-c", start_driver, *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not pids.exists() or not pids.read_text():
        assert time.monotonic() < deadline and process.poll() is None, "the tool never got the evaluate message"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == driver.EXIT_CODES["interrupt"] == 6
    tool, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while not (_gone(tool) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(tool) and _gone(child)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": 0, "kind": "hello"}', "unknown message kind 'hello'"),
        ('{"id": "0", "kind": "start"}', "field 'id' has the wrong type"),
        ('{"id": 1, "kind": "define"}', "lacks its field 'module'"),
        ('{"id": 3, "kind": "analysis", "of": 2, "valid": 1}', "field 'valid' has the wrong type"),
        ("[1, 2]", "a JSON object was expected"),
    ],
)
def test_messages_are_checked_as_the_cli_does(line, problem):
    with pytest.raises(driver.ProtocolError, match=re.escape(problem)):
        driver.check_message(driver.parse_line(line, "eval"))


def test_a_command_is_split_as_a_shell_would():
    assert driver.split_command("python -m 'a b' \"c d\"") == ["python", "-m", "a b", "c d"]
    with pytest.raises(ValueError, match="empty command"):
        driver.split_command("  ")


# --- the JAX tool: its waiting timer, without a GradBench checkout ---------------------------------------------


def test_timed_calls_wait_inside_the_timed_region_and_time_the_first_call_apart():
    waited = []

    def wait(value):
        time.sleep(0.02)
        waited.append(value)
        return value + 100

    calls = []

    def function(x):
        calls.append(x)
        if len(calls) == 1:
            time.sleep(0.1)  # as a compilation would
        return x * 2

    output, timings = jax_tool.timed_calls(function, 3, min_runs=1, min_seconds=0.09, wait=wait)
    assert output == 106 and waited == [6] * len(calls)
    assert [t["name"] for t in timings] == ["prepare"] + ["evaluate"] * (len(calls) - 1)
    evaluates = [t["nanoseconds"] for t in timings[1:]]
    assert timings[0]["nanoseconds"] >= 0.12e9  # the first call's 0.1 s and its wait
    assert all(ns >= 0.02e9 for ns in evaluates)  # each call's wait inside its timing
    assert sum(evaluates) >= 0.09e9 > sum(evaluates[:-1])  # until min_seconds, and no run more
    assert len(evaluates) <= 5
    _, timings = jax_tool.timed_calls(function, 3, min_runs=3, min_seconds=0, wait=wait)
    assert len(timings) == 4


STAND_IN_WRAP = '''
"""A stand-in for gradbench.wrap: its decorators time calls without waiting (the behaviour replaced)."""
import time
from dataclasses import dataclass


@dataclass
class Wrapped:
    function: object
    wrapped: object

    def __call__(self, *args):
        return self.function(*args)


def function(*, pre, post):
    raise AssertionError("the stand-in's own decorator was used: jax_tool did not replace it")


def multiple_runs(*, pre, post, min_runs=None, min_seconds=None):
    raise AssertionError("the stand-in's own decorator was used: jax_tool did not replace it")
'''

STAND_IN_SLOW = '''
"""A stand-in JAX tool module: an output whose block_until_ready takes 50 ms; the first call takes 200 ms more."""
import time

from gradbench import wrap


class Pending:
    def __init__(self, value):
        self.value = value

    def block_until_ready(self):
        time.sleep(0.05)
        return self


calls = []


@wrap.multiple_runs(pre=lambda raw: raw["x"], post=lambda pending: pending.value)
def twice(x):
    calls.append(x)
    if len(calls) == 1:
        time.sleep(0.2)
    return Pending(2 * x)


@wrap.function(pre=float, post=float)
def square(x):
    return twice.function(x).value * x / 2
'''

STAND_IN_REAL = """
import jax.numpy as jnp
import numpy as np
from gradbench import wrap


@wrap.multiple_runs(pre=lambda raw: np.asarray(raw["x"]), post=lambda y: y.tolist())
def exp(x):
    return jnp.exp(x)
"""


def test_the_jax_tool_serves_a_stand_in_checkout_with_waiting_timers(tmp_path):
    root = tmp_path / "gradbench"
    package = root / "python" / "gradbench" / "gradbench"
    (package / "tools" / "jax").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "wrap.py").write_text(STAND_IN_WRAP)
    (package / "tools" / "jax" / "run.py").write_text("raise AssertionError('not to be imported')\n")
    (package / "tools" / "jax" / "slow.py").write_text(STAND_IN_SLOW)
    (package / "tools" / "jax" / "real.py").write_text(STAND_IN_REAL)

    def call(id_, module, function, data):
        return {"send": {"id": id_, "kind": "evaluate", "module": module, "function": function, "input": data}}

    steps = [
        start(eval_="slow"),
        define(module="slow"),
        call(2, "slow", "twice", {"x": 3.5, "min_runs": 2, "min_seconds": 0}),
        call(3, "slow", "square", 3.0),
        call(4, "real", "exp", {"x": [0.0, 1.0], "min_runs": 1, "min_seconds": 0}),
        define(5, module="det"),
    ]
    tool = [sys.executable, "-m", "fasttape.gradbench.jax_tool", "--gradbench-dir", str(root)]
    outcome, log, recorded = play(tmp_path, steps, tool, timeout=60)
    answers = [json.loads(r["answer"]) for r in recorded]
    assert outcome == "undefined"  # det: GradBench's JAX tool has no such module
    assert answers[0]["tool"] == "jax" and "block_until_ready" in answers[0]["config"]["timing"]
    twice, square, exp, det = answers[2:]
    assert twice["output"] == 7.0 and square["output"] == 9.0
    assert [t["name"] for t in twice["timings"]] == ["prepare", "evaluate", "evaluate"]
    assert twice["timings"][0]["nanoseconds"] >= 0.25e9  # the first call and its wait
    assert all(t["nanoseconds"] >= 0.05e9 for t in twice["timings"][1:])  # each call waited for
    assert [t["name"] for t in square["timings"]] == ["prepare", "evaluate"]
    assert exp["output"] == pytest.approx([1.0, math.e], rel=1e-6) and exp["success"] is True
    assert det["success"] is False and "has no module 'det'" in det["error"] and "real, slow" in det["error"]


def test_the_jax_tool_names_a_missing_checkout(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a GradBench checkout"):
        jax_tool.checkout(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "GRADBENCH_DIR"}
    command = [sys.executable, "-m", "fasttape.gradbench.jax_tool"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "GRADBENCH_DIR" in done.stderr and done.stdout == ""
