"""fasttape as a GradBench tool: ``python -m fasttape.gradbench`` speaks GradBench's protocol on stdin/stdout.

GradBench (github: gradbench/gradbench) compares AD tools on *evals*: an eval process sends JSON
messages, one per line, and a tool answers each with one line.  ``fasttape.gradbench.protocol`` serves
them; each eval this tool implements is a module of ``fasttape.gradbench.evals`` whose objectives are
written once in plain NumPy and differentiated by fasttape's own transformations.
"""

from .protocol import Tool, serve

__all__ = ["Tool", "serve"]
