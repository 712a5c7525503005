"""The tracer: the object that stands in for a float64 (or boolean or integer) array while a user's
function runs once.  It carries the concrete value (so shapes, dtypes and values come from NumPy
itself) and the id of the tape slot that will hold the value on every replay; every NumPy operation
on it lowers onto the primitive table through :mod:`fasttape.numpy` and is recorded by its
:class:`~fasttape.recorder.Recorder`.
"""

from __future__ import annotations

import operator
import sys

import numpy as np

from . import kernels as K
from . import recorder, scalar_recording
from .errors import (
    ConcretizationError,
    TracerMutationError,
    UnsupportedFunctionError,
    UnsupportedMethodError,
)
from .primitives import opcode
from .recorder import Recorder
from .slots import DTYPES, TYPE_NAMES, kind_of

OP_DIVIDE = opcode("divide")

_CONCRETIZE_FIX = (
    "Inside a function traced by fasttape, values that depend on the inputs stay "
    "traced arrays. Keep computing with NumPy functions on them instead (for example "
    "np.stack / np.concatenate instead of filling an array, np.where instead of "
    "indexing with a computed mask); return the traced value and read the number "
    "from the result of grad/value_and_grad."
)


def _in_place(method, fix):
    raise TracerMutationError(
        f"traced arrays are immutable: x.{method}() changes the array in place and cannot be recorded. {fix}"
    )


def _numpy_caller() -> str | None:
    """The NumPy function (``take``) whose Python code asked for this tracer as an array, or None."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("numpy."):
        if frame.f_code.co_name in ("take",):
            return frame.f_code.co_name
        frame = frame.f_back
    return None


def _library_caller() -> str | None:
    """The public name of the SciPy function that asked for this tracer as an array
    (``scipy.special.logsumexp``), or None when the call came from elsewhere."""
    frame = sys._getframe(2)
    found = None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "scipy" or module.startswith("scipy."):
            name = frame.f_code.co_name
            if found is None or name != "wrapper":  # SciPy's batching decorator: the name is the inner one's
                found = (module, name)
        elif found is not None:
            break
        frame = frame.f_back
    if found is None:
        return None
    public = ".".join(part for part in found[0].split(".") if not part.startswith("_"))
    return f"{public}.{found[1]}"


# ndarray methods a traced array has but refuses, with the fix: they need a concrete value or mutate in place
REFUSED_METHODS = ("fill", "resize", "put", "itemset", "item", "tolist")


class Tracer:
    """A traced float64 (or boolean or integer) array: NumPy code runs on it unchanged."""

    # (_offset, _active, _kept: a ScalarTracer's; declared here so that one rebound by an item assignment
    # can become a Tracer, of the same layout)
    __slots__ = ("_rec", "_sid", "_value", "_base", "_views", "_offset", "_active", "_kept", "__weakref__")
    __array_priority__ = 1000.0

    def __new__(cls, rec: Recorder, sid: int, value):
        # 0-d tracers are not sequences: NumPy then asks them for float() (and gets a
        # clear error) instead of trying to unpack them in `array[i] = tracer`
        return object.__new__(ArrayTracer if rec.slots[sid].shape else Tracer)

    def __init__(self, rec: Recorder, sid: int, value):
        self._rec = rec
        self._sid = sid
        self._value = value
        self._base, self._views = (), None  # NumPy aliasing, for item assignment (fasttape.updates)
        rec.slots[sid].remember(self)
        if rec.values is not None:
            rec.values[sid] = value

    # -- properties ----------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._rec.slots[self._sid].shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self._rec.slots[self._sid].size

    @property
    def dtype(self):
        return self._rec.slots[self._sid].dtype

    @property
    def T(self):
        return fnp.transpose(self)

    @property
    def mT(self):
        return fnp.swapaxes(self, -1, -2)

    def __repr__(self):
        return f"Tracer<{TYPE_NAMES[self._rec.slots[self._sid].kind]}{list(self.shape)} %{self._sid}>"

    # -- concretization: refused with a fix ----------------------------------
    def __array__(self, dtype=None, copy=None):
        if updates.storing_into_plain_array():
            raise TracerMutationError(f"{self!r}: " + updates.PLAIN_ARRAY_FIX)
        plain_index = updates.subscripting_plain_array() or _numpy_caller() == "take"
        if plain_index and self._rec.slots[self._sid].is_bool:
            raise ConcretizationError(
                f"a plain NumPy array was indexed by the traced mask {self!r}: {dynamic.MASK_FIX}"
            )
        if plain_index:
            raise ConcretizationError(
                f"a plain NumPy array was indexed by the traced array {self!r}: NumPy converts the index to a "
                "constant, which would detach it from the tape. Index through fasttape, which records it: "
                "fasttape.numpy.take(a, k, axis=0) for a[k], np.take_along_axis(a, k, axis) for a row per index."
            )
        library = _library_caller()
        if library is not None:
            raise UnsupportedFunctionError(fnp.unsupported_message(library, "it converts its input with np.asarray"))
        raise ConcretizationError(
            f"np.asarray / np.array was called on a traced array {self!r}, which would silently detach it "
            "from the tape (and give a wrong derivative). " + _CONCRETIZE_FIX
        )

    def _concretize(self, what):
        static = ""
        if self._rec.slots[self._sid].kind == "i":
            static = (" An integer array argument is data of the tape (a new one never re-traces); where it sets "
                      "a size, a loop bound or a Python index, mark it static: ft.grad(f, static_argnums=i) "
                      "(one tape per value, as JAX's).")  # fmt: skip
        raise ConcretizationError(
            f"{what} of a traced array {self!r} needs a concrete value that changes with the inputs. "
            "A Python `if`/`while` on a traced comparison is fine (fasttape records a guard); "
            "float()/int()/.item() are not." + static + " " + _CONCRETIZE_FIX
        )

    def __float__(self):
        self._concretize("float()")

    def __int__(self):
        self._concretize("int()")

    def __complex__(self):
        self._concretize("complex()")

    def __index__(self):
        self._concretize("Using as an index or range() bound")

    def item(self, *args):
        self._concretize(".item()")

    def tolist(self):
        self._concretize(".tolist()")

    def __bool__(self):
        if self.size != 1:
            raise ValueError(
                f"The truth value of a traced array with {self.size} elements is ambiguous. Use np.any() or np.all()."
            )
        outcome = bool(np.asarray(self._value).reshape(-1)[0])
        self._rec.guard(self, outcome)
        return outcome

    def __setitem__(self, key, value):
        updates.assign(self, key, value)

    @property
    def at(self):
        """JAX's functional updates: ``x.at[key].set(v)``, ``.add``, ``.multiply``, ``.min``, ``.max``, ``.get``."""
        return updates.AtIndexer(self)

    # ndarray's in-place methods: sort and partition are functional updates (x names the sorted values
    # afterwards); the others cannot be recorded
    def sort(self, axis=-1, kind=None, order=None, *, stable=None):
        updates.assign(self, Ellipsis, fnp.sort(self, axis, kind, order, stable=stable), whole=True)

    def partition(self, kth, axis=-1, kind="introselect", order=None):
        updates.assign(self, Ellipsis, fnp.partition(self, kth, axis, kind, order), whole=True)

    def fill(self, value):
        _in_place("fill", "Build the new array instead, e.g. np.full(x.shape, value) or np.where(mask, value, x).")

    def resize(self, *args, **kwargs):
        _in_place("resize", "Build the new array instead: x.reshape(shape) keeps the size, np.concatenate grows it.")

    def put(self, *args, **kwargs):
        _in_place("put", "Build the new array instead, e.g. np.where(mask, v, x) or np.concatenate.")

    def itemset(self, *args):
        _in_place("itemset", "Build the new array instead, e.g. np.where(mask, v, x).")

    def __getattr__(self, name):
        # only reached when normal lookup fails: private names and names ndarray lacks stay plain
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise UnsupportedMethodError(
            f"ndarray.{name} is not supported on arrays traced by fasttape (no derivative rule is recorded "
            "for it). Write it with the supported functions listed in fasttape.numpy.__all__, or compute it "
            "outside the traced function if it does not depend on the differentiated inputs."
        )

    # -- NumPy protocols -----------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "__call__" and not kwargs:  # scalar code's short path first
            if len(inputs) == 1 and ufunc in fnp.SCALAR_UNARY:
                out = scalar_recording.unary(self._rec, fnp.SCALAR_UNARY[ufunc], ufunc, inputs[0])
                if out is not None:
                    return out
            elif len(inputs) == 2 and ufunc in fnp.SCALAR_ARITHMETIC:
                op, fn = fnp.SCALAR_ARITHMETIC[ufunc]
                out = scalar_recording.arithmetic(self._rec, op, fn, inputs[0], inputs[1])
                if out is not None:
                    return out
        return fnp.dispatch_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return fnp.dispatch_function(func, args, kwargs)

    # -- operators -------------------------------------------------------------
    def __add__(self, other):
        out = scalar_recording.arithmetic(self._rec, K.OP_ADD, operator.add, self, other)
        return fnp.add(self, other) if out is None else out

    def __radd__(self, other):
        out = scalar_recording.arithmetic(self._rec, K.OP_ADD, operator.add, other, self)
        return fnp.add(other, self) if out is None else out

    def __sub__(self, other):
        out = scalar_recording.arithmetic(self._rec, K.OP_SUBTRACT, operator.sub, self, other)
        return fnp.subtract(self, other) if out is None else out

    def __rsub__(self, other):
        out = scalar_recording.arithmetic(self._rec, K.OP_SUBTRACT, operator.sub, other, self)
        return fnp.subtract(other, self) if out is None else out

    def __mul__(self, other):
        out = scalar_recording.arithmetic(self._rec, K.OP_MULTIPLY, operator.mul, self, other)
        return fnp.multiply(self, other) if out is None else out

    def __rmul__(self, other):
        out = scalar_recording.arithmetic(self._rec, K.OP_MULTIPLY, operator.mul, other, self)
        return fnp.multiply(other, self) if out is None else out

    def __truediv__(self, other):
        out = scalar_recording.arithmetic(self._rec, OP_DIVIDE, operator.truediv, self, other)
        return fnp.divide(self, other) if out is None else out

    def __rtruediv__(self, other):
        out = scalar_recording.arithmetic(self._rec, OP_DIVIDE, operator.truediv, other, self)
        return fnp.divide(other, self) if out is None else out

    def __mod__(self, other):
        return fnp.remainder(self, other)

    def __rmod__(self, other):
        return fnp.remainder(other, self)

    def __floordiv__(self, other):
        return fnp.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return fnp.floor_divide(other, self)

    def __divmod__(self, other):
        return fnp.floor_divide(self, other), fnp.remainder(self, other)

    def __pow__(self, other):
        return fnp.power(self, other)

    def __rpow__(self, other):
        return fnp.power(other, self)

    def __matmul__(self, other):
        return fnp.matmul(self, other)

    def __rmatmul__(self, other):
        return fnp.matmul(other, self)

    def __neg__(self):
        return fnp.negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return fnp.abs(self)

    def __round__(self, ndigits=None):
        if ndigits:
            raise NotImplementedError("round(x, ndigits) with ndigits != 0 is not supported on traced arrays.")
        return fnp.round(self)

    def __lt__(self, other):
        return fnp.less(self, other)

    def __le__(self, other):
        return fnp.less_equal(self, other)

    def __gt__(self, other):
        return fnp.greater(self, other)

    def __ge__(self, other):
        return fnp.greater_equal(self, other)

    def __eq__(self, other):
        if isinstance(other, (str, bytes, type(None))):
            return NotImplemented  # as NumPy: compares unequal
        return fnp.equal(self, other)

    def __ne__(self, other):
        if isinstance(other, (str, bytes, type(None))):
            return NotImplemented
        return fnp.not_equal(self, other)

    def __invert__(self):
        return fnp.logical_not(self)

    def __and__(self, other):
        return fnp.logical_and(self, other)

    __rand__ = __and__

    def __or__(self, other):
        return fnp.logical_or(self, other)

    __ror__ = __or__

    __hash__ = None

    # -- array methods ---------------------------------------------------------
    def sum(self, axis=None, keepdims=False, **kw):
        return fnp.sum(self, axis=axis, keepdims=keepdims, **kw)

    def mean(self, axis=None, keepdims=False, **kw):
        return fnp.mean(self, axis=axis, keepdims=keepdims, **kw)

    def var(self, axis=None, ddof=0, keepdims=False, **kw):
        return fnp.var(self, axis=axis, ddof=ddof, keepdims=keepdims, **kw)

    def std(self, axis=None, ddof=0, keepdims=False, **kw):
        return fnp.std(self, axis=axis, ddof=ddof, keepdims=keepdims, **kw)

    def prod(self, axis=None, keepdims=False, **kw):
        return fnp.prod(self, axis=axis, keepdims=keepdims, **kw)

    def max(self, axis=None, keepdims=False, **kw):
        return fnp.max(self, axis=axis, keepdims=keepdims, **kw)

    def min(self, axis=None, keepdims=False, **kw):
        return fnp.min(self, axis=axis, keepdims=keepdims, **kw)

    def cumsum(self, axis=None, **kw):
        return fnp.cumsum(self, axis=axis, **kw)

    def any(self, axis=None, keepdims=False):
        return fnp.any(self, axis=axis, keepdims=keepdims)

    def all(self, axis=None, keepdims=False):
        return fnp.all(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        return fnp.reshape(self, shape, order=order)

    def ravel(self, order="C"):
        return fnp.ravel(self, order=order)

    def flatten(self, order="C"):
        return fnp.ravel(self, order=order)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], (int, np.integer))):
            axes = axes[0]
        return fnp.transpose(self, axes or None)

    def swapaxes(self, a, b):
        return fnp.swapaxes(self, a, b)

    def squeeze(self, axis=None):
        return fnp.squeeze(self, axis=axis)

    def dot(self, other):
        return fnp.dot(self, other)

    def clip(self, min=None, max=None):
        return fnp.clip(self, min, max)

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return fnp.diagonal(self, offset, axis1, axis2)

    def trace(self, offset=0, axis1=0, axis2=1):
        return fnp.trace(self, offset, axis1, axis2)

    def repeat(self, repeats, axis=None):
        return fnp.repeat(self, repeats, axis=axis)

    def astype(self, dtype, copy=True):
        """Another dtype for the same values: float (a new name, no instruction), bool (``!= 0``), or integer
        (truncated toward zero, as NumPy; no derivative)."""
        kind = kind_of(dtype)
        own = self._rec.slots[self._sid].kind
        if np.dtype(dtype).kind not in "biuf":
            raise TypeError(f"x.astype({np.dtype(dtype)}): a traced array holds real numbers; use float, int or bool.")
        if kind == own:
            return self.copy() if copy else self
        if kind == "b":
            return fnp.not_equal(self, 0)
        x = self
        if kind == "i" and own == "f":
            x = fnp.where(fnp.less(self, 0.0), fnp.ceil(self), fnp.floor(self))  # toward zero
        with np.errstate(invalid="ignore"):
            value = self._value.astype(DTYPES[kind])
        return self._rec.view(x._sid, self._rec.slots[x._sid].offset, self.shape, value, kind=kind)

    def argsort(self, axis=-1, kind=None, order=None, *, stable=None):
        return fnp.argsort(self, axis, kind, order, stable=stable)

    def argmax(self, axis=None, out=None, *, keepdims=False):
        return fnp.argmax(self, axis, out, keepdims=keepdims)

    def argmin(self, axis=None, out=None, *, keepdims=False):
        return fnp.argmin(self, axis, out, keepdims=keepdims)

    def searchsorted(self, v, side="left", sorter=None):
        return fnp.searchsorted(self, v, side, sorter)

    def copy(self):
        return Tracer(self._rec, self._sid, self._value)  # another object: a later x[...] = v leaves it alone


class ScalarTracer(Tracer):
    """A 0-d float64 tracer of scalar code's short path (:mod:`fasttape.scalar_recording`): a row's result
    or an element read.  It carries what the next row needs, its slot's offset and activity and its value
    as a Python float (``_offset``, ``_active``, ``_kept``), so a row's output slot need not exist (it is
    made when first read); the value is made a 0-d array only when the general path reads it.  A scalar
    loop records 10⁵ such values: an object and an array each would cost a fifth of recording the row."""

    __slots__ = ()
    shape, ndim, size, dtype = (), 0, 1, np.dtype(np.float64)

    @property
    def _value(self):
        return np.asarray(self._kept)

    @_value.setter
    def _value(self, value):  # x[()] = v rebinds x to another slot: a tracer holding its value again
        self.__class__ = Tracer
        self._value = value


class ArrayTracer(Tracer):
    """A traced array of one or more dimensions: also a sequence of its rows."""

    __slots__ = ()

    def __len__(self):
        return self.shape[0]

    def __iter__(self):
        for i in range(self.shape[0]):
            yield self[i]

    def __getitem__(self, key):
        out = scalar_recording.element(self, key)  # x[i, j]: scalar code's short path
        return fnp.getitem(self, key) if out is None else out


recorder.Tracer = scalar_recording.Tracer = Tracer  # the recorders make tracers of these classes
scalar_recording.ScalarTracer = ScalarTracer

from . import dynamic, updates  # noqa: E402
from . import numpy as fnp  # noqa: E402  (the NumPy surface needs Tracer)
