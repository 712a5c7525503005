"""The evals this tool implements: ``MODULES`` maps a GradBench module name to its functions.

Each eval module holds ``FUNCTIONS``: a function name -> ``prepare(input) -> run``, where ``prepare``
turns the eval's JSON input into arrays (untimed) and ``run()`` computes the output once (timed); the
output is NumPy (arrays, floats) or nested lists and dicts of them, made JSON by the protocol.
"""

from . import ba, det, gmm, hello, ht, kmeans, llsq, lse, lstm, ode, particle, saddle

EVALS = (ba, det, gmm, hello, ht, kmeans, llsq, lse, lstm, ode, particle, saddle)
MODULES = {module.__name__.rsplit(".", 1)[1]: module.FUNCTIONS for module in EVALS}
