"""Primitive families: every rule of every sweep, one module per family, behind one interface.

Each primitive's declaration (``fasttape.primitives``) has a kind; each kind belongs to one
family module below, which holds all of that family's rules.  The sweeps
(``fasttape.sweeps``) walk the tape and dispatch each instruction to its family; they hold
no rules.  Adding a family is one new module and one line in ``REGISTERED``.

A family module defines:

``KINDS``
    the primitive kinds it implements.
``PARAMS``
    the names of its integer parameters, in column order (at most four); the recorder
    fills them by name (``Family.pack``) and the kernels read them through named columns
    (``layout.param_columns``).
compiled kernels (Numba), one per sweep, with the same arguments in every family::

    forward(ins, i, aux, buf)                          values of instruction i
    reverse(ins, i, aux, buf, N)                       its first-order adjoints
    tangent(ins, i, aux, buf, tan, NV, k)              k tangent directions
    second(ins, i, aux, buf, tan, adj2, N, k, second)  forward-over-reverse (``second``) or
                                                       the k-seed reverse

    (the sweeps call ``reverse``, ``tangent`` and ``second`` for active rows only);
NumPy rules for the executor tier (``fasttape.executor``), on one row as a list::

    numpy_forward(row, aux, buf)
    numpy_tangent(row, aux, buf, T)                    T: (k, n_values) tangents
    numpy_reverse(row, aux, buf, G, G2, T)             see executor._reverse

``side_size(prim, params)``
    values of the per-instruction side store the forward writes and the other sweeps
    reuse (0: none); the recorder allocates it and passes its offset as the ``side``
    parameter.
``validate(prim, row, n_values, pool_end)``
    the problem with a saved row (its sizes and parameters), or None.
``describe(prim, params)``
    its parameters in a tape listing (``"[2x3x4]"``), '' for none.
``jax_call(jnp, fn, operands, params, index)``
    the oracle's call of the declaration's JAX reference ``fn`` on the flat operands
    (``jnp``: jax.numpy; ``index``: a gather's positions within its concatenated operands).
``SCATTERS``
    its reverse writes operand adjoints at computed positions (so never assigns a first
    write: the adjoint plan zeroes those operands).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np

from ..layout import C_P0, N_PARAMS
from ..primitives import KINDS, N_OPCODES, PRIMITIVE_BY_OPCODE, PRIMITIVES
from . import broadcast, elementwise, factor, gather, indexing, linalg, matmul, reductions, select, sorting

# one line per family: its position here is its number in the compiled dispatch
REGISTERED = (elementwise, select, reductions, broadcast, gather, matmul, linalg, factor, indexing, sorting)

COMPILED = ("forward", "reverse", "tangent", "second")
NUMPY = ("numpy_forward", "numpy_tangent", "numpy_reverse")
FUNCTIONS = COMPILED + NUMPY + ("side_size", "validate", "describe", "jax_call")


@dataclass(frozen=True)
class Family:
    """A registered family module (see the package docstring) and what is derived from it."""

    number: int
    name: str
    module: types.ModuleType
    kinds: tuple
    params: tuple
    scatters: bool

    def pack(self, **named) -> tuple:
        """The four parameter columns of a row from the family's named parameters."""
        unknown = set(named) - set(self.params)
        if unknown:
            raise ValueError(f"family {self.name!r} has no parameter(s) {sorted(unknown)}; it has {self.params}")
        values = [int(named.get(name, 0)) for name in self.params]
        return tuple(values + [0] * (N_PARAMS - len(values)))

    def unpack(self, row) -> dict:
        """The named parameters of a row (or of its four parameter values)."""
        values = list(row[C_P0 : C_P0 + N_PARAMS]) if len(row) > N_PARAMS else list(row)
        return {name: int(v) for name, v in zip(self.params, values)}

    def side_size(self, prim, params: dict) -> int:
        return int(self.module.side_size(prim, params))

    def validate(self, prim, row, n_values: int, pool_end: int):
        return self.module.validate(prim, row, n_values, pool_end)

    def describe(self, prim, row) -> str:
        return self.module.describe(prim, self.unpack(row))

    def jax_call(self, jnp, fn, operands, row, index=None):
        return self.module.jax_call(jnp, fn, operands, self.unpack(row), index)


def _register() -> tuple[Family, ...]:
    families = []
    claimed: dict[str, str] = {}
    for number, module in enumerate(REGISTERED):
        name = module.__name__.rsplit(".", 1)[-1]
        missing = [f for f in FUNCTIONS + ("KINDS", "PARAMS") if not hasattr(module, f)]
        if missing:
            raise TypeError(f"family module {module.__name__} does not define {missing} (see fasttape.families)")
        if len(module.PARAMS) > N_PARAMS:
            raise TypeError(f"family {name!r} names {len(module.PARAMS)} parameters; a row holds {N_PARAMS}")
        for kind in module.KINDS:
            if kind in claimed:
                raise TypeError(f"kind {kind!r} is claimed by families {claimed[kind]!r} and {name!r}")
            claimed[kind] = name
        families.append(Family(number, name, module, tuple(module.KINDS), tuple(module.PARAMS),
                               bool(getattr(module, "SCATTERS", False))))  # fmt: skip
    orphans = [k for k in KINDS if k not in claimed]
    if orphans:
        raise TypeError(f"no family implements the primitive kind(s) {orphans}")
    return tuple(families)


FAMILIES = _register()
_BY_KIND = {kind: f for f in FAMILIES for kind in f.kinds}
FAMILY_BY_OPCODE = tuple(_BY_KIND[p.kind] for p in PRIMITIVES)

# family number per opcode: the compiled dispatch's switch (fasttape.dispatch)
FAMILY_NUMBER = np.array([f.number for f in FAMILY_BY_OPCODE], dtype=np.int64)
FAMILY_NUMBER.setflags(write=False)
assert FAMILY_NUMBER.size == N_OPCODES


def of(op: int) -> Family:
    """The family of an opcode."""
    return FAMILY_BY_OPCODE[op]


def of_primitive(prim) -> Family:
    return _BY_KIND[prim.kind]


def describe(op: int, row) -> str:
    return FAMILY_BY_OPCODE[op].describe(PRIMITIVE_BY_OPCODE[op], row)
