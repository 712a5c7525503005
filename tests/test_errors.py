"""Bad input gets a clear error and loses nothing.

``ERROR_CASES`` is one table: every entry is a zero-argument callable that must
raise an exception of a builtin family (TypeError, ValueError,
NotImplementedError), where one exists also fasttape's own subclass from
:mod:`fasttape.errors`, with a message that names the problem and the fix
(checked with a regular expression, as ``pytest.raises(..., match=...)``).

The table is reusable on its own (for example from a subprocess runner that
checks no case crashes the interpreter): import ``ERROR_CASES`` and call
``case.trigger()``.  Most traced-function cases go through the *same*
transformed objects (``shared()``), so that :func:`test_error_loses_nothing`
can check after each case that those objects still give correct results.
"""

from __future__ import annotations

import functools
import math
import re
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import fasttape as ft
from fasttape.errors import (
    BranchChangedError,
    ConcretizationError,
    InputSignatureError,
    InputTypeError,
    NonScalarOutputError,
    TracerLeakError,
    TracerMutationError,
    UnsupportedFunctionError,
    UnsupportedMethodError,
)

# the builtins a caller catches; IndexError where NumPy raises it (an index of the wrong type or out of range)
BUILTIN_FAMILIES = (TypeError, ValueError, NotImplementedError, IndexError)

X3 = np.array([0.5, -1.0, 2.0])
Y3 = np.array([1.5, 0.25, -3.0])
XM = np.array([[1.0, 2.0, 0.5], [-1.0, 0.5, 3.0]])  # a 2x3 matrix
SQ = np.array([[2.0, 0.5], [0.25, 3.0]])  # an invertible 2x2 matrix
P = {"w": X3, "b": Y3}


@dataclass(frozen=True)
class ErrorCase:
    """One bad input: ``trigger()`` must raise ``builtin`` (and ``subclass``) matching ``match``."""

    id: str
    trigger: Callable[[], object]
    builtin: type[BaseException] | tuple[type[BaseException], ...]
    subclass: type[BaseException] | tuple[type[BaseException], ...] | None
    match: str


# --------------------------------------------------------------------------
# functions under test
# --------------------------------------------------------------------------
def loss(x, body):
    """Shared traced function: ``body`` is a static argument choosing what runs on the tracer."""
    return body(x)


def _valid(x):
    return np.sum(np.tanh(x) * x)


def _valid_grad(x):
    t = np.tanh(x)
    return t + x * (1.0 - t * t)


def _dot2(x, y):
    return np.sum(x * y)


def _weighted(p, n):
    return np.sum(p["w"] * p["b"]) * n


def _square(x):
    return x * x


def _cube_sum(y):
    return np.sum(y**3)


def _branchy(x):
    """Traceable on the x[0] > 0 branch; the other branch uses an unsupported function."""
    if x[0] > 0:
        return np.sum(x * x)
    return np.sum(np.unique(x))


@functools.cache
def shared():
    """Transformed objects that every case may hit and that must keep working afterwards."""
    out, vjp_fn = ft.vjp(_square, X3)
    return types.SimpleNamespace(
        grad=ft.grad(loss),
        value_and_grad=ft.value_and_grad(loss),
        tape=ft.trace(_dot2, X3, Y3, argnums=(0, 1)),
        tree_tape=ft.trace(_weighted, P, 2),
        branch_tape=ft.trace(_branchy, X3),
        vjp_out=out,
        vjp_fn=vjp_fn,
    )


def in_grad(body, x=X3):
    """A trigger that runs ``body`` on a tracer inside the shared ``grad``."""
    return lambda: shared().grad(x, body)


# -- bodies that need statements ---------------------------------------------
def _assign_into_tracer(x):
    x[x > 0] = x * 2.0  # as many values as the mask selects: a number that depends on the inputs
    return np.sum(x)


def _in_place_method(call):
    """A body that calls one of ndarray's in-place methods on the tracer, then uses it."""

    def body(x):
        call(x)
        return np.sum(x)

    return body


def _assign_traced_into_numpy(x):
    a = np.zeros(3)
    a[0] = x[0]
    return np.sum(a * x)


def _assign_traced_slice_into_numpy(x):
    a = np.zeros(3)
    a[:] = x
    return np.sum(a)


def _ufunc_out(x):
    buf = np.zeros(3)
    np.add(x, 1.0, out=buf)
    return np.sum(buf)


def _positional_out(x):
    buf = np.zeros(3)
    np.exp(x, buf)
    return np.sum(buf)


def _reduction_out(x):
    buf = np.zeros(())
    np.sum(x, out=buf)
    return buf


def _add_at_tracer(x):
    np.divide.at(x, [0], 2.0)  # add, subtract, multiply, minimum and maximum are recorded
    return np.sum(x)


def _add_at_numpy(x):
    buf = np.zeros(3)
    np.add.at(buf, [0], x[0])
    return np.sum(buf)


def _if_on_vector(x):
    if x > 0:
        return np.sum(x)
    return -np.sum(x)


def _range_of_tracer(x):
    total = 0.0
    for _ in range(x[2]):
        total = total + x[0]
    return total


def _inner_tracer_kept():
    kept = []

    def _stash(y):
        kept.append(y * 2.0)
        return np.sum(y**2)

    return ft.grad(lambda x: np.sum(ft.grad(_stash)(x) * kept[0]))(X3)


def _finished_trace_passed_to_grad():
    box = []
    ft.grad(_leak(box))(X3)
    return ft.grad(_cube_sum)(box[0])


def _nested_integer_argnum(x):
    return ft.grad(lambda k: np.sum(k * 1.0))(np.argsort(x))


def _unsupported_on_second_branch():
    shared().grad(X3, _branchy)  # records the supported branch
    return shared().grad(-X3, _branchy)  # re-traces into np.unique


# -- tracers that escape their trace -------------------------------------------
def _leak(box):
    def keep(x):
        box.append(x)
        return np.sum(x)

    return keep


def _leak_into_later_trace():
    box = []
    ft.grad(_leak(box))(X3)
    return shared().grad(X3, lambda x: np.sum(x * box[0]))


def _leak_used_outside():
    box = []
    ft.grad(_leak(box))(X3)
    return box[0] * 2.0


def _leak_returned_as_aux():
    box = []
    ft.grad(_leak(box))(X3)
    return ft.value_and_grad(lambda x: (np.sum(x), box[0]), has_aux=True)(X3)


def _leak_from_failed_trace_used_outside():
    box = []

    def keep_then_fail(x):
        box.append(x)
        return np.sum(np.unique(x))

    try:
        ft.grad(keep_then_fail)(X3)
    except NotImplementedError:
        pass
    return box[0] * 2.0


def _multi_output_cotangent():
    _, vjp_fn = ft.vjp(lambda x: (x * 2.0, np.sum(x)), X3)
    return vjp_fn((np.ones(3), np.ones(2)))


def _unsupported(name, body, x=X3):
    """A case for a NumPy function fasttape does not trace: the message must name ``numpy.<name>``."""
    return ErrorCase(
        f"unsupported-{name}",
        in_grad(body, x),
        NotImplementedError,
        UnsupportedFunctionError,
        rf"\bnumpy\.{re.escape(name)}(?![\w.])",
    )


_ANY_FIX = r"(np\.stack|np\.concatenate|np\.where|return the traced value)"

# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------
ERROR_CASES = [
    # -- grad of a non-scalar function ----------------------------------------------------------
    ErrorCase(
        "nonscalar-shape3",
        in_grad(lambda x: x * 2.0),
        TypeError,
        NonScalarOutputError,
        r"scalar output.*shape \(3,\).*ft\.vjp",
    ),
    ErrorCase(
        "nonscalar-tuple",
        in_grad(lambda x: (np.sum(x), np.sum(x * x))),
        TypeError,
        NonScalarOutputError,
        r"scalar output.*container of 2 arrays.*ft\.vjp",
    ),
    ErrorCase(
        "nonscalar-value_and_grad",
        lambda: shared().value_and_grad(XM, lambda m: m.sum(axis=0)),
        TypeError,
        NonScalarOutputError,
        r"shape \(3,\).*ft\.vjp",
    ),
    ErrorCase(
        "nonscalar-tape-grad",
        lambda: ft.trace(_square, X3).grad(X3),
        TypeError,
        NonScalarOutputError,
        r"shape \(3,\).*ft\.vjp",
    ),
    # -- inputs that cannot be differentiated -------------------------------------------------------
    ErrorCase(
        "input-int-array",
        lambda: shared().grad(np.arange(3), _valid),
        TypeError,
        InputTypeError,
        r"dtype int64.*dtype=float",
    ),
    ErrorCase(
        "input-bool-array",
        lambda: shared().grad(np.array([True, False, True]), _valid),
        TypeError,
        InputTypeError,
        r"dtype bool.*dtype=float",
    ),
    ErrorCase(
        "input-complex-array",
        lambda: shared().grad(X3 + 1j, _valid),
        TypeError,
        InputTypeError,
        r"dtype complex128.*dtype=float",
    ),
    ErrorCase(
        "input-python-int",
        lambda: shared().grad(3, _valid),
        TypeError,
        InputTypeError,
        r"dtype int\b.*dtype=float",
    ),
    ErrorCase(
        "input-python-str",
        lambda: shared().grad("abc", _valid),
        TypeError,
        InputTypeError,
        r"dtype str\b.*dtype=float",
    ),
    ErrorCase(
        "input-int-leaf-in-dict",
        lambda: shared().grad({"w": 1}, lambda p: p["w"] * 2.0),
        TypeError,
        InputTypeError,
        r"arg0\['w'\].*dtype int\b.*dtype=float",
    ),
    ErrorCase(
        "input-int-array-to-tape",
        lambda: shared().tape.grad(np.arange(3), Y3),
        TypeError,
        InputTypeError,
        r"arg0 has dtype int64.*dtype=float",
    ),
    ErrorCase(
        "input-int-array-to-vjp",
        lambda: ft.vjp(_square, np.arange(3)),
        TypeError,
        InputTypeError,
        r"dtype int64.*dtype=float",
    ),
    ErrorCase(
        "complex-constant-in-trace",
        in_grad(lambda x: np.sum(x * (1.0 + 2.0j))),
        TypeError,
        None,
        r"complex.*real and imaginary parts",
    ),
    # -- NumPy functions fasttape does not trace --------------------------------------------------------
    _unsupported("unique", lambda x: np.sum(np.unique(x))),
    _unsupported("lexsort", lambda x: np.sum(x[np.lexsort((x, x))])),
    _unsupported("nancumprod", lambda x: np.sum(np.nancumprod(x))),
    _unsupported("nanmedian", lambda x: np.nanmedian(x)),
    _unsupported("bincount", lambda x: np.sum(np.bincount(np.array([0, 1, 1]), weights=x))),
    _unsupported("linalg.tensorsolve", lambda m: np.sum(np.linalg.tensorsolve(m, np.ones(2))), SQ),
    _unsupported("linalg.eig", lambda m: np.sum(np.linalg.eig(m)[0]), SQ),
    _unsupported("linalg.eigvals", lambda m: np.sum(np.linalg.eigvals(m)), SQ),
    _unsupported("fft.fft", lambda x: np.sum(np.fft.fft(x).real)),
    _unsupported("add.outer", lambda x: np.sum(np.add.outer(x, x))),
    _unsupported("add.reduceat", lambda x: np.sum(np.add.reduceat(x, [0, 2]))),
    _unsupported("logaddexp.accumulate", lambda x: np.sum(np.logaddexp.accumulate(x))),
    ErrorCase(
        "unsupported-second-branch",
        _unsupported_on_second_branch,
        NotImplementedError,
        UnsupportedFunctionError,
        r"\bnumpy\.unique\b",
    ),
    ErrorCase(
        "unsupported-where-one-argument",
        in_grad(lambda x: np.sum(np.where(x > 0))),
        NotImplementedError,
        UnsupportedFunctionError,
        r"numpy\.where\(condition\).*np\.where\(condition, x, y\)",
    ),
    ErrorCase(
        "unsupported-reduction-where-kwarg",
        in_grad(lambda x: np.sum(np.any(x > 0, where=x > 1))),
        NotImplementedError,
        UnsupportedFunctionError,
        r"numpy\.any\(\.\.\., where=\.\.\.\).*np\.where",
    ),
    ErrorCase(
        "unsupported-ufunc-where-kwarg",
        in_grad(lambda x: np.sum(np.exp(x, where=x > 0))),
        NotImplementedError,
        UnsupportedFunctionError,
        r"numpy\.exp\b.*where.*np\.where",  # the fix: select with np.where after the call
    ),
    ErrorCase(
        "unsupported-round-decimals",
        in_grad(lambda x: np.sum(np.round(x, 2))),
        NotImplementedError,
        UnsupportedFunctionError,
        r"numpy\.round\b.*decimals.*np\.round\(",  # the fix: np.round(x * 10**d) / 10**d
    ),
    ErrorCase(
        "svd-full-matrices-of-a-non-square-matrix",
        in_grad(lambda m: np.sum(np.linalg.svd(m)[0]), XM),
        NotImplementedError,
        None,
        r"svd with full_matrices=True of a 2x3 matrix.*Pass full_matrices=False",
    ),
    ErrorCase(
        "qr-householder-reflectors",
        in_grad(lambda m: np.sum(np.linalg.qr(m, mode="raw")[0]), XM),
        NotImplementedError,
        None,
        r"qr\(mode='raw'\).*Use mode='reduced'",
    ),
    ErrorCase(
        "matrix-norm-of-an-unknown-order",
        in_grad(lambda m: np.linalg.norm(m, ord=3), XM),
        ValueError,
        None,
        r"Invalid norm order for matrices",
    ),
    # -- concrete values asked of a tracer -------------------------------------------------------------
    ErrorCase(
        "concretize-np-asarray",
        in_grad(lambda x: np.sum(np.asarray(x))),
        TypeError,
        ConcretizationError,
        r"np\.asarray.*traced array.*" + _ANY_FIX,
    ),
    ErrorCase(
        "concretize-np-array-of-tracers",
        in_grad(lambda x: np.sum(np.array([x[0], x[1]]))),
        TypeError,
        ConcretizationError,
        r"np\.array.*traced array.*np\.stack",
    ),
    ErrorCase(
        "concretize-float",
        in_grad(lambda x: float(x[0])),
        TypeError,
        ConcretizationError,
        r"float\(\) of a traced array.*" + _ANY_FIX,
    ),
    ErrorCase(
        "concretize-int",
        in_grad(lambda x: int(x[0]) * x[1]),
        TypeError,
        ConcretizationError,
        r"int\(\) of a traced array.*" + _ANY_FIX,
    ),
    ErrorCase(
        "concretize-complex",
        in_grad(lambda x: complex(x[0])),
        TypeError,
        ConcretizationError,
        r"complex\(\) of a traced array",
    ),
    ErrorCase(
        "concretize-item",
        in_grad(lambda x: x[0].item()),
        TypeError,
        ConcretizationError,
        r"\.item\(\) of a traced array.*" + _ANY_FIX,
    ),
    ErrorCase(
        "concretize-tolist",
        in_grad(lambda x: sum(x.tolist())),
        TypeError,
        ConcretizationError,
        r"\.tolist\(\) of a traced array",
    ),
    ErrorCase(
        "concretize-math-exp",
        in_grad(lambda x: math.exp(x[0])),
        TypeError,
        ConcretizationError,
        r"float\(\) of a traced array",
    ),
    ErrorCase(
        "astype-complex",
        in_grad(lambda x: np.sum(x.astype(complex))),
        TypeError,
        None,
        r"astype\(complex128\).*use float, int or bool",
    ),
    ErrorCase(
        "concretize-range-bound",
        in_grad(_range_of_tracer),
        TypeError,
        ConcretizationError,
        r"range\(\).*traced array",
    ),
    ErrorCase(
        "concretize-index-into-list",
        in_grad(lambda x: [1.0, 2.0, 3.0][x[2]] * x[0]),
        TypeError,
        ConcretizationError,
        r"index.*traced array",
    ),
    ErrorCase(
        "concretize-slice-bound",
        in_grad(lambda x: np.sum(x[: x[2]])),
        TypeError,
        ConcretizationError,
        r"index.*traced array",
    ),
    ErrorCase(
        "index-with-traced-floats",
        in_grad(lambda x: x[x[2]]),
        IndexError,
        None,
        r"integer \(or boolean\) type.*astype\(int\)",
    ),
    ErrorCase(
        "concretize-index-into-numpy-array",
        in_grad(lambda x: np.arange(3.0)[x[0]] * x[1]),
        TypeError,
        ConcretizationError,
        r"plain NumPy array was indexed.*fasttape\.numpy\.take",
    ),
    # -- boolean masks and truth values -------------------------------------------------------------------
    ErrorCase(
        "mask-traced-boolean-index",
        in_grad(lambda x: np.sum(x[x > 0])),
        TypeError,
        None,
        r"traced.*mask.*np\.where",
    ),
    ErrorCase(
        "mask-traced-boolean-index-into-numpy",
        in_grad(lambda x: np.sum(np.arange(3.0)[x > 0])),
        TypeError,
        None,
        r"traced.*np\.where",
    ),
    ErrorCase(
        "bool-of-vector",
        in_grad(_if_on_vector),
        ValueError,
        None,
        r"truth value of a traced array with 3 elements.*any\(\).*all\(\)",
    ),
    # -- mutation -----------------------------------------------------------------------------------------
    ErrorCase(
        "mutate-item-assignment",
        in_grad(_assign_into_tracer),
        TypeError,
        ConcretizationError,
        r"x\[mask\] = v with a traced mask.*single value.*np\.where",
    ),
    *(
        ErrorCase(
            f"mutate-in-place-method-{name}",
            in_grad(_in_place_method(call)),
            TypeError,
            TracerMutationError,
            rf"x\.{name}\(\) changes the array in place.*" + fix,
        )
        for name, call, fix in (
            ("fill", lambda x: x.fill(0.0), r"np\.full\(x\.shape, value\)"),
            ("resize", lambda x: x.resize((4,)), r"x\.reshape\(shape\).*np\.concatenate"),
            ("put", lambda x: x.put([0], [1.0]), r"np\.where"),
            ("itemset", lambda x: x.itemset(0, 1.0), r"np\.where"),
        )
    ),
    ErrorCase(
        "unsupported-ndarray-method",
        in_grad(lambda x: np.sum(x.nonzero()[0])),
        NotImplementedError,
        UnsupportedMethodError,
        r"ndarray\.nonzero is not supported.*fasttape\.numpy\.__all__.*outside the traced function",
    ),
    ErrorCase(
        "mutate-traced-value-into-numpy",
        in_grad(_assign_traced_into_numpy),
        TypeError,
        (TracerMutationError, ConcretizationError),
        r"traced.*" + _ANY_FIX,
    ),
    ErrorCase(
        "mutate-traced-slice-into-numpy",
        in_grad(_assign_traced_slice_into_numpy),
        TypeError,
        TracerMutationError,
        r"plain NumPy array cannot receive traced values.*np\.zeros_like\(traced\)",
    ),
    ErrorCase(
        "mutate-ufunc-out",
        in_grad(_ufunc_out),
        TypeError,
        TracerMutationError,
        r"numpy\.add\(\.\.\., out=\.\.\.\).*return",
    ),
    ErrorCase(
        "mutate-ufunc-positional-out",
        in_grad(_positional_out),
        TypeError,
        TracerMutationError,
        r"numpy\.exp\(\.\.\., out=\.\.\.\).*return",
    ),
    ErrorCase(
        "mutate-reduction-out",
        in_grad(_reduction_out),
        TypeError,
        TracerMutationError,
        r"numpy\.sum\(\.\.\., out=\.\.\.\).*return value",
    ),
    # ufunc.at is an in-place scatter: fasttape files the ones it cannot record with item assignment
    ErrorCase(
        "mutate-add-at-tracer",
        in_grad(_add_at_tracer),
        TypeError,
        TracerMutationError,
        r"\bnumpy\.divide\.at\b.*new array",
    ),
    ErrorCase(
        "mutate-add-at-numpy-buffer",
        in_grad(_add_at_numpy),
        TypeError,
        TracerMutationError,
        r"\bnumpy\.add\.at\b.*plain NumPy array.*zeros_like",
    ),
    # -- Tape signature -------------------------------------------------------------------------------------
    ErrorCase(
        "tape-wrong-shape",
        lambda: shared().tape.grad(np.ones(4), Y3),
        ValueError,
        InputSignatureError,
        r"arg0 of '_dot2' has shape \(4,\).*recorded with shape \(3,\).*ft\.grad",
    ),
    ErrorCase(
        "tape-wrong-shape-second-argument",
        lambda: shared().tape(X3, np.ones((3, 1))),
        ValueError,
        InputSignatureError,
        r"arg1 of '_dot2' has shape \(3, 1\).*recorded with shape \(3,\)",
    ),
    ErrorCase(
        "tape-wrong-leaf-shape",
        lambda: shared().tree_tape.grad({"w": X3, "b": np.ones(2)}, 2),
        ValueError,
        InputSignatureError,
        r"arg0\['b'\] of '_weighted' has shape \(2,\).*recorded with shape \(3,\)",
    ),
    ErrorCase(
        "tape-too-few-arguments",
        lambda: shared().tape.grad(X3),
        TypeError,
        None,
        r"recorded with 2 positional arguments, got 1",
    ),
    ErrorCase(
        "tape-too-many-arguments",
        lambda: shared().tape(X3, Y3, X3),
        TypeError,
        None,
        r"recorded with 2 positional arguments, got 3",
    ),
    ErrorCase(
        "tape-wrong-structure-missing-key",
        lambda: shared().tree_tape.grad({"w": X3}, 2),
        ValueError,
        InputSignatureError,
        r"argument 0 of '_weighted' has structure .*'w'.*recorded with .*'b'.*'w'",
    ),
    ErrorCase(
        "tape-wrong-structure-list-for-array",
        lambda: shared().tape.grad([0.5, -1.0, 2.0], Y3),
        ValueError,
        InputSignatureError,
        r"argument 0 of '_dot2' has structure .*\[\*, \*, \*\].*recorded with",
    ),
    ErrorCase(
        "tape-static-argument-changed",
        lambda: shared().tree_tape.grad(P, 3),
        ValueError,
        InputSignatureError,
        r"arg1 of '_weighted' is a static .*recorded as 2, got 3.*ft\.grad",
    ),
    ErrorCase(
        "tape-branch-changed",
        lambda: shared().branch_tape(-X3),
        ValueError,
        BranchChangedError,
        r"different branch.*ft\.grad",
    ),
    ErrorCase(
        "grad-missing-positional-argument",
        lambda: shared().grad(X3),
        TypeError,
        None,
        r"missing 1 required positional argument: 'body'",
    ),
    ErrorCase(
        "grad-no-arguments",
        lambda: shared().grad(),
        TypeError,
        None,
        r"needs at least one positional argument",
    ),
    ErrorCase(
        "vjp-no-primals",
        lambda: ft.vjp(_square),
        TypeError,
        None,
        r"needs at least one positional argument",
    ),
    # -- has_aux ---------------------------------------------------------------------------------------------
    ErrorCase(
        "has_aux-not-a-pair",
        lambda: ft.grad(loss, has_aux=True)(X3, _valid),
        TypeError,
        None,
        r"has_aux=True.*must return a pair.*got Tracer",
    ),
    ErrorCase(
        "has_aux-triple",
        lambda: ft.grad(loss, has_aux=True)(X3, lambda x: (np.sum(x), 1.0, 2.0)),
        TypeError,
        None,
        r"has_aux=True.*must return a pair.*got tuple",
    ),
    ErrorCase(
        "has_aux-vjp-not-a-pair",
        lambda: ft.vjp(_square, X3, has_aux=True),
        TypeError,
        None,
        r"has_aux=True.*must return a pair",
    ),
    # -- argnums ---------------------------------------------------------------------------------------------
    ErrorCase(
        "argnums-out-of-range",
        lambda: ft.grad(loss, argnums=2)(X3, _valid),
        ValueError,
        None,
        r"argnums 2 is out of bounds for a call with 2 positional arguments",
    ),
    ErrorCase(
        "argnums-negative-out-of-range",
        lambda: ft.grad(_dot2, argnums=-3)(X3, Y3),
        ValueError,
        None,
        r"argnums -3 is out of bounds",
    ),
    ErrorCase(
        "argnums-duplicated",
        lambda: ft.grad(_dot2, argnums=(0, 0))(X3, Y3),
        ValueError,
        None,
        r"argnums \(0, 0\) names an argument twice",
    ),
    ErrorCase(
        "argnums-duplicated-negative",
        lambda: ft.grad(_dot2, argnums=(1, -1))(X3, Y3),
        ValueError,
        None,
        r"argnums \(1, -1\) names an argument twice",
    ),
    ErrorCase(
        "argnums-empty",
        lambda: ft.grad(_dot2, argnums=())(X3, Y3),
        ValueError,
        None,
        r"argnums must name at least one argument",
    ),
    ErrorCase(
        "argnums-str",
        lambda: ft.grad(_dot2, argnums="0")(X3, Y3),
        TypeError,
        None,
        r"argnums must be an int or a tuple of ints, got '0'",
    ),
    ErrorCase(
        "argnums-float",
        lambda: ft.grad(_dot2, argnums=0.0)(X3, Y3),
        TypeError,
        None,
        r"argnums must be an int or a tuple of ints, got 0\.0",
    ),
    ErrorCase(
        "argnums-bool",
        lambda: ft.grad(_dot2, argnums=True)(X3, Y3),
        TypeError,
        None,
        r"argnums must be an int or a tuple of ints, got True",
    ),
    ErrorCase(
        "argnums-tuple-with-str",
        lambda: ft.grad(_dot2, argnums=(0, "1"))(X3, Y3),
        TypeError,
        None,
        r"argnums must be an int or a tuple of ints",
    ),
    ErrorCase(
        "argnums-trace-out-of-range",
        lambda: ft.trace(_dot2, X3, Y3, argnums=2),
        ValueError,
        None,
        r"trace: argnums 2 is out of bounds",
    ),
    # -- not callable ------------------------------------------------------------------------------------------
    ErrorCase("not-callable-grad", lambda: ft.grad(3.0), TypeError, None, r"grad expects a callable, got float"),
    ErrorCase(
        "not-callable-value_and_grad",
        lambda: ft.value_and_grad("f"),
        TypeError,
        None,
        r"value_and_grad expects a callable, got str",
    ),
    ErrorCase("not-callable-vjp", lambda: ft.vjp(3, X3), TypeError, None, r"vjp expects a callable, got int"),
    ErrorCase(
        "not-callable-trace", lambda: ft.trace(None, X3), TypeError, None, r"trace expects a callable, got NoneType"
    ),
    # -- return values -------------------------------------------------------------------------------------------
    ErrorCase(
        "returns-none",
        in_grad(lambda x: None),
        TypeError,
        None,
        r"returned a value of type NoneType.*float arrays",
    ),
    ErrorCase(
        "returns-str",
        in_grad(lambda x: "loss"),
        TypeError,
        None,
        r"returned a value of type str.*float arrays",
    ),
    ErrorCase(
        "broadcast-mismatch",
        in_grad(lambda x: np.sum(x + np.ones(4))),
        ValueError,
        None,
        r"could not be broadcast.*\(3,\).*\(4,\)",
    ),
    # -- tracers escaping their trace ----------------------------------------------------------------------------
    ErrorCase(
        "leak-into-later-trace",
        _leak_into_later_trace,
        TypeError,
        TracerLeakError,
        r"(finished|another).*trace",
    ),
    ErrorCase(
        "leak-used-outside-any-trace",
        _leak_used_outside,
        TypeError,
        TracerLeakError,
        r"trace that has finished.*escape",
    ),
    ErrorCase(
        "leak-returned-as-aux",
        _leak_returned_as_aux,
        TypeError,
        TracerLeakError,
        r"(finished|another).*trace",
    ),
    ErrorCase(
        "leak-from-failed-trace-used-outside",
        _leak_from_failed_trace_used_outside,
        TypeError,
        TracerLeakError,
        r"(finished|another).*trace",
    ),
    # -- nested transformations ----------------------------------------------------------------------------------
    ErrorCase(
        "nested-grad-of-vector-gradient",
        lambda: ft.grad(ft.grad(_cube_sum))(X3),
        TypeError,
        NonScalarOutputError,
        r"scalar output.*\(3,\)",
    ),
    ErrorCase(
        "nested-inner-tracer-used-after-return",
        _inner_tracer_kept,
        TypeError,
        TracerLeakError,
        r"created inside grad of .*_stash.*\(level 1\).*used after that transformation returned, in the trace of",
    ),
    ErrorCase(
        "nested-finished-trace-passed-to-transformation",
        _finished_trace_passed_to_grad,
        TypeError,
        TracerLeakError,
        r"the trace of .*a trace that has finished.*passed to a transformation",
    ),
    ErrorCase(
        "nested-integer-argument-differentiated",
        lambda: shared().grad(X3, _nested_integer_argnum),
        TypeError,
        InputTypeError,
        r"arg0 \(in argnums\) is a traced int64 array.*only real floating-point",
    ),
    # -- vjp_fn cotangents ------------------------------------------------------------------------------------------
    ErrorCase(
        "cotangent-wrong-shape",
        lambda: shared().vjp_fn(np.ones(4)),
        ValueError,
        InputSignatureError,
        r"cotangent has shape \(4,\).*output it pairs with has shape \(3,\)",
    ),
    ErrorCase(
        "cotangent-wrong-structure",
        lambda: shared().vjp_fn((np.ones(3),)),
        ValueError,
        InputSignatureError,
        r"cotangent has structure .*output has structure",
    ),
    ErrorCase(
        "cotangent-complex",
        lambda: shared().vjp_fn(np.ones(3) + 1j),
        TypeError,
        InputTypeError,
        r"cotangent has dtype complex128.*dtype=float",
    ),
    ErrorCase(
        "cotangent-wrong-shape-second-output",
        _multi_output_cotangent,
        ValueError,
        InputSignatureError,
        r"cotangent has shape \(2,\).*output it pairs with has shape \(\)",
    ),
]

CASE_PARAMS = [pytest.param(case, id=case.id) for case in ERROR_CASES]


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------
def test_table_is_well_formed():
    ids = [case.id for case in ERROR_CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for case in ERROR_CASES:
        builtins = case.builtin if isinstance(case.builtin, tuple) else (case.builtin,)
        assert all(issubclass(b, BUILTIN_FAMILIES) for b in builtins), case.id
        re.compile(case.match)
        if case.subclass is not None:
            subs = case.subclass if isinstance(case.subclass, tuple) else (case.subclass,)
            assert all(issubclass(s, case.builtin) for s in subs), case.id


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_error_case(case):
    """The right builtin family, fasttape's own subclass, and a message naming the problem and the fix."""
    with pytest.raises(case.builtin, match=case.match) as info:
        case.trigger()
    assert isinstance(info.value, BUILTIN_FAMILIES)
    if case.subclass is not None:
        assert isinstance(info.value, case.subclass), (
            f"{type(info.value).__name__} is not a {case.subclass}: {info.value}"
        )


_API_REFERENCES = [
    (re.compile(r"\bft\.((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)"), ft),
    (re.compile(r"\bfasttape\.((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)"), ft),
    (re.compile(r"\bnp\.((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)"), np),
]


def test_unsupported_ndarray_attributes_are_attribute_errors_too():
    """hasattr / getattr with a default treat them as absent, as they do on any object that lacks one;
    the in-place methods exist (as on an ndarray) and raise only when called."""
    seen = {}

    def body(x):
        seen["hasattr"] = (hasattr(x, "nonzero"), hasattr(x, "flags"), hasattr(x, "no_such_name"), hasattr(x, "fill"))
        seen["default"] = getattr(x, "nonzero", None)
        with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
            _ = x.no_such_name
        return np.sum(x * x)

    np.testing.assert_allclose(ft.grad(body)(X3), 2.0 * X3)
    assert seen == {"hasattr": (False, False, False, True), "default": None}


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_message_points_to_existing_api(case):
    """A fix that names ``ft.something`` or ``np.something`` must name something that exists."""
    try:
        case.trigger()
    except Exception as exc:  # the type is test_error_case's business
        message = str(exc)
    else:
        pytest.fail(f"{case.id} did not raise")
    missing = []
    for pattern, module in _API_REFERENCES:
        for dotted in pattern.findall(message):
            obj = module
            for part in dotted.split("."):
                if not hasattr(obj, part):
                    missing.append(f"{module.__name__}.{dotted}")
                    break
                obj = getattr(obj, part)
    assert not missing, f"the message points to {missing}, which do not exist: {message}"


def _check_shared_objects_still_work():
    s = shared()
    expected = _valid_grad(X3)
    fresh = ft.grad(loss)(X3, _valid)
    np.testing.assert_allclose(fresh, expected, rtol=1e-12)
    np.testing.assert_allclose(s.grad(X3, _valid), fresh, rtol=1e-12, atol=0)
    value, g = s.value_and_grad(X3, _valid)
    np.testing.assert_allclose(value, _valid(X3), rtol=1e-12)
    np.testing.assert_allclose(g, fresh, rtol=1e-12, atol=0)
    np.testing.assert_allclose(s.grad(X3, _branchy), 2.0 * X3, rtol=1e-12)

    gx, gy = s.tape.grad(X3, Y3)
    np.testing.assert_allclose(gx, Y3, rtol=1e-12)
    np.testing.assert_allclose(gy, X3, rtol=1e-12)
    np.testing.assert_allclose(s.tape(X3, Y3), np.sum(X3 * Y3), rtol=1e-12)
    fresh_x, fresh_y = ft.trace(_dot2, X3, Y3, argnums=(0, 1)).grad(X3, Y3)
    np.testing.assert_array_equal(gx, fresh_x)
    np.testing.assert_array_equal(gy, fresh_y)

    tree = s.tree_tape.grad(P, 2)
    np.testing.assert_allclose(tree["w"], 2 * Y3, rtol=1e-12)
    np.testing.assert_allclose(tree["b"], 2 * X3, rtol=1e-12)
    np.testing.assert_allclose(s.branch_tape(X3), np.sum(X3 * X3), rtol=1e-12)

    ct = np.array([1.0, -2.0, 0.5])
    (pulled,) = s.vjp_fn(ct)
    np.testing.assert_allclose(pulled, 2.0 * X3 * ct, rtol=1e-12)
    np.testing.assert_allclose(s.vjp_out, X3 * X3, rtol=1e-12)
    out, fresh_fn = ft.vjp(_square, X3)
    np.testing.assert_allclose(out, X3 * X3, rtol=1e-12)
    np.testing.assert_array_equal(fresh_fn(ct)[0], pulled)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_error_loses_nothing(case):
    """After the error, the shared grad / value_and_grad / Tape / vjp_fn objects still give correct results."""
    _check_shared_objects_still_work()
    try:
        case.trigger()
    except Exception:  # whether it is the right error is test_error_case's business
        pass
    _check_shared_objects_still_work()


def test_failed_calls_do_not_poison_the_cache():
    """One grad object: valid call, a run of failing calls, then the valid call again equals a fresh grad."""

    def f(x, mode):  # mode is a static (string) argument
        if mode == "bad":
            return np.sum(np.unique(x))
        return np.sum(np.sin(x) * x) * 2.0

    g = ft.value_and_grad(f)
    first = g(X3, "ok")
    bad_calls = [
        lambda: g(np.arange(3), "ok"),  # integer input
        lambda: g(X3 + 1j, "ok"),  # complex input
        lambda: g(X3, "bad"),  # unsupported function for this static value
        lambda: g(X3.reshape(3, 1) * np.ones(2), "bad"),  # new shape, failing trace
        lambda: g(),  # no arguments
    ]
    for bad in bad_calls:
        with pytest.raises(BUILTIN_FAMILIES):
            bad()
    again = g(X3, "ok")
    fresh = ft.value_and_grad(f)(X3, "ok")
    expected = 2.0 * (np.sin(X3) + X3 * np.cos(X3))
    for result in (first, again):
        np.testing.assert_allclose(result[0], fresh[0], rtol=1e-12)
        np.testing.assert_allclose(result[1], fresh[1], rtol=1e-12)
        np.testing.assert_allclose(result[1], expected, rtol=1e-12)
    # a new shape after the failures is traced normally
    xm = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    np.testing.assert_allclose(g(xm, "ok")[1], 2.0 * (np.sin(xm) + xm * np.cos(xm)), rtol=1e-12)


def test_tape_survives_a_failed_bind():
    """A bind that fails on the second argument leaves no half-written input behind."""
    tape = ft.trace(_dot2, X3, Y3, argnums=(0, 1))
    with pytest.raises(InputSignatureError):
        tape.grad(np.full(3, 7.0), np.ones(4))  # arg0 written into a workspace, then arg1 fails
    with pytest.raises(InputTypeError):
        tape.grad(np.full(3, 7.0), np.arange(3))
    gx, gy = tape.grad(X3, Y3)
    np.testing.assert_array_equal(gx, Y3)
    np.testing.assert_array_equal(gy, X3)
    np.testing.assert_allclose(tape(X3, Y3), np.sum(X3 * Y3), rtol=1e-12)


def test_vjp_fn_survives_a_bad_cotangent():
    """A cotangent rejected halfway through (second output) does not leak into the next pull-back."""
    out, vjp_fn = ft.vjp(lambda x: (x * 2.0, np.sum(x)), X3)
    with pytest.raises(InputSignatureError):
        vjp_fn((np.full(3, 100.0), np.ones(2)))
    (pulled,) = vjp_fn((np.ones(3), np.float64(1.0)))
    np.testing.assert_allclose(pulled, np.full(3, 3.0), rtol=1e-12)
