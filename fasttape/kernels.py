"""The compiled engine's public face: the tape layout, the opcodes and the sweep entry points.

The engine is split by concern; this module gathers what the recorder, storage, the tiers
and the tools read, so they need one import:

* ``fasttape.layout``       the flat tape layout (columns, flags, aux header, code words)
  and the opcode groups;
* ``fasttape.primitives``   the declarations (one per primitive);
* ``fasttape.families``     one module per family of primitives, holding every sweep's rules;
* ``fasttape.sweeps``       the compiled sweeps and their entry points (``run_*``), which
  dispatch to the families (``fasttape.dispatch``);
* ``fasttape.regions``, ``fasttape.scalar_runs``, ``fasttape.runs``, ``fasttape.loops``
  the fused regions, the scalar code, the elementwise run loops and shared loops.
"""

from __future__ import annotations

from . import jit as _jit
from .layout import *  # noqa: F403  (the layout is this module's vocabulary)
from .layout import OPCODE_NAMES
from .loops import MEMSET_MIN
from .loops import zero as _zero
from .primitives import N_OPCODES, PRIMITIVE_BY_NAME, PRIMITIVE_BY_OPCODE, PRIMITIVES
from .runs import VECTOR_BINARY, VECTOR_RUN, VECTOR_UNARY
from .sweeps import ENTRY_POINTS, run_forward, run_hvp, run_jvp, run_reverse, run_value_and_grad, run_vector_reverse

globals().update(OPCODE_NAMES)  # OP_<NAME> for every primitive
CACHE_ENABLED = _jit.CACHE_ENABLED  # after every kernel's decoration: False if Numba refused the disk cache

__all__ = [
    "CACHE_ENABLED", "ENTRY_POINTS", "MEMSET_MIN", "N_OPCODES", "PRIMITIVES", "PRIMITIVE_BY_NAME",
    "PRIMITIVE_BY_OPCODE", "VECTOR_BINARY", "VECTOR_RUN", "VECTOR_UNARY", "_zero", "run_forward", "run_hvp",
    "run_jvp", "run_reverse", "run_value_and_grad", "run_vector_reverse",
]  # fmt: skip
