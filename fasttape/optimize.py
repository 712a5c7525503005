"""Hand a traced function to ``scipy.optimize.minimize`` in one line.

>>> from scipy.optimize import minimize
>>> res = minimize(x0=x0, method="Newton-CG", **ft.scipy_objective(f))    # doctest: +SKIP

``fun`` returns the value and the gradient together (``jac=True``), and
``hessp`` gives Hessian-vector products from the tape's second-order sweep,
reusing the forward values while the optimiser stays at one point (the inner
conjugate-gradient loop of Newton-CG and trust-region methods).
"""

from __future__ import annotations

import numpy as np

from .api import value_and_grad


def scipy_objective(fun) -> dict:
    """``fun``, ``jac`` and ``hessp`` keyword arguments for ``scipy.optimize.minimize``.

    ``fun(x, *args)`` must return a scalar; ``x`` is the 1-D float array SciPy
    optimises and ``args`` are passed through (SciPy's ``args=``).
    """
    vg = value_and_grad(fun)
    last = {"x": None, "args": None, "operator": None}

    def fun_and_grad(x, *args):
        value, grad = vg(np.asarray(x, dtype=np.float64), *args)
        return float(value), grad

    def hessp(x, p, *args):
        x = np.asarray(x, dtype=np.float64)
        if last["operator"] is None or not np.array_equal(x, last["x"]) or last["args"] != args:
            tape = vg.tape(x, *args)
            last.update(x=x.copy(), args=args, operator=tape.hvp_at(x, *args))
        return last["operator"](np.asarray(p, dtype=np.float64))

    return {"fun": fun_and_grad, "jac": True, "hessp": hessp}
