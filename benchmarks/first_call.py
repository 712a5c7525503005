"""First use in a new process, cold and warm: ``python -m benchmarks.first_call``.

Runs the README's logistic regression in child processes with a fresh kernel cache
(``FASTTAPE_CACHE_DIR`` in a temporary directory) and prints, in seconds:

* cold cache: the first ``ft.grad``, ``ft.hvp`` and ``ft.jacobian`` calls (served by the NumPy
  executor while the kernels build), and how long after the first call the compiled gradient
  takes over;
* warm cache (a second process, after the first filled the cache): import, and the first calls.

It takes a few minutes (the cold build).  Timings are wall clock on a shared machine: run it
on a quiet one, and compare with the same run's other rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import fasttape as ft
from fasttape import tiers
out = {"import": time.perf_counter() - t0}

def loss(w, X, y):
    z = X @ w
    return np.sum(np.logaddexp(0.0, -y * z))

rng = np.random.default_rng(0)
X, y, w = rng.normal(size=(100, 10)), np.sign(rng.normal(size=100)), 0.1 * rng.normal(size=10)
grad = ft.grad(loss)
for name, call in (("grad", lambda: grad(w, X, y)),
                   ("hvp", lambda: ft.hvp(lambda v: loss(v, X, y), (w,), (w,))),
                   ("jacobian", lambda: ft.jacobian(lambda v: np.tanh(X @ v))(w))):
    t = time.perf_counter()
    call()
    out["first " + name] = time.perf_counter() - t
start = time.perf_counter()
if WAIT:
    while tiers.status()["run_value_and_grad"] != "compiled":
        grad(w, X, y)
        time.sleep(0.05)
    out["compiled gradient after"] = time.perf_counter() - start + out["first grad"]
    tiers.wait()
print("RESULT " + json.dumps(out))
"""


def _child(cache_dir, wait):
    env = {**os.environ, "FASTTAPE_CACHE_DIR": cache_dir}
    env.pop("FASTTAPE_TIERS", None)
    proc = subprocess.run([sys.executable, "-c", f"WAIT = {wait}\n" + CHILD], capture_output=True, text=True,
                          env=env, timeout=3600)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT ") :])


def main():
    with tempfile.TemporaryDirectory(prefix="fasttape-first-call-") as cache_dir:
        cold = _child(cache_dir, True)
        warm = _child(cache_dir, False)
    print(f"{'seconds':<28}{'cold cache':>12}{'warm cache':>12}")
    for key in ("import", "first grad", "first hvp", "first jacobian", "compiled gradient after"):
        row = [cold.get(key), warm.get(key)]
        print(f"{key:<28}" + "".join(f"{v:>12.3f}" if v is not None else f"{'':>12}" for v in row))


if __name__ == "__main__":
    main()
