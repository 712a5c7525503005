"""Hostile inputs, run in a child process so that a crash cannot take the test runner down.

``HOSTILE`` is a table of cases.  A case either must raise (an exception of the
given builtin type -- and fasttape subclass, where one exists -- whose message
matches a regular expression naming the problem and the fix), or must return a
value that passes a ``check`` (inputs that fasttape converts: float32,
big-endian, read-only, strided; NaN and infinity; constant outputs).  The
cases cover bad arguments to tapes and transformations, data-dependent shapes,
mutation, options, and saved tape files that are corrupted, truncated or
crafted to point outside their buffers.

One child process runs every case of ``HOSTILE`` and of
``tests.test_errors.ERROR_CASES`` and reports each as a JSON line (a "start"
line before the case runs, a result line after).  If the child dies, the case
that was running is reported as a crash and a new child runs the rest.  Each
test then looks its case up in those results: the interpreter and Numba are
started once or twice, not once per case.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import pytest

import fasttape as ft
from fasttape import config, storage
from fasttape import kernels as K
from fasttape.errors import (
    ConcretizationError,
    InputSignatureError,
    InputTypeError,
    NonScalarOutputError,
    TapeFormatError,
    TracerMutationError,
    UnsupportedFunctionError,
)
from tests.programs import M33, X3, rich

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Hostile:
    """``trigger()`` must raise ``raises`` (and ``subclass``) matching ``match``; with ``raises=None``
    it must return a value for which ``check(value)`` passes."""

    id: str
    trigger: Callable[[], object]
    raises: type[BaseException] | None
    match: str = ""
    subclass: type[BaseException] | None = None
    check: Callable[[object], None] | None = None


# --------------------------------------------------------------------------
# functions and objects the cases use
# --------------------------------------------------------------------------
def _sumsq(x):
    return np.sum(x * x)


def _dot2(x, y):
    return np.sum(x * y)


@functools.cache
def tapes():
    return {
        "sumsq": ft.trace(_sumsq, X3),
        "dot2": ft.trace(_dot2, X3, X3, argnums=(0, 1)),
        "tree": ft.trace(lambda p: np.sum(p["w"] * p["b"]), {"w": X3, "b": X3}),
        "scalar": ft.trace(lambda s: s * s, 1.5),
        "rich": ft.trace(rich, X3, M33),
    }


def _grad_of(f):
    return ft.grad(f)


def _expect_equal(expected):
    def check(got):
        got_arr = np.asarray(got)
        assert got_arr.dtype == np.float64, f"dtype {got_arr.dtype}, expected float64"
        np.testing.assert_array_equal(got_arr, expected)

    return check


def _same_as_float64(f, x):
    """A check that the result equals the result for the float64 copy of ``x``."""
    return lambda got: _expect_equal(ft.grad(f)(np.array(x, dtype=np.float64)))(got)


def _readonly(x):
    x = np.array(x)
    x.flags.writeable = False
    return x


def _converted_not_retraced():
    g = ft.grad(_sumsq)
    g(X3)
    out = g(X3.astype(np.float32))
    out = g(X3.astype(">f8")) + out
    assert len(g.cache) == 1, f"{len(g.cache)} tapes recorded for one shape"
    return out


# -- saved tapes -------------------------------------------------------------
@functools.cache
def _base_arrays():
    return storage._arrays_of(tapes()["rich"])


def _meta(arrays):
    return json.loads(arrays["meta"].tobytes().decode())


def _with_meta(arrays, meta):
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def _row(arrays, op):
    return int(np.flatnonzero(arrays["ins"][:, K.C_OP] == op)[0])


def _crafted(mutate, rehash=True):
    """A trigger loading the rich tape's arrays after ``mutate(arrays)`` (a hostile file: checksum redone)."""

    def trigger():
        arrays = {k: v.copy() for k, v in _base_arrays().items()}
        mutate(arrays)
        buf = io.BytesIO()
        if rehash:
            storage._write(arrays, buf)
        else:  # keep the original checksum
            with zipfile.ZipFile(buf, "w") as zf:
                for name, arr in {**arrays, "sha256": _original_digest()}.items():
                    with zf.open(name + ".npy", "w") as f:
                        np.lib.format.write_array(f, arr, allow_pickle=False)
        buf.seek(0)
        return ft.load_tape(buf)

    return trigger


def _original_digest():
    return np.frombuffer(storage._digest(_base_arrays()), dtype=np.uint8)


@functools.cache
def _saved_bytes():
    buf = io.BytesIO()
    tapes()["rich"].save(buf)
    return buf.getvalue()


def _load_bytes(data):
    return lambda: ft.load_tape(io.BytesIO(data))


def _set_ins(op, col, value):
    def mutate(arrays):
        arrays["ins"][_row(arrays, op), col] = value

    return mutate


def _set_aux(index_of, value):
    def mutate(arrays):
        arrays["aux"][index_of(arrays["aux"])] = value

    return mutate


def _edit_meta(edit):
    def mutate(arrays):
        meta = _meta(arrays)
        edit(meta)
        _with_meta(arrays, meta)

    return mutate


def _zip_members(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy_bytes(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _with_member(name, data):
    """The saved rich tape with one member's raw bytes replaced (or added)."""
    with zipfile.ZipFile(io.BytesIO(_saved_bytes())) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = data
    return _zip_members(members)


def _without_member(name):
    with zipfile.ZipFile(io.BytesIO(_saved_bytes())) as zf:
        return _zip_members({n: zf.read(n) for n in zf.namelist() if n != name})


def _huge_header_member():
    """An ``ins`` member whose .npy header claims 10^12 rows, followed by a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": (10**12, K.ROW)})
    return _with_member("ins.npy", header.getvalue() + b"\0" * 64)


def _budget_then(trigger, budget):
    def run():
        with ft.options(memory_budget=budget):
            return trigger()

    return run


def _save_to_bytes(f, *args):
    def run():
        ft.trace(f, *args).save(io.BytesIO())

    return run


Point = namedtuple("Point", "x y")
_FMT = TapeFormatError
_NOT_VALID = r"not a valid fasttape tape file"


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------
HOSTILE = [
    # -- arguments of a Tape that do not fit its signature ---------------------------------------------
    Hostile("tape-object-array", lambda: tapes()["sumsq"].grad(np.array([1.0, 2.0, 3.0], dtype=object)),
            TypeError, r"dtype object.*np\.asarray\(x, dtype=float\)", InputTypeError),
    Hostile("tape-string-array", lambda: tapes()["sumsq"].grad(np.array(["a", "b", "c"])),
            TypeError, r"dtype <U1.*dtype=float", InputTypeError),
    Hostile("tape-datetime-array", lambda: tapes()["sumsq"].grad(np.array(["2020-01-01"] * 3, dtype="M8[D]")),
            TypeError, r"dtype datetime64\[D\].*dtype=float", InputTypeError),
    Hostile("tape-none", lambda: tapes()["sumsq"].grad(None), TypeError, r"dtype NoneType.*dtype=float",
            InputTypeError),
    Hostile("tape-complex-scalar", lambda: tapes()["scalar"].grad(np.complex128(1j)), TypeError,
            r"dtype complex128.*dtype=float", InputTypeError),
    Hostile("tape-int-for-float-scalar", lambda: tapes()["scalar"].grad(2), TypeError, r"dtype int\b.*dtype=float",
            InputTypeError),
    Hostile("tape-0d-for-vector", lambda: tapes()["sumsq"].grad(np.float64(1.0)), ValueError,
            r"has shape \(\), but the tape was recorded with shape \(3,\).*ft\.grad", InputSignatureError),
    Hostile("tape-matrix-for-vector", lambda: tapes()["sumsq"](np.ones((3, 1))), ValueError,
            r"shape \(3, 1\).*recorded with shape \(3,\)", InputSignatureError),
    Hostile("tape-array-for-dict", lambda: tapes()["tree"].grad(X3), ValueError,
            r"structure.*recorded with.*'b'.*'w'.*ft\.grad", InputSignatureError),
    Hostile("tape-tuple-for-dict", lambda: tapes()["tree"].grad((X3, X3)), ValueError,
            r"has structure .*\(\*, \*\).*recorded with", InputSignatureError),
    Hostile("tape-extra-dict-key", lambda: tapes()["tree"].grad({"w": X3, "b": X3, "c": X3}), ValueError,
            r"structure.*'c'.*recorded with", InputSignatureError),
    Hostile("tape-keyword-argument", lambda: tapes()["sumsq"].grad(x=X3), TypeError,
            r"unexpected keyword argument 'x'"),
    Hostile("tape-vjp-missing-argument", lambda: tapes()["dot2"].vjp(X3), TypeError,
            r"recorded with 2 positional arguments, got 1"),
    Hostile("tape-hvp-direction-wrong-shape", lambda: tapes()["sumsq"].hvp(X3, np.ones(4)), ValueError,
            r"v for arg0 has shape \(4,\); expected \(3,\)", InputSignatureError),
    # -- arguments of transformations ----------------------------------------------------------------
    Hostile("grad-object-array", lambda: ft.grad(_sumsq)(np.array([1.0, 2.0], dtype=object)), TypeError,
            r"dtype object.*dtype=float", InputTypeError),
    Hostile("grad-datetime", lambda: ft.grad(_sumsq)(np.array(["2020-01-01"], dtype="M8[D]")), TypeError,
            r"datetime64\[D\].*dtype=float", InputTypeError),
    Hostile("grad-bytes", lambda: ft.grad(_sumsq)(b"abc"), TypeError, r"dtype bytes.*dtype=float", InputTypeError),
    Hostile("grad-too-many-arguments", lambda: ft.grad(_sumsq)(X3, X3), TypeError,
            r"takes 1 positional argument but 2 were given"),
    Hostile("hvp-direction-str", lambda: ft.hvp(_sumsq, (X3,), ("abc",)), TypeError, r"v for arg0 has dtype str",
            InputTypeError),
    Hostile("jvp-tangent-none", lambda: ft.jvp(_sumsq, (X3,), (None,)), TypeError,
            r"tangents for arg0 has dtype NoneType", InputTypeError),
    Hostile("jvp-tangent-count", lambda: ft.jvp(_dot2, (X3, X3), (X3,)), ValueError,
            r"2 primals but 1 tangents"),
    Hostile("hessian-nonscalar", lambda: ft.hessian(lambda x: x * 2.0)(X3), TypeError, r"scalar output.*ft\.jacobian",
            NonScalarOutputError),
    Hostile("grad-boolean-output", lambda: ft.grad(lambda x: np.sum(x) > 0)(X3), TypeError,
            r"real-valued \(float\) output.*boolean.*np\.where"),
    Hostile("grad-integer-output", lambda: ft.grad(lambda x: 3)(X3), TypeError,
            r"real-valued \(float\) output.*integer"),
    # -- data-dependent shapes ---------------------------------------------------------------------------
    Hostile("shape-nonzero", lambda: ft.grad(lambda x: np.sum(x[np.nonzero(x > 0)]))(X3), NotImplementedError,
            r"numpy\.nonzero\b", UnsupportedFunctionError),
    Hostile("shape-unique", lambda: ft.grad(lambda x: np.sum(np.unique(x)))(X3), NotImplementedError,
            r"numpy\.unique\b", UnsupportedFunctionError),
    Hostile("shape-extract", lambda: ft.grad(lambda x: np.sum(np.extract(x > 0, x)))(X3), NotImplementedError,
            r"numpy\.extract\b", UnsupportedFunctionError),
    Hostile("shape-compress", lambda: ft.grad(lambda x: np.sum(np.compress(x > 0, x)))(X3), NotImplementedError,
            r"numpy\.compress\b", UnsupportedFunctionError),
    Hostile("shape-flatnonzero", lambda: ft.grad(lambda x: np.sum(x[np.flatnonzero(x)]))(X3), NotImplementedError,
            r"numpy\.flatnonzero\b", UnsupportedFunctionError),
    Hostile("shape-mask-on-2d", lambda: ft.grad(lambda m: np.sum(m[m > 0]))(M33), TypeError,
            r"traced.*mask.*np\.where", ConcretizationError),
    # -- mutation --------------------------------------------------------------------------------------------
    Hostile("mutate-slice-assignment-after-view",
            lambda: ft.grad(lambda x: (x[1:], x.__setitem__(slice(1, None), 0.0), np.sum(x))[2])(X3), TypeError,
            r"view of it taken earlier.*copy", TracerMutationError),
    Hostile("mutate-mask-assignment", lambda: ft.grad(lambda x: (x.__setitem__(x > 0, 2 * x), np.sum(x))[1])(X3),
            TypeError, r"traced mask.*single value.*np\.where", ConcretizationError),
    Hostile("mutate-copyto", lambda: ft.grad(lambda x: (np.copyto(x, 1.0), np.sum(x))[1])(X3), NotImplementedError,
            r"numpy\.copyto\b", UnsupportedFunctionError),
    Hostile("mutate-put", lambda: ft.grad(lambda x: (np.put(x, [0], 1.0), np.sum(x))[1])(X3), NotImplementedError,
            r"numpy\.put\b", UnsupportedFunctionError),
    Hostile("mutate-place", lambda: ft.grad(lambda x: (np.place(x, x > 0, 1.0), np.sum(x))[1])(X3),
            NotImplementedError, r"numpy\.place\b", UnsupportedFunctionError),
    # -- inputs that are converted (not re-traced); the result is float64 --------------------------------
    Hostile("convert-float32", lambda: ft.grad(_sumsq)(X3.astype(np.float32)), None,
            check=_same_as_float64(_sumsq, X3.astype(np.float32))),
    Hostile("convert-float16", lambda: ft.grad(_sumsq)(X3.astype(np.float16)), None,
            check=_same_as_float64(_sumsq, X3.astype(np.float16))),
    Hostile("convert-big-endian", lambda: ft.grad(_sumsq)(X3.astype(">f8")), None, check=_expect_equal(2.0 * X3)),
    Hostile("convert-read-only", lambda: ft.grad(_sumsq)(_readonly(X3)), None, check=_expect_equal(2.0 * X3)),
    Hostile("convert-strided", lambda: ft.grad(_sumsq)(np.arange(6.0)[::2]), None,
            check=_expect_equal(2.0 * np.arange(6.0)[::2])),
    Hostile("convert-fortran-order", lambda: ft.grad(lambda m: np.sum(m * m))(np.asfortranarray(M33)), None,
            check=_expect_equal(2.0 * M33)),
    Hostile("convert-tape-float32", lambda: tapes()["sumsq"].grad(X3.astype(np.float32)), None,
            check=_expect_equal(2.0 * X3)),
    Hostile("convert-no-retrace", _converted_not_retraced, None, check=_expect_equal(4.0 * X3)),
    # -- NaN, infinity, constant outputs -------------------------------------------------------------------
    Hostile("nan-propagates", lambda: ft.grad(_sumsq)(np.array([np.nan, 1.0, np.inf])), None,
            check=_expect_equal(np.array([np.nan, 2.0, np.inf]))),
    Hostile("inf-through-exp", lambda: ft.grad(lambda x: np.sum(np.exp(x)))(np.array([-np.inf, 0.0, np.inf])),
            None, check=_expect_equal(np.array([0.0, 1.0, np.inf]))),
    Hostile("constant-python-float", lambda: ft.grad(lambda x: 2.5)(X3), None, check=_expect_equal(np.zeros(3))),
    Hostile("constant-independent-array", lambda: ft.grad(lambda x: np.sum(np.ones(3)) * 2.0)(X3), None,
            check=_expect_equal(np.zeros(3))),
    # -- options ------------------------------------------------------------------------------------------------
    Hostile("options-negative-budget", lambda: ft.set_options(memory_budget=-1), ValueError,
            r"memory_budget must be a number of bytes"),
    Hostile("options-zero-cache", lambda: ft.set_options(cache_size=0), ValueError, r"cache_size must be a positive"),
    Hostile("options-unknown", lambda: ft.set_options(cache=3), TypeError, r"unknown option.*cache_size"),
    Hostile("options-bad-env-size", lambda: config.parse_bytes("lots"), ValueError,
            r"FASTTAPE_MEMORY_BUDGET='lots'.*8GiB"),
    Hostile("budget-exceeded-on-trace", _budget_then(lambda: ft.grad(_sumsq)(np.ones(1000)), 4000), MemoryError,
            r"needs \d+ bytes.*memory budget of 4000 bytes.*ft\.set_options\(memory_budget=.*FASTTAPE_MEMORY_BUDGET"),
    Hostile("budget-exceeded-on-load", _budget_then(_load_bytes(_saved_bytes()), 2000), MemoryError,
            r"memory budget.*ft\.set_options\(memory_budget="),
    # -- saving what a file cannot hold ---------------------------------------------------------------------
    Hostile("save-function-static-argument", _save_to_bytes(lambda x, f: f(x), X3, _sumsq), TypeError,
            r"cannot save arg1 \(a static argument\).*function.*never pickled"),
    Hostile("save-namedtuple-argument", _save_to_bytes(lambda p: p.x * p.y, Point(1.0, 2.0)), TypeError,
            r"cannot save the arguments: containers of type Point.*tuple, list and dict"),
    # -- tape files: not a tape, truncated, corrupted ---------------------------------------------------------
    Hostile("load-not-a-zip", _load_bytes(b"this is not a tape" * 10), ValueError, _NOT_VALID + r".*not a zip", _FMT),
    Hostile("load-empty", _load_bytes(b""), ValueError, _NOT_VALID, _FMT),
    Hostile("load-truncated", lambda: _load_bytes(_saved_bytes()[: len(_saved_bytes()) // 2])(), ValueError,
            _NOT_VALID, _FMT),
    Hostile("load-missing-member", lambda: _load_bytes(_without_member("aux.npy"))(), ValueError,
            _NOT_VALID + r".*members", _FMT),
    Hostile("load-pickled-member", lambda: _load_bytes(
        _with_member("ins.npy", _npy_bytes(np.array([print], dtype=object), allow_pickle=True)))(),
            ValueError, _NOT_VALID + r".*'ins' is object", _FMT),
    Hostile("load-extra-member", lambda: _load_bytes(_with_member("evil.npy", _npy_bytes(np.zeros(2))))(),
            ValueError, _NOT_VALID + r".*members", _FMT),
    Hostile("load-huge-header", lambda: _load_bytes(_huge_header_member())(), ValueError,
            _NOT_VALID + r".*declared", _FMT),
    Hostile("load-float-instructions", lambda: _load_bytes(_with_member("ins.npy", _npy_bytes(np.zeros((2, K.ROW)))))(),
            ValueError, r"'ins' is float64", _FMT),
    Hostile("load-checksum", _crafted(lambda a: a["values"].__setitem__(0, 7.0), rehash=False), ValueError,
            r"checksum mismatch", _FMT),
    Hostile("load-unpickle-garbage", lambda: storage.tape_from_bytes(b"\x80junk"), ValueError, _NOT_VALID, _FMT),
    # -- tape files crafted to point outside their buffers (checksum recomputed) ----------------------------
    Hostile("crafted-future-version", _crafted(_edit_meta(lambda m: m.update(version=99))), ValueError,
            r"format version 99", _FMT),
    Hostile("crafted-meta-not-json", _crafted(lambda a: a.update(meta=np.frombuffer(b"{not json", np.uint8))),
            ValueError, r"meta is not UTF-8 JSON", _FMT),
    # the file's own table is believed (opcodes are remapped by name): rows then read as other primitives
    Hostile("crafted-renamed-primitive", _crafted(_edit_meta(lambda m: m["primitives"].reverse())), ValueError,
            r"instruction \d+ \(\w+\)", _FMT),
    Hostile("crafted-opcode-too-large", _crafted(_set_ins(K.OP_TANH, K.C_OP, 99)), ValueError,
            r"opcode 99 is not in the primitive table", _FMT),
    Hostile("crafted-opcode-negative", _crafted(_set_ins(K.OP_TANH, K.C_OP, -1)), ValueError,
            r"opcode -1 is not in the primitive table", _FMT),
    Hostile("crafted-output-past-end", _crafted(_set_ins(K.OP_TANH, K.C_OUT, 10**6)), ValueError,
            r"instruction \d+ \(tanh\): output covers", _FMT),
    Hostile("crafted-negative-operand", _crafted(_set_ins(K.OP_TANH, K.C_A, -3)), ValueError,
            r"operand A covers \[-3", _FMT),
    Hostile("crafted-operand-size", _crafted(_set_ins(K.OP_TANH, K.C_NA, 1)), ValueError,
            r"\(tanh\): operand of size 1 for an output of size 3", _FMT),
    Hostile("crafted-huge-size", _crafted(_set_ins(K.OP_TANH, K.C_N, 2**62)), ValueError,
            r"\(tanh\): output covers", _FMT),
    Hostile("crafted-flag-bits", _crafted(_set_ins(K.OP_TANH, K.C_FLAGS, 1 << 20)), ValueError,
            r"unknown flag bits", _FMT),
    Hostile("crafted-gather-outside-pool", _crafted(_set_ins(K.OP_GATHER, K.C_P0, 0)), ValueError,
            r"\(gather\): indices \[0, 3\) outside the index pool", _FMT),
    Hostile("crafted-gather-index", _crafted(_set_aux(lambda aux: K.HEADER, 10**9)), ValueError,
            r"gather index is outside", _FMT),
    Hostile("crafted-matmul-extents", _crafted(_set_ins(K.OP_MATMUL, K.C_P2, 4)), ValueError,
            r"\(matmul\): sizes.*do not match", _FMT),
    Hostile("crafted-reduction-extents", _crafted(_set_ins(K.OP_MAX, K.C_P1, 5)), ValueError,
            r"\(max\): operand of size 3, extents 1x5x1", _FMT),
    Hostile("crafted-side-store-outside", _crafted(_set_ins(K.OP_MAX, K.C_P3, 10**9)), ValueError,
            r"\(max\): side store \[1000000000, 1000000001\) outside", _FMT),
    Hostile("crafted-side-store-uninvited", _crafted(_set_ins(K.OP_SUM, K.C_P3, 2)), ValueError,
            r"\(sum\): a side store at 2 for a primitive that keeps none", _FMT),
    Hostile("crafted-cumsum-extents", _crafted(_set_ins(K.OP_CUMSUM, K.C_P0, 2)), ValueError,
            r"\(cumsum\): operand of size 3, extents 2x3x1", _FMT),
    Hostile("crafted-broadcast-extents", _crafted(_set_ins(K.OP_BROADCAST, K.C_P1, 7)), ValueError,
            r"\(broadcast\): sizes.*do not match", _FMT),
    Hostile("crafted-header-values", _crafted(_set_aux(lambda aux: K.M_NVALS, 10**6)), ValueError,
            r"aux header says 1000000 values", _FMT),
    Hostile("crafted-guard-position", _crafted(_set_aux(lambda aux: int(aux[K.M_GUARDS]), -1)), ValueError,
            r"guard position", _FMT),
    Hostile("crafted-zero-run", _crafted(_set_aux(lambda aux: int(aux[K.M_ZEROS]) + 1, 10**9)), ValueError,
            r"zero run covers", _FMT),
    Hostile("crafted-aux-tables", _crafted(_set_aux(lambda aux: K.M_NZEROS, 10**3)), ValueError,
            r"do not tile", _FMT),
    Hostile("crafted-values-length", _crafted(lambda a: a.update(values=a["values"][:-1])), ValueError,
            r"values has \d+ entries", _FMT),
    Hostile("crafted-instruction-columns", _crafted(lambda a: a.update(ins=a["ins"][:, :-1].copy())), ValueError,
            r"ins has 13 columns", _FMT),
    Hostile("crafted-output-offset", _crafted(_edit_meta(lambda m: m["outputs"]["entries"][0].update(offset=10**6))),
            ValueError, r"outputs covers", _FMT),
    Hostile("crafted-input-offset", _crafted(_edit_meta(lambda m: m["args"][0]["leaves"][0].update(offset=-5))),
            ValueError, r"argument 0 leaf 0 offset is -5", _FMT),
    Hostile("crafted-container-kind", _crafted(_edit_meta(lambda m: m["args"][0].update(tree={"set": ["*"]}))),
            ValueError, r"unknown container kind 'set'", _FMT),
    Hostile("crafted-static-kind", _crafted(_edit_meta(lambda m: m["aux"]["entries"][0].update(
        const={"pickle": "gASVAAAA"}))), ValueError, r"unknown static value kind 'pickle'", _FMT),
    Hostile("crafted-argnums", _crafted(_edit_meta(lambda m: m.update(argnums=5))), ValueError,
            r"argnums 5 do not name arguments", _FMT),
    Hostile("crafted-slot-reference", _crafted(lambda a: a["slots"].__setitem__((-1, 6), 10**6)), ValueError,
            r"slot \d+ \w+ is 1000000", _FMT),
    Hostile("crafted-operand-slot-id", _crafted(lambda a: a["operands"].__setitem__(0, 10**6)), ValueError,
            r"operand slot id is out of range", _FMT),
]  # fmt: skip

ERROR_TABLE_PREFIX = "errors-table/"


def _all_cases() -> dict:
    from tests.test_errors import ERROR_CASES

    cases = {case.id: case for case in HOSTILE}
    for case in ERROR_CASES:
        cases[ERROR_TABLE_PREFIX + case.id] = case
    return cases


# --------------------------------------------------------------------------
# the child process
# --------------------------------------------------------------------------
def _emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _child(skip, only):
    import faulthandler

    faulthandler.enable()  # a segfault prints the Python stack to stderr
    for case_id, case in _all_cases().items():
        if case_id in skip or (only is not None and case_id not in only):
            continue
        _emit({"id": case_id, "event": "start"})
        try:
            result = case.trigger()
        except BaseException as e:  # noqa: BLE001 -- reported, judged by the parent
            mro = [f"{c.__module__}.{c.__qualname__}" for c in type(e).__mro__]
            _emit({"id": case_id, "event": "raised", "mro": mro, "message": str(e)})
            continue
        problem = None
        check = getattr(case, "check", None)
        if check is not None:
            try:
                check(result)
            except AssertionError as e:
                problem = f"check failed: {e}"
        _emit({"id": case_id, "event": "returned", "problem": problem, "result": repr(result)[:300]})
    _emit({"event": "finished"})


# --------------------------------------------------------------------------
# the parent: run the child (again after a crash), then one test per case
# --------------------------------------------------------------------------
@functools.cache
def outcomes(only=None):
    """({case id: result record}, {case id: crash report}) from child processes."""
    results, crashes, skip = {}, {}, set()
    for _ in range(20):
        proc = subprocess.run(
            [sys.executable, "-m", "tests.test_hostile_inputs"],
            input=json.dumps({"skip": sorted(skip), "only": only and list(only)}),
            cwd=ROOT,
            env={**os.environ, "FASTTAPE_TIERS": "compiled"},  # the compiled sweeps, not the executor
            capture_output=True,
            text=True,
            timeout=900,
        )
        running, finished = None, False
        for line in proc.stdout.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # something the case printed
            if record.get("event") == "start":
                running = record["id"]
            elif record.get("event") in ("raised", "returned"):
                results[record["id"]] = record
                running = None
            elif record.get("event") == "finished":
                finished = True
        if finished:
            break
        name = running or "<before the first case>"
        crashes[name] = f"the child process died (exit status {proc.returncode}); stderr:\n{proc.stderr[-2000:]}"
        if running is None:
            break
        skip = set(results) | set(crashes)
    return results, crashes


def _names(types):
    types = types if isinstance(types, tuple) else (types,)
    return [f"{t.__module__}.{t.__qualname__}" for t in types]


def _judge(case, record):
    raises = getattr(case, "raises", None) if isinstance(case, Hostile) else case.builtin
    subclass = case.subclass
    if raises is None:
        assert record["event"] == "returned", f"raised {record['mro'][0]}: {record['message']}"
        assert record["problem"] is None, record["problem"]
        return
    assert record["event"] == "raised", f"returned {record['result']} instead of raising {_names(raises)}"
    mro = record["mro"]
    assert any(n in mro for n in _names(raises)), f"raised {mro[0]}, expected {_names(raises)}: {record['message']}"
    if subclass is not None:
        assert any(n in mro for n in _names(subclass)), f"raised {mro[0]}, expected {_names(subclass)}"
    assert re.search(case.match, record["message"]), f"message {record['message']!r} does not match {case.match!r}"


def _case_ids():
    from tests.test_errors import ERROR_CASES

    return [case.id for case in HOSTILE] + [ERROR_TABLE_PREFIX + case.id for case in ERROR_CASES]


def test_table_has_enough_cases_and_unique_ids():
    ids = [case.id for case in HOSTILE]
    assert len(ids) == len(set(ids))
    assert len(HOSTILE) >= 40
    assert sum(case.raises is not None for case in HOSTILE) >= 40


@pytest.mark.parametrize("case_id", _case_ids())
def test_hostile_input(case_id):
    results, crashes = outcomes()
    if case_id in crashes:
        pytest.fail(f"case {case_id!r} crashed the interpreter: {crashes[case_id]}")
    if case_id not in results:
        pytest.fail(f"case {case_id!r} did not run: {crashes}")
    _judge(_all_cases()[case_id], results[case_id])


# --------------------------------------------------------------------------
# NaN and infinity: no exception, and the same NaN pattern in the gradient as JAX
# --------------------------------------------------------------------------
_M6 = np.arange(36.0).reshape(6, 6) / 10.0 - 1.0
NAN_FUNCTIONS = {
    "square": lambda xp, x: xp.sum(x * x),
    "exp": lambda xp, x: xp.sum(xp.exp(x)),
    "tanh-times-x": lambda xp, x: xp.sum(xp.tanh(x) * x),
    "sqrt-abs": lambda xp, x: xp.sum(xp.sqrt(xp.abs(x) + 1.0)),
    "log-square": lambda xp, x: xp.sum(xp.log(x**2 + 1.0)),
    "maximum": lambda xp, x: xp.sum(xp.maximum(x, 0.0)),
    "quadratic-form": lambda xp, x: x @ (_M6 @ x),
    "prod": lambda xp, x: xp.prod(x),
    "cumsum": lambda xp, x: xp.sum(xp.cumsum(x) ** 2),
    "where": lambda xp, x: xp.sum(xp.where(x > 0, x, 2.0 * x)),
    "reversed": pytest.param(
        lambda xp, x: xp.sum(xp.sin(x)[::-1] * x),
        marks=pytest.mark.skipif(
            numba.config.DISABLE_JIT,
            reason="without the JIT the sweeps call Python's math.sin, which raises on inf (compiled code gives NaN)",
        ),
    ),
    "mean-var": lambda xp, x: xp.mean(x) + xp.var(x),
    "reciprocal": lambda xp, x: xp.sum(1.0 / (x * x + 1.0)),
    "arctan2": lambda xp, x: xp.sum(xp.arctan2(x, 2.0)),
    "hypot": lambda xp, x: xp.sum(xp.hypot(x, 1.0)),
    "logaddexp": lambda xp, x: xp.sum(xp.logaddexp(x, 0.5)),
    "clip": lambda xp, x: xp.sum(xp.clip(x, -1.0, 1.0) ** 2),
    "norm": lambda xp, x: xp.linalg.norm(x),
    "max": lambda xp, x: xp.max(x),
}
NAN_INPUTS = [
    np.array([np.nan, 1.0, -2.0, np.inf, -np.inf, 0.5]),
    np.array([1.0, np.inf, 2.0, 3.0, -1.0, 0.1]),
    np.full(6, np.nan),
    np.array([-np.inf, 1.0, 2.0, 3.0, -1.0, 0.1]),
]


@pytest.mark.parametrize("fn", list(NAN_FUNCTIONS.values()), ids=list(NAN_FUNCTIONS))
def test_nan_and_inf_propagate_as_in_jax(fn):
    import jax
    import jax.numpy as jnp

    grad = ft.grad(functools.partial(fn, np))
    for x in NAN_INPUTS:
        with np.errstate(all="ignore"):
            ours = grad(x)
        theirs = np.asarray(jax.grad(functools.partial(fn, jnp))(x))
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"NaN pattern at {x}")
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0, equal_nan=True, err_msg=f"at {x}")


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="without the JIT nothing is compiled")
def test_converted_inputs_do_not_recompile_the_kernels():
    """float32, float16, big-endian, read-only and strided inputs are copied into the tape's float64
    buffer: the compiled entry point sees the same types, so Numba compiles nothing new."""
    g = ft.value_and_grad(_sumsq)
    g(X3)
    before = len(K.run_value_and_grad.signatures)
    for x in (X3.astype(np.float32), X3.astype(np.float16), X3.astype(">f8"), _readonly(X3), np.arange(6.0)[::2]):
        value, grad = g(x)
        assert type(value) is np.float64 and grad.dtype == np.float64
    assert len(K.run_value_and_grad.signatures) == before
    assert len(g.cache) == 1


def test_the_runner_names_a_case_that_crashes(monkeypatch):
    """A child that dies in the middle of a case is reported as that case crashing (and the rest still run)."""
    monkeypatch.setenv("FASTTAPE_HOSTILE_CRASH", "tape-none")
    results, crashes = outcomes.__wrapped__(("tape-object-array", "tape-none", "tape-0d-for-vector"))
    assert list(crashes) == ["tape-none"] and "exit status -9" in crashes["tape-none"]
    assert sorted(results) == ["tape-0d-for-vector", "tape-object-array"]


if __name__ == "__main__":
    crash_id = os.environ.get("FASTTAPE_HOSTILE_CRASH")
    if crash_id:  # for the runner's own test: die hard inside one case
        for i, case in enumerate(HOSTILE):
            if case.id == crash_id:
                HOSTILE[i] = Hostile(case.id, lambda: os.kill(os.getpid(), signal.SIGKILL), None)
    request = json.loads(sys.stdin.read())
    _child(set(request["skip"]), request["only"] and set(request["only"]))
