"""SciPy's Python-level functions, replaced by fasttape's while a function is traced.

``scipy.linalg.cho_solve`` or ``scipy.special.logsumexp`` convert their inputs with ``np.asarray``,
so they never see a tracer.  While a function is traced, each listed name on its module is fasttape's
version (which calls SciPy's own for operands that are not traced); afterwards the module holds again
whatever it held before, a user's own patch included.  A name imported before the trace
(``from scipy.special import logsumexp``) is SciPy's own: its error names the fasttape function.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading

_LOCK = threading.Lock()


class Interception:
    """fasttape's versions of functions of one module, put in place while tracing."""

    def __init__(self, module: str, functions: dict):
        self.module, self.functions = module, functions
        self._original: dict = {}
        self._depth = 0

    @contextlib.contextmanager
    def active(self):
        module = sys.modules.get(self.module)
        if module is None:  # not imported: nothing can call it
            yield
            return
        with _LOCK:
            if self._depth == 0:
                for name, fn in self.functions.items():
                    current = getattr(module, name)
                    if current is not fn:  # what is there now is restored afterwards (a user's own patch too)
                        self._original[name] = current
                    setattr(module, name, fn)
            self._depth += 1
        try:
            yield
        finally:
            with _LOCK:
                self._depth -= 1
                if self._depth == 0:
                    for name in self.functions:
                        setattr(module, name, self._original[name])

    def original(self, name):
        """SciPy's own function (for operands that are not traced)."""
        return self._original.get(name) or getattr(importlib.import_module(self.module), name)
