"""oracle: differential testing of fasttape against JAX (float64).

``oracle.reference`` holds the JAX equivalent of every primitive of fasttape's
table and replays any recorded tape as a JAX program, so that JAX's derivatives
of the very program fasttape recorded serve as the reference.
"""

from .check import KINDS, KindResult, Report, check
from .reference import jax_primitives, replay_in_jax

__all__ = ["check", "Report", "KindResult", "KINDS", "jax_primitives", "replay_in_jax"]
