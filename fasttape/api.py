"""User-facing transformations with JAX's names: ``grad``, ``value_and_grad``,
``vjp`` and ``trace``.

Each transformed function keeps a cache of tapes keyed by the input signature
(shapes, container structure, values of static arguments).  A signature may
hold several tapes, one per branch of the user's Python control flow: a replay
whose guards fail falls through to the next tape, and to a fresh trace when
none fits.
"""

from __future__ import annotations

import collections
import functools
import threading
import weakref

import numpy as np
import optree

from . import config, nesting
from . import derivatives as D
from .errors import BranchChangedError
from .recorder import active_recorder
from .tape import Tape, classify_leaf, float64_arrays
from .tracer import Tracer
from .tracing import record

DEFAULT_CACHE_SIZE = config.DEFAULT_CACHE_SIZE
_MAX_BRANCHES = 32


def _normalize_argnums(argnums, n_args, name):
    if not isinstance(argnums, (int, tuple, list)) or isinstance(argnums, bool):
        raise TypeError(f"{name}: argnums must be an int or a tuple of ints, got {argnums!r}.")
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums:
        raise ValueError(f"{name}: argnums must name at least one argument, got {argnums!r}.")
    for a in nums:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{name}: argnums must be an int or a tuple of ints, got {argnums!r}.")
        if not -n_args <= a < n_args:
            raise ValueError(
                f"{name}: argnums {argnums!r} is out of bounds for a call with {n_args} positional arguments."
            )
    nums = tuple(a % n_args for a in nums)
    if len(set(nums)) != len(nums):
        raise ValueError(f"{name}: argnums {argnums!r} names an argument twice.")
    return nums[0] if isinstance(argnums, int) else nums


def _static_argnums(static_argnums, name) -> tuple:
    """``static_argnums`` as a tuple of ints (JAX's name: arguments baked into the tape, one tape per value)."""
    nums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    for a in nums:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{name}: static_argnums must be an int or a tuple of ints, got {static_argnums!r}.")
    return nums


def _normalize_static(static_argnums, n_args, argnums, name) -> tuple:
    """The static positions of a call with ``n_args`` arguments; none may be differentiated."""
    nums = set()
    for a in static_argnums:
        if not -n_args <= a < n_args:
            raise ValueError(
                f"{name}: static_argnums {static_argnums!r} is out of bounds for a call with {n_args} positional "
                "arguments."
            )
        nums.add(a % n_args)
    diff = set(argnums) if isinstance(argnums, tuple) else {argnums}
    if nums & diff:
        raise ValueError(
            f"{name}: argument {sorted(nums & diff)[0]} is in both argnums and static_argnums; a static argument "
            "is a constant of the tape and has no derivative."
        )
    return tuple(sorted(nums))


def _leaf_key(leaf, static=False):
    kind = "static" if static else classify_leaf(leaf)
    if kind == "array":
        return (np.shape(leaf),)
    if kind == "integers":
        return (np.shape(leaf), "i")
    if kind == "scalar":
        return "s"
    if isinstance(leaf, np.ndarray):
        return ("k", leaf.dtype.str, leaf.shape, leaf.tobytes())
    try:
        hash(leaf)
    except TypeError:
        return ("id", id(leaf))
    return ("k", type(leaf), leaf)


def signature_key(args, kind="transform", static_argnums=()):
    """Hashable description of everything a tape is specialised to (``static_argnums``: the positions whose
    values are baked in whole)."""
    if static_argnums:
        return _general_key(args, kind, static_argnums)
    if len(args) == 1:  # one float array: the most common call, kept cheapest
        a = args[0]
        if type(a) is np.ndarray and a.dtype.kind == "f":
            return (a.shape,)
    for a in args:
        if type(a) is not np.ndarray or a.dtype.kind != "f":
            break
    else:
        return tuple([a.shape for a in args])  # the common case, kept cheap
    if all(type(a) is np.ndarray and a.dtype.kind in "fiu" for a in args):  # float arrays and integer labels
        return ("arrays",) + tuple([(a.shape, a.dtype.kind == "f") for a in args])
    parts = []  # float arrays and tuples or lists of them (parameters): kept cheap too
    for a in args:
        if type(a) is np.ndarray and a.dtype.kind == "f":
            parts.append(a.shape)
        elif (type(a) is tuple or type(a) is list) and all(type(b) is np.ndarray and b.dtype.kind == "f" for b in a):
            parts.append((type(a), tuple([b.shape for b in a])))
        else:
            return _general_key(args, kind, static_argnums)
    return ("sequences",) + tuple(parts)


def _general_key(args, kind, static_argnums):
    parts = []
    for i, a in enumerate(args):
        leaves, treedef = optree.tree_flatten(a, none_is_leaf=True)
        if any(isinstance(leaf, Tracer) for leaf in leaves):
            return None  # called inside a traced function: recorded onto that trace (fasttape.nesting)
        static = i in static_argnums
        parts.append((treedef, tuple(_leaf_key(leaf, static) for leaf in leaves)))
    return ("tree", tuple(parts))


def _named_index_errors(runner, tape, args):
    """``runner(tape, args)``, an index out of range read in the sweep named by the argument it came from."""
    try:
        return runner(tape, args)
    except IndexError as e:
        raise tape.index_error(e) from None


_F64 = np.dtype(np.float64)


class TapeCache:
    """An LRU map from input signature to the tapes recorded for it (one per branch).

    Holds at most ``maxsize`` signatures; ``maxsize=None`` follows the
    ``cache_size`` option (``ft.set_options(cache_size=...)``, default 64).
    """

    def __init__(self, maxsize=None):
        self._maxsize = maxsize
        self._tapes: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._last = (None, ())  # (signature, its tapes) of the latest lookup: the repeated-call fast path
        # (shape, tape) when the latest lookup was of one float array with one tape (one branch): the next call
        # of a float64 array of that shape goes straight to it (_Transformed._run); ``arrays``: (shapes, tape)
        # the same for several float arrays
        self.fast = None
        self.arrays = None

    def get(self, key):
        last_key, last_tapes = self._last  # the same signature as the latest lookup: no lock, already newest
        if last_key == key:
            return last_tapes
        with self._lock:
            tapes = self._tapes.get(key)
            if tapes is None:
                return ()
            self._tapes.move_to_end(key)
            self._last = (key, tuple(tapes))
            arrays = len(tapes) == 1 and all(type(shape) is tuple for shape in key)  # (signature_key's)
            self.fast = (key[0], tapes[0]) if arrays and len(key) == 1 else None
            self.arrays = (key, tapes[0]) if arrays and len(key) > 1 else None
            return self._last[1]

    def add(self, key, tape):
        with self._lock:
            self._last = (None, ())
            self.fast = self.arrays = None
            tapes = self._tapes.setdefault(key, [])
            tapes.insert(0, tape)
            del tapes[_MAX_BRANCHES:]
            self._tapes.move_to_end(key)
            while len(self._tapes) > self.maxsize:
                self._tapes.popitem(last=False)

    @property
    def maxsize(self) -> int:
        return self._maxsize if self._maxsize is not None else config.cache_size()

    @maxsize.setter
    def maxsize(self, value):
        self._maxsize = value

    def tapes(self):
        with self._lock:
            return [t for tapes in self._tapes.values() for t in tapes]

    def clear(self):
        with self._lock:
            self._last = (None, ())
            self.fast = self.arrays = None
            self._tapes.clear()

    def __len__(self):
        with self._lock:
            return sum(len(t) for t in self._tapes.values())


class _Transformed:
    """Common machinery: find (or record) the tape for these arguments, run it."""

    kind = "transform"

    def __init__(self, fun, argnums, has_aux, cache_size=None, static_argnums=()):
        if not callable(fun):
            raise TypeError(f"{self.kind} expects a callable, got {type(fun).__name__}.")
        self.fun = fun
        self.argnums = argnums
        self.has_aux = has_aux
        self.static_argnums = _static_argnums(static_argnums, self.kind)
        self.cache = TapeCache(cache_size)
        self._record_lock = threading.RLock()
        functools.update_wrapper(self, fun, updated=())

    def _record(self, args, argnums):
        static = _normalize_static(self.static_argnums, len(args), argnums, self.kind)
        return record(self.fun, args, argnums, self.has_aux, static_argnums=static)

    def _fast_tape(self, args):
        """The one tape of the latest call when ``args`` are float64 arrays of its shapes and no trace is
        being recorded (the repeated call's short path), else None."""
        fast = self.cache.fast
        if fast is not None:
            if len(args) == 1:
                a = args[0]
                if type(a) is np.ndarray and a.dtype is _F64 and a.shape == fast[0] and active_recorder() is None:
                    return fast[1]
            return None
        arrays = self.cache.arrays
        if arrays is None or not float64_arrays(args, arrays[0]):
            return None
        return arrays[1] if active_recorder() is None else None

    def _value_and_grad_io(self, args):
        """``(value, grad)`` through the short path and the tape's kernel that copies the arguments in and
        the gradient out, or None (the general path answers)."""
        tape = self._fast_tape(args)
        if tape is None or self.has_aux:
            return None
        try:
            return tape._value_and_grad_io(args) or None
        except IndexError as e:
            raise tape.index_error(e) from None

    def _run(self, args, runner):
        """``runner(tape, args)`` returns None when a guard fails."""
        tape = self._fast_tape(args)
        if tape is not None:
            result = _named_index_errors(runner, tape, args)
            if result is not None:
                return result
        if not args:
            raise TypeError(f"{self.kind} of {self.__name__!r} needs at least one positional argument.")
        static = self.static_argnums
        if static:
            static = {a % len(args) for a in static if -len(args) <= a < len(args)}
        key = signature_key(args, self.kind, static)
        if key is None or active_recorder() is not None:
            return self._nested(args, _normalize_argnums(self.argnums, len(args), self.kind))
        tried = self.cache.get(key)
        for tape in tried:
            result = _named_index_errors(runner, tape, args)
            if result is not None:
                return result
        argnums = _normalize_argnums(self.argnums, len(args), self.kind)
        with self._record_lock:  # threads that miss together record once
            for tape in self.cache.get(key):
                if tape not in tried:  # recorded meanwhile by another thread
                    result = _named_index_errors(runner, tape, args)
                    if result is not None:
                        return result
            tape = self._record(args, argnums)
            self.cache.add(key, tape)
        result = _named_index_errors(runner, tape, args)
        if result is None:
            raise BranchChangedError(
                f"{self.__name__!r}: a Python if/while on a traced value took one branch while tracing and "
                "the other when the tape replayed the same inputs: the condition is within rounding error of "
                "its threshold. Make the comparison robust (for example use np.where for the selection)."
            )
        return result

    def _nested(self, args, argnums):
        """The transformation applied to tracers of an enclosing trace: recorded onto it."""
        raise TypeError(
            f"{self.kind} of {self.__name__!r} was called on traced values; a tape of its own cannot be recorded "
            "inside a traced function. Call it outside, or use grad/jvp/vjp/jacobian there."
        )

    def map(self, *args, in_axes=None, workers=None):
        """This transformation over a batch (``ft.vmap``): by default the differentiated arguments carry the
        members on axis 0 and the others are shared."""
        from .batching import default_axes, vmap

        if in_axes is None:
            in_axes = default_axes(len(args), _normalize_argnums(self.argnums, len(args), self.kind))
        return vmap(self, in_axes, workers=workers)(*args)

    def tape(self, *args) -> Tape:
        """The tape these arguments replay (recorded if needed)."""
        if nesting.inside_trace(args):
            return _Transformed._nested(self, args, None)
        return self._run(args, lambda tape, a: tape if tape.forward(*a) is not None else None)


class ValueAndGrad(_Transformed):
    kind = "value_and_grad"

    def _nested(self, args, argnums):  # (value, grads, aux), as Tape._value_and_grad
        return nesting.value_and_grad(self.fun, args, argnums, self.has_aux, self.kind)

    def __call__(self, *args):
        done = self._value_and_grad_io(args)
        if done is not None:
            return done
        value, grads, aux = self._run(args, Tape._value_and_grad)
        return ((value, aux), grads) if self.has_aux else (value, grads)


class Grad(_Transformed):
    kind = "grad"

    def _nested(self, args, argnums):
        return nesting.value_and_grad(self.fun, args, argnums, self.has_aux, self.kind)

    def __call__(self, *args):
        done = self._value_and_grad_io(args)
        if done is not None:
            return done[1]
        value, grads, aux = self._run(args, Tape._value_and_grad)
        return (grads, aux) if self.has_aux else grads


def grad(fun, argnums=0, has_aux=False, static_argnums=()):
    """Gradient of a scalar-valued ``fun`` with respect to ``argnums`` (int or tuple).

    Arguments may be float arrays, Python floats, or tuples/lists/dicts of them;
    the gradient comes back in the same structure.  Integer arrays are data of
    the sweep (indices, labels: a new array of the same shape never re-traces);
    Python ints, strings, None, booleans and the arguments at ``static_argnums``
    are static: part of the tape's signature, one tape per value.
    """
    return Grad(fun, argnums, has_aux, static_argnums=static_argnums)


def value_and_grad(fun, argnums=0, has_aux=False, static_argnums=()):
    """``(fun(*args), grad(fun)(*args))`` from one forward and one reverse sweep."""
    return ValueAndGrad(fun, argnums, has_aux, static_argnums=static_argnums)


_TRANSFORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TRANSFORMS_LOCK = threading.Lock()


def _cached_transform(fun, kind, argnums, has_aux) -> _Transformed:
    """The tape cache of ``fun`` for one-shot calls (vjp, jvp, hvp), kept while fun lives."""
    if not callable(fun):
        raise TypeError(f"{kind} expects a callable, got {type(fun).__name__}.")
    key = (kind, argnums, has_aux)
    try:
        with _TRANSFORMS_LOCK:
            per_fun = _TRANSFORMS.setdefault(fun, {})
            transform = per_fun.get(key)
            if transform is None:
                transform = per_fun[key] = _Transformed(fun, argnums, has_aux)
                transform.kind = kind
            return transform
    except TypeError:  # not weak-referenceable: no caching across calls
        transform = _Transformed(fun, argnums, has_aux)
        transform.kind = kind
        return transform


def _primals_tuple(primals, name):
    if not isinstance(primals, (tuple, list)):
        raise TypeError(f"{name}: primals must be a tuple or list of arguments, got {type(primals).__name__}.")
    return tuple(primals)


def vjp(fun, *primals, has_aux=False):
    """``(out, vjp_fn)`` (and ``aux`` with has_aux), as ``jax.vjp``.

    ``vjp_fn(cotangent)`` returns a tuple with one entry per primal; it may be
    called many times and reuses the forward values computed here.
    """
    if nesting.inside_trace(primals):
        return nesting.vjp(fun, primals, has_aux)
    transform = _cached_transform(fun, "vjp", tuple(range(len(primals))), has_aux)
    return transform._run(primals, D.returns_none_on_branch_change(lambda tape, a: tape.vjp(*a)))


def jvp(fun, primals, tangents, has_aux=False):
    """``(fun(*primals), J·tangents)`` (and ``aux``), as ``jax.jvp``: one forward and one tangent sweep."""
    primals = _primals_tuple(primals, "jvp")
    tangents = _primals_tuple(tangents, "jvp")
    if len(tangents) != len(primals):
        raise ValueError(f"jvp: got {len(primals)} primals but {len(tangents)} tangents; pass one tangent per primal.")
    if nesting.inside_trace((primals, tangents)):
        return nesting.jvp(fun, primals, tangents, has_aux)
    transform = _cached_transform(fun, "jvp", tuple(range(len(primals))), has_aux)
    return transform._run(primals, D.returns_none_on_branch_change(lambda tape, a: D.jvp(tape, a, tangents)))


def hvp(fun, primals, tangents):
    """Hessian-vector product ``∂²f(primals)·tangents`` of a scalar function, forward-over-reverse,
    never forming the Hessian.

    With one primal the result is shaped like it; with several, a tuple.  A
    tangent with one extra trailing axis of length k gives k products from one
    sweep.
    """
    primals = _primals_tuple(primals, "hvp")
    tangents = _primals_tuple(tangents, "hvp")
    if len(tangents) != len(primals):
        raise ValueError(f"hvp: got {len(primals)} primals but {len(tangents)} tangents; pass one tangent per primal.")
    if nesting.inside_trace((primals, tangents)):
        return nesting.hvp(fun, primals, tangents)
    argnums = 0 if len(primals) == 1 else tuple(range(len(primals)))
    v = tangents[0] if len(primals) == 1 else tangents
    transform = _cached_transform(fun, "hvp", argnums, False)
    return transform._run(primals, D.returns_none_on_branch_change(lambda tape, a: D.hvp(tape, a, v)))


def value_grad_and_hvp(fun, primals, tangents):
    """``(f(primals), ∇f(primals), ∂²f(primals)·tangents)`` of a scalar function from one forward, one
    tangent and one second-order sweep: what a Newton or trust-region step needs, at the cost of the HVP
    alone.  Structured as :func:`hvp` (one primal: arrays; several: tuples)."""
    primals = _primals_tuple(primals, "value_grad_and_hvp")
    tangents = _primals_tuple(tangents, "value_grad_and_hvp")
    if len(tangents) != len(primals):
        raise ValueError(
            f"value_grad_and_hvp: got {len(primals)} primals but {len(tangents)} tangents; pass one tangent per primal."
        )
    argnums = 0 if len(primals) == 1 else tuple(range(len(primals)))
    v = tangents[0] if len(primals) == 1 else tangents
    if nesting.inside_trace((primals, tangents)):
        return nesting.value_grad_and_hvp(fun, primals, tangents)
    transform = _cached_transform(fun, "hvp", argnums, False)
    runner = D.returns_none_on_branch_change(lambda tape, a: D.value_grad_and_hvp(tape, a, v))
    return transform._run(primals, runner)


class Jacobian(_Transformed):
    kind = "jacobian"

    def __init__(self, fun, argnums, has_aux, mode, static_argnums=()):
        super().__init__(fun, argnums, has_aux, static_argnums=static_argnums)
        self.mode = mode
        self.kind = {"fwd": "jacfwd", "rev": "jacrev"}.get(mode, "jacobian")

    def _nested(self, args, argnums):
        return nesting.jacobian(self.fun, args, argnums, self.has_aux, self.mode, self.kind)

    def __call__(self, *args):
        return self._run(args, D.returns_none_on_branch_change(lambda tape, a: D.jacobian(tape, a, self.mode)))


class Hessian(_Transformed):
    kind = "hessian"

    def _nested(self, args, argnums):
        return nesting.hessian(self.fun, args, argnums)

    def __call__(self, *args):
        return self._run(args, D.returns_none_on_branch_change(D.hessian))


def jacobian(fun, argnums=0, has_aux=False, static_argnums=()):
    """Dense Jacobian, JAX's layout (``out.shape + in.shape``); forward or reverse sweeps in
    blocks of directions, whichever needs fewer."""
    return Jacobian(fun, argnums, has_aux, "auto", static_argnums)


def jacfwd(fun, argnums=0, has_aux=False, static_argnums=()):
    """Dense Jacobian by forward mode: blocks of tangent seeds."""
    return Jacobian(fun, argnums, has_aux, "fwd", static_argnums)


def jacrev(fun, argnums=0, has_aux=False, static_argnums=()):
    """Dense Jacobian by reverse mode: blocks of adjoint seeds."""
    return Jacobian(fun, argnums, has_aux, "rev", static_argnums)


def hessian(fun, argnums=0, static_argnums=()):
    """Dense Hessian of a scalar function (nested blocks for several argnums, as JAX),
    from Hessian-vector products along blocks of unit vectors."""
    return Hessian(fun, argnums, False, static_argnums=static_argnums)


def trace(fun, *args, argnums=0, has_aux=False, static_argnums=()) -> Tape:
    """Record ``fun`` on these arguments and return the :class:`Tape` itself."""
    if not callable(fun):
        raise TypeError(f"trace expects a callable, got {type(fun).__name__}.")
    argnums = _normalize_argnums(argnums, len(args), "trace")
    static = _normalize_static(_static_argnums(static_argnums, "trace"), len(args), argnums, "trace")
    return record(fun, args, argnums, has_aux, static_argnums=static)
