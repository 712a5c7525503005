"""Saved tapes: round trips, the file format, pickling, and fuzzing of corrupted and crafted files.

Round trips cover every primitive of the table: a loaded tape gives bitwise the
same values, gradients, JVPs and HVPs as the tape it was saved from.

The fuzz tests (hypothesis) run in a child process, so that a file which got
past validation and crashed a compiled sweep would fail the test instead of
killing the runner.  Four properties:

* bytes of the saved (compressed) file mutated, or the file truncated: loading
  raises ValueError, or gives a tape that agrees bitwise with the original;
* the same for the uncompressed form (what pickling uses), where mutations hit
  the arrays themselves;
* one field of one array (or of the JSON metadata) changed: ValueError (the
  checksum), or the same results;
* one field changed *and the checksum recomputed* -- a hostile file: loading
  raises ValueError, or the tape runs to completion (any numbers: the file is
  a different program) or raises one of fasttape's own input errors.  Under
  ``nox -s debug`` the sweeps run with Numba's bounds checking, so an accepted
  file indexing outside its buffers would raise IndexError there and fail.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import subprocess
import sys
import traceback
import zipfile

import numpy as np
import pytest
import scipy.linalg

import fasttape as ft
import fasttape.numpy as fnp
from fasttape import kernels as K
from fasttape import storage
from fasttape.errors import BranchChangedError, InputSignatureError
from tests.programs import M33, X3, rich

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOMAINS = {
    "real": np.array([0.3, -1.2, 0.8]),
    "positive": np.array([0.5, 1.5, 2.5]),
    "nonzero": np.array([0.5, -1.5, 2.0]),
    "unit": np.array([-0.5, 0.1, 0.6]),
    "above_one": np.array([1.5, 2.0, 3.0]),
    "distinct": np.array([0.3, -1.2, 2.1]),
    "off_integers": np.array([0.3, 1.6, -2.2]),
    "off_half_integers": np.array([0.2, 1.7, -2.3]),
    "probability": np.array([0.2, 0.5, 0.85]),
    "off_multiples": np.array([0.25, 1.27, -2.76]),
}


def _elementwise_program(prim):
    fn = getattr(fnp, prim.name)
    if prim.kind == "unary":
        return lambda x: np.sum(fn(x) * x)
    if prim.static == (0,):  # an order: a constant
        return lambda x: np.sum(fn(2, x) + fn(0, x))
    if prim.kind == "binary":
        return lambda x: np.sum(fn(x, x[::-1] + 3.0) + fn(x, 0.75))
    return lambda x: np.sum(np.where(fn(x, 0.1), x * x, -x))  # comparison


def _empty_operand_last(x):
    """An elementwise product of two empty arrays, recorded last: its operand sits at the end of the buffer."""
    s = np.sum(x * x)
    e = x[:0]
    _ = e * e
    return s


STRUCTURAL = {
    "where": (lambda x: np.sum(np.where(x > 0, x * x, np.sin(x))), (X3,)),
    "sum-axis": (lambda m: np.sum(np.sum(m, axis=0) ** 2), (M33,)),
    "prod": (lambda m: np.sum(np.prod(m + 2.0, axis=1)), (M33,)),
    "max-min": (lambda m: np.max(m) * np.min(m, axis=0)[1], (M33,)),
    "logsumexp": (lambda m: fnp.logsumexp(m, axis=1)[0] * 2.0, (M33,)),
    "cumsum": (lambda m: np.sum(np.cumsum(m, axis=1) ** 2), (M33,)),
    "broadcast": (lambda x: np.sum(np.broadcast_to(x, (4, 3)) * np.arange(12.0).reshape(4, 3)), (X3,)),
    "gather": (lambda m: np.sum(np.concatenate([m[::-1, 0], m.T[1], np.diagonal(m)]) ** 2), (M33,)),
    "matmul": (lambda m, x: np.sum((m @ m) @ x), (M33, X3)),
    "linalg": (lambda m, x: np.sum(np.linalg.solve(m + 3.0 * np.eye(3), x)) + np.linalg.slogdet(m + 3.0 * np.eye(3))[1],
               (M33, X3)),
    "factor": (lambda m, x: np.sum(scipy.linalg.cho_solve((np.linalg.cholesky(m @ m.T + np.eye(3)), True), x))
               + np.sum(np.linalg.eigh(m + m.T)[1][:, 0] ** 2), (M33, X3)),  # fmt: skip
    "decompositions": (lambda m, x: np.linalg.norm(m, "nuc") + np.sum(np.linalg.qr(m[:, :2])[0] ** 3)
                       + np.sum(scipy.linalg.lu_solve(scipy.linalg.lu_factor(m + 3.0 * np.eye(3)), x)), (M33, X3)),
    "rich-with-guard": (rich, (X3, M33)),
    "containers": (lambda p, n, tag: np.sum(p["w"] ** 2 * p["b"][0]) * n + p["b"][1], (
        {"w": X3, "b": [1.5, np.float64(2.0)]}, np.int64(3), "tag")),
    "integer-array": (lambda x, idx: np.sum(x[idx] ** 3), (X3, np.array([2, 0, 0]))),
    "sorting-and-scatter": (lambda x, idx: np.sum(np.sort(x) * x.at[idx].add(x[np.argmax(x)])[idx])
                            + np.sum(np.searchsorted(np.sort(x), x) * x) + x[np.argmin(x)], (X3, np.array([2, 0, 0]))),
    "remainder": (lambda x: np.sum(np.remainder(x + 3.25, 2.0) + np.floor_divide(x, 2.0) * x), (X3,)),
    "constant-output": (lambda x: 2.5, (X3,)),
    "empty-input": (lambda x, e: np.sum(x * x) + np.sum(e * 2.0), (X3, np.zeros(0))),
    "empty-operand-last": (_empty_operand_last, (X3,)),
}  # fmt: skip


def _programs():
    progs = {}
    for prim in K.PRIMITIVES:
        if prim.kind in ("unary", "binary", "comparison"):
            progs[f"{prim.kind}-{prim.name}"] = (_elementwise_program(prim), (DOMAINS[prim.domain],))
    progs.update(STRUCTURAL)
    return progs


PROGRAMS = _programs()


def _roundtrip(tape):
    buf = io.BytesIO()
    tape.save(buf)
    buf.seek(0)
    return ft.load_tape(buf)


def _results(tape, args):
    """Everything a tape computes at ``args``, for bitwise comparison."""
    out = {"forward": tape(*args)}
    if tape._grad_ok:
        out["value_and_grad"] = tape.value_and_grad(*args)
        diff = tape.argnums
        v = args[diff] if isinstance(diff, int) else tuple(args[i] for i in diff)
        out["hvp"] = tape.hvp(*args, v)
        out["jvp"] = tape.jvp(args, v)
    return out


def _assert_same(a, b):
    la, ta = ft.api.optree.tree_flatten(a, none_is_leaf=True)
    lb, tb = ft.api.optree.tree_flatten(b, none_is_leaf=True)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


def test_every_primitive_is_in_the_corpus():
    seen = set()
    for f, args in PROGRAMS.values():
        seen |= set(ft.trace(f, *args).stats()["by_primitive"])
    assert seen == {p.name for p in K.PRIMITIVES}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_round_trip_is_bitwise_identical(name):
    f, args = PROGRAMS[name]
    tape = ft.trace(f, *args)
    loaded = _roundtrip(tape)
    assert loaded.listing() == tape.listing()
    assert loaded.stats() == tape.stats()
    np.testing.assert_array_equal(loaded.ins, tape.ins)
    np.testing.assert_array_equal(loaded.aux, tape.aux)
    _assert_same(_results(loaded, args), _results(tape, args))
    again = pickle.loads(pickle.dumps(tape))
    _assert_same(_results(again, args), _results(tape, args))


def test_no_initialising_write_into_an_empty_operand():
    """An empty operand's adjoint needs no initialisation; an F_INIT bit would make the reverse sweep write
    one element at its offset -- here the end of the buffer, one past the adjoints."""
    tape = ft.trace(_empty_operand_last, X3)
    init = (K.F_INIT_A, K.F_INIT_B, K.F_INIT_C)
    for row in tape.ins:
        for bit, size_col in zip(init, (K.C_NA, K.C_NB, K.C_NC)):
            assert not (row[size_col] == 0 and row[K.C_FLAGS] & bit), row
    value, grad = tape.value_and_grad(X3)
    assert value == np.sum(X3 * X3)
    np.testing.assert_array_equal(grad, 2.0 * X3)


def test_saving_is_reproducible_and_a_plain_npz(tmp_path):
    f, args = PROGRAMS["rich-with-guard"]
    tape = ft.trace(f, *args)
    tape.save(tmp_path / "a.npz")
    tape.save(str(tmp_path / "b.npz"))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted([*storage._MEMBERS, "sha256"])
        meta = json.loads(npz["meta"].tobytes())
        assert meta["format"] == "fasttape.tape" and meta["version"] == storage.VERSION
        np.testing.assert_array_equal(npz["ins"], tape.ins)
    loaded = ft.load_tape(tmp_path / "a.npz")
    _assert_same(loaded.value_and_grad(*args), tape.value_and_grad(*args))
    assert not list(tmp_path.glob("*.tmp*"))


def test_loaded_tape_keeps_its_signature_and_guards():
    f, args = PROGRAMS["rich-with-guard"]
    loaded = _roundtrip(ft.trace(f, *args))
    with pytest.raises(InputSignatureError, match=r"shape \(4,\)"):
        loaded.grad(np.ones(4), M33)
    with pytest.raises(BranchChangedError, match="different branch"):
        loaded.grad(-X3, M33)
    f, args = PROGRAMS["containers"]
    loaded = _roundtrip(ft.trace(f, *args))
    with pytest.raises(InputSignatureError, match="static"):
        loaded.grad(args[0], np.int64(4), "tag")
    assert isinstance(loaded.grad(*args), dict)


def _rewritten(tape, edit):
    """The bytes of ``tape`` saved, with ``edit(meta, arrays)`` applied and the checksum redone."""
    arrays = storage._arrays_of(tape)
    meta = json.loads(arrays["meta"].tobytes().decode())
    edit(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    storage._write(arrays, buf)
    return buf.getvalue()


@pytest.mark.parametrize("bad", [np.nan, np.inf, 2.5])
def test_an_integer_constant_that_is_not_a_whole_number_is_refused(bad):
    """(Found by the fuzzing below: such a file loaded, and its listing failed converting the constant.)"""

    def f(x):
        i = np.argmax(x)  # (an integer constant beside it)
        return x[i] * np.sum(np.where(x > 0, x, 0.0))

    tape = ft.trace(f, np.array([0.3, -1.0, 2.0]))
    (sid,) = [sid for sid, s in enumerate(tape._slots) if s.origin[0] == "const" and s.kind == "i"]

    def edit(meta, arrays):
        arrays["values"] = arrays["values"].copy()
        arrays["values"][tape._slots[sid].offset] = bad

    with pytest.raises(ft.TapeFormatError, match=f"slot {sid}: an integer or boolean constant"):
        ft.load_tape(io.BytesIO(_rewritten(tape, edit)))
    assert ft.load_tape(io.BytesIO(_rewritten(tape, lambda meta, arrays: None))).listing()


def test_saved_opcodes_are_remapped_by_primitive_name():
    """A file from a version whose table had another order (a primitive added in between) loads: its
    opcodes are renumbered by name, and the tape gives bitwise the results of the original."""
    f, args = PROGRAMS["rich-with-guard"]
    tape = ft.trace(f, *args)

    def reorder(meta, arrays):
        names = meta["primitives"]
        order = names[::-1]
        new_opcode = {old: order.index(name) for old, name in enumerate(names)}
        arrays["ins"] = arrays["ins"].copy()  # not the tape's own table
        arrays["ins"][:, K.C_OP] = [new_opcode[op] for op in arrays["ins"][:, K.C_OP].tolist()]
        meta["primitives"] = order

    data = _rewritten(tape, reorder)
    saved_ins = np.load(io.BytesIO(data))["ins"]
    assert (saved_ins[:, K.C_OP] != tape.ins[:, K.C_OP]).all()  # every opcode in the file is another number
    loaded = ft.load_tape(io.BytesIO(data))
    np.testing.assert_array_equal(loaded.ins, tape.ins)
    value, grads = tape.value_and_grad(*args)
    lvalue, lgrads = loaded.value_and_grad(*args)
    assert value == lvalue
    np.testing.assert_array_equal(lgrads, grads)


def test_a_version_1_file_gets_its_side_stores_on_load():
    """Version 1 had no side stores: its max/min rows load with theirs appended after the values, and the
    tape gives the results of one traced now (the same numbers; the side stores sit elsewhere)."""

    def f(x, M):
        return np.max(M @ x) + np.sum(np.min(M, axis=0) * x) + np.max(np.round(x))  # a tie: round

    args = (np.array([0.4, 0.6, 1.2]), M33)
    tape = ft.trace(f, *args)
    sided = [i for i, row in enumerate(tape.ins.tolist()) if K.PRIMITIVE_BY_OPCODE[row[K.C_OP]].name in ("max", "min")]
    assert len(sided) == 3

    def as_version_1(meta, arrays):  # a version-1 writer kept no side stores (the values they use stay, unused)
        meta["version"] = 1
        arrays["ins"] = arrays["ins"].copy()
        arrays["ins"][sided, K.C_P3] = 0

    loaded = ft.load_tape(io.BytesIO(_rewritten(tape, as_version_1)))
    assert loaded.n_values == tape.n_values + sum(int(tape.ins[i, K.C_N]) for i in sided)
    assert all(loaded.ins[i, K.C_P3] >= tape.n_values for i in sided)
    for x in (args[0], np.array([1.0, 1.0, 1.0]), np.array([-0.3, 2.0, 2.0])):
        _assert_same(loaded.value_and_grad(x, M33), tape.value_and_grad(x, M33))
        v = np.array([0.5, -1.0, 2.0])
        _assert_same(loaded.hvp(x, M33, v), tape.hvp(x, M33, v))
    version_2 = ft.load_tape(io.BytesIO(_rewritten(tape, lambda meta, arrays: None)))
    np.testing.assert_array_equal(version_2.ins, tape.ins)


def test_a_primitive_this_version_lacks_is_named_with_the_fix():
    f, args = PROGRAMS["rich-with-guard"]
    tape = ft.trace(f, *args)
    used = tape.ins[0, K.C_OP]

    def rename(meta, arrays):
        meta["primitives"][used] = "frobnicate"

    with pytest.raises(ft.TapeFormatError, match=r"'frobnicate'.*re-save"):
        ft.load_tape(io.BytesIO(_rewritten(tape, rename)))


def test_has_aux_round_trip():
    def f(x):
        return np.sum(x**2), {"norm": np.sqrt(np.sum(x**2)), "positive": x > 0, "label": "run-1", "n": 3}

    tape = ft.trace(f, X3, has_aux=True)
    loaded = _roundtrip(tape)
    _assert_same(loaded.value_and_grad(X3), tape.value_and_grad(X3))


def test_large_tape_round_trip_is_compact():
    x = np.linspace(-1.0, 1.0, 20000)
    tape = ft.trace(lambda x: np.sum(np.tanh(x) * x + 1.0), x)
    buf = io.BytesIO()
    tape.save(buf)
    assert len(buf.getvalue()) < 64 * 1024  # the value buffer (zeros apart from constants) compresses
    buf.seek(0)
    _assert_same(ft.load_tape(buf).value_and_grad(x), tape.value_and_grad(x))


# --------------------------------------------------------------------------
# fuzzing, in a child process
# --------------------------------------------------------------------------
FUZZ_ARGS = (X3, M33)
_ACCEPTED_RUN_ERRORS = (ft.InputSignatureError, ft.BranchChangedError, ft.NonScalarOutputError, ft.InputTypeError)


def _fuzz_tape():
    return ft.trace(rich, *FUZZ_ARGS)


def _agrees(loaded, reference):
    for args in (FUZZ_ARGS, (X3 * 0.5 + 0.25, M33.T)):
        _assert_same(_results(loaded, args), reference[args[0].tobytes()])


def _fuzz_main(log_path):  # pragma: no cover -- runs in the child
    import faulthandler

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    faulthandler.enable()
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
    n = int(os.environ.get("FASTTAPE_FUZZ_EXAMPLES") or {"debug": 40, "ci": 150}.get(profile, 200))
    fuzz_settings = settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")) or profile == "debug",
        suppress_health_check=list(HealthCheck),
    )
    tape = _fuzz_tape()
    reference = {}
    for args in (FUZZ_ARGS, (X3 * 0.5 + 0.25, M33.T)):
        reference[args[0].tobytes()] = _results(tape, args)
    compressed = io.BytesIO()
    tape.save(compressed)
    compressed = compressed.getvalue()
    stored = storage.tape_to_bytes(tape)
    arrays = storage._arrays_of(tape)
    stats = {"loaded": 0, "rejected": 0}

    def log(text):
        with open(log_path, "w") as f:
            f.write(text)

    def load(data, what):
        log(what)
        try:
            loaded = ft.load_tape(io.BytesIO(data))
        except ValueError:
            stats["rejected"] += 1
            return None
        stats["loaded"] += 1
        return loaded

    byte_edits = st.lists(
        st.tuples(st.sampled_from(["set", "flip", "insert", "delete"]), st.integers(0, 10**9), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )

    def mutate_bytes(data, edits, cut):
        b = bytearray(data)
        for kind, pos, value in edits:
            pos %= max(len(b), 1)
            if kind == "set":
                b[pos] = value
            elif kind == "flip":
                b[pos] ^= 1 << (value % 8)
            elif kind == "insert":
                b[pos:pos] = bytes([value])
            elif b:
                del b[pos]
        if cut is not None:
            del b[cut % max(len(b), 1) :]
        return bytes(b)

    def fuzz_bytes(source, label):
        @fuzz_settings
        @given(byte_edits, st.none() | st.integers(0, 10**9))
        def prop(edits, cut):
            loaded = load(mutate_bytes(source, edits, cut), f"{label}: edits={edits} cut={cut}")
            if loaded is not None:
                _agrees(loaded, reference)

        prop()

    interesting = st.sampled_from([0, 1, -1, 2, 7, 8, 13, 2**31 - 1, 2**31, 2**32, 2**62, -(2**63), 2**63 - 1])

    def field_edit(draw_member, draw_index, draw_value, arrays_in):
        out = {k: v.copy() for k, v in arrays_in.items()}
        names = sorted(out)
        name = names[draw_member % len(names)]
        arr = out[name]
        if name == "meta":
            meta = json.loads(arr.tobytes())
            paths = []

            def walk(node, path):
                if isinstance(node, dict):
                    for k, v in node.items():
                        walk(v, path + [k])
                elif isinstance(node, list):
                    if not node:
                        paths.append(path)
                    for i, v in enumerate(node):
                        walk(v, path + [i])
                else:
                    paths.append(path)

            walk(meta, [])
            path = paths[draw_index % len(paths)]
            parent = meta
            for p in path[:-1]:
                parent = parent[p]
            replacement = [draw_value, -draw_value, str(draw_value), None, [], {"x": 1}, True, 1.5][draw_value % 8]
            if path:
                parent[path[-1]] = replacement
            out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            return out, f"meta{path} = {replacement!r}"
        if arr.size == 0:
            return out, f"{name} (empty)"
        if draw_value % 17 == 0:  # change the shape: drop the last row
            out[name] = arr[:-1].copy()
            return out, f"{name} truncated"
        flat = arr.reshape(-1)
        i = draw_index % flat.size
        if arr.dtype.kind == "f":
            flat[i] = [np.nan, np.inf, -1.0, 0.0, 1e300][draw_value % 5]
        elif arr.dtype.kind == "u":
            flat[i] = draw_value % 256
        else:
            old = int(flat[i])
            flat[i] = [draw_value, old + 1, old - 1, -old, old ^ 1][draw_index % 5] if abs(draw_value) < 2**62 else (
                draw_value)  # fmt: skip
        return out, f"{name}[{i}] = {flat[i]!r}"

    def fuzz_fields(rehash):
        @fuzz_settings
        @given(st.integers(0, 100), st.integers(0, 10**6), interesting | st.integers(-(2**40), 2**40))
        def prop(member, index, value):
            mutated, what = field_edit(member, index, value, arrays)
            buf = io.BytesIO()
            if rehash:
                storage._write(mutated, buf)
            else:
                mutated["sha256"] = np.frombuffer(storage._digest(arrays), dtype=np.uint8)
                with zipfile.ZipFile(buf, "w") as zf:
                    for name, arr in mutated.items():
                        with zf.open(name + ".npy", "w") as f:
                            np.lib.format.write_array(f, arr, allow_pickle=False)
            loaded = load(buf.getvalue(), f"fields rehash={rehash}: {what}")
            if loaded is None:
                return
            if not rehash:
                _agrees(loaded, reference)
                return
            for args in (FUZZ_ARGS, (X3 * 0.5 + 0.25, M33.T)):  # a different program: it must run or refuse
                for run in (
                    lambda a=args: loaded(*a),
                    lambda a=args: loaded.value_and_grad(*a),
                    lambda a=args: loaded.hvp(*a, a[0]),
                    lambda a=args: loaded.jvp(a, a[0]),
                    lambda a=args: loaded.listing(),
                ):
                    try:
                        run()
                    except _ACCEPTED_RUN_ERRORS:
                        pass

        prop()

    report = {}
    for name, fn in (
        ("bytes-compressed", lambda: fuzz_bytes(compressed, "compressed")),
        ("bytes-stored", lambda: fuzz_bytes(stored, "stored")),
        ("fields", lambda: fuzz_fields(False)),
        ("fields-rehashed", lambda: fuzz_fields(True)),
    ):
        stats.update(loaded=0, rejected=0)
        try:
            fn()
            report[name] = {"ok": True, **stats}
        except BaseException:  # noqa: BLE001
            report[name] = {"ok": False, "error": traceback.format_exc()[-4000:], **stats}
    # a pickled tape from the parent, evaluated here: what a process pool does
    pickled = pickle.loads(base64.b64decode(sys.stdin.read()))
    vg = pickled.value_and_grad(*FUZZ_ARGS)
    report["pickled"] = {"value": float(vg[0]), "grad": [float(v) for v in vg[1]]}
    print("FUZZ-REPORT " + json.dumps(report))


@pytest.fixture(scope="module")
def fuzz_report(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("fuzz") / "current-example.txt"
    payload = base64.b64encode(pickle.dumps(_fuzz_tape())).decode()
    proc = subprocess.run(
        [sys.executable, "-c", f"from tests.test_storage import _fuzz_main; _fuzz_main({str(log_path)!r})"],
        input=payload,
        cwd=ROOT,
        env={**os.environ, "FASTTAPE_TIERS": "compiled"},  # the compiled sweeps, not the executor
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FUZZ-REPORT ")]
    if proc.returncode != 0 or not lines:
        last = log_path.read_text() if log_path.exists() else "<none>"
        pytest.fail(
            f"the fuzzing child died (exit status {proc.returncode}) while loading or running: {last}\n"
            f"stderr:\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len("FUZZ-REPORT ") :])


@pytest.mark.parametrize("kind", ["bytes-compressed", "bytes-stored", "fields", "fields-rehashed"])
def test_fuzzed_tape_files_load_correctly_or_raise_value_error(fuzz_report, kind):
    entry = fuzz_report[kind]
    assert entry["ok"], entry["error"]
    assert entry["rejected"] > 0  # the mutations do reach the validation
    if kind == "fields-rehashed":
        assert entry["loaded"] > 0  # ... and some crafted files pass it (and then run safely)


def test_a_pickled_tape_runs_in_another_process(fuzz_report):
    value, grad = _fuzz_tape().value_and_grad(*FUZZ_ARGS)
    assert fuzz_report["pickled"]["value"] == float(value)
    assert fuzz_report["pickled"]["grad"] == [float(g) for g in grad]
