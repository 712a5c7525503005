"""A short terminal tour of fasttape: ``python -m fasttape.demo``.

Three functions written as plain NumPy code: a logistic-regression loss, a
small tanh MLP with its parameters in a tuple, and a 1000-step Euler loop of
scalar arithmetic.  For each it shows the value and gradient, what the traced
tape looks like, how long the gradient takes next to the function itself, and,
when JAX is installed, how closely the gradient agrees with ``jax.grad``.  A
fourth part shows second order: Hessian-vector products (one and several
directions per sweep), a dense Hessian, and Newton-CG through
``ft.scipy_objective``; a fifth runs ``oracle.check`` on one function.
"""

import functools
import timeit

import numpy as np

import fasttape as ft
from fasttape import tiers

try:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
except ImportError:
    jax = jnp = None


def logistic_loss(w, X, y, xp=np):
    """Logistic-regression loss for labels y in {-1, +1}."""
    return xp.sum(xp.logaddexp(0.0, -y * (X @ w)))


def mlp_loss(params, X, Y, xp=np):
    """Mean squared error of a one-hidden-layer tanh network."""
    W1, b1, W2, b2 = params
    hidden = xp.tanh(X @ W1 + b1)
    return xp.mean((hidden @ W2 + b2 - Y) ** 2)


def lorenz_step(state, sigma=10.0, rho=28.0, beta=8.0 / 3.0, dt=0.01):
    """One explicit-Euler step of the Lorenz system, in scalar arithmetic."""
    x, y, z = state
    return x + dt * sigma * (y - x), y + dt * (x * (rho - z) - y), z + dt * (x * y - beta * z)


def lorenz(u, steps=1000):
    """Squared distance from the origin after ``steps`` Euler steps from (u[0], u[1], u[2])."""
    state = (u[0], u[1], u[2])
    for _ in range(steps):
        state = lorenz_step(state)
    x, y, z = state
    return x * x + y * y + z * z


def lorenz_jax(u, steps=1000):
    """The same loop as a ``jax.lax.fori_loop`` (JAX would otherwise trace 1000 Python steps)."""
    x, y, z = jax.lax.fori_loop(0, steps, lambda _, s: lorenz_step(s), (u[0], u[1], u[2]))
    return x * x + y * y + z * z


def median_us(fn, *args, repeat=9, seconds_per_repeat=0.02):
    """Median over ``repeat`` timeit runs of about 20 ms each, in microseconds per call."""
    timer = timeit.Timer(lambda: fn(*args))
    number = max(1, int(seconds_per_repeat / max(timer.timeit(1), 1e-7)))
    return float(np.median(timer.repeat(repeat, number))) / number * 1e6


def heading(text):
    print(f"\n{text}\n{'=' * len(text)}")


def wait_for_compiled():
    """Timings are of the compiled sweeps: wait for any still building in the background."""
    if "building" in tiers.status().values():
        start = timeit.default_timer()
        print("(waiting for the compiled kernels, loading or building in the background ...)", flush=True)
        tiers.wait()
        print(f"(compiled after {timeit.default_timer() - start:.0f} s more)")


def show_timing(f, args, plain_args=None):
    """Time ``f`` itself and ``ft.grad(f)`` (its tape cache warm) on the same inputs."""
    grad = ft.grad(f)
    grad(*args)
    wait_for_compiled()
    grad(*args)
    t_f = median_us(f, *(plain_args or args))
    t_g = median_us(grad, *args)
    print(f"time: f {t_f:.1f} us, grad {t_g:.1f} us  (grad / f = {t_g / t_f:.2f})")


def show_jax_check(grads, jax_f, args):
    """Max abs difference between fasttape's gradient and jax.grad's, over every leaf."""
    if jax is None:
        print("jax not installed: skipping the cross-check")
        return
    reference = jax.grad(jax_f)(*jax.tree.map(jnp.asarray, args))
    pairs = zip(jax.tree.leaves(grads), jax.tree.leaves(reference))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
    scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads))
    print(f"agrees with JAX to {diff:.0e}  (max abs difference; {diff / scale:.0e} of the largest entry)")


def summary(tape):
    s = tape.stats()
    ops = ", ".join(f"{name} x{count}" for name, count in sorted(s["by_primitive"].items(), key=lambda kv: -kv[1]))
    print(f"stats: {s['instructions']} instructions, {s['values']} values, {s['bytes']['total'] / 1e3:.0f} kB")
    print(f"       {ops}")


def main():
    rng = np.random.default_rng(0)

    heading("1. Logistic regression: np.sum(np.logaddexp(0.0, -y * (X @ w)))")
    X = rng.normal(size=(500, 20))
    y = np.sign(X @ rng.normal(size=20) + 0.5 * rng.normal(size=500))
    w = 0.1 * rng.normal(size=20)
    start = timeit.default_timer()
    value, g = ft.value_and_grad(logistic_loss)(w, X, y)
    first = timeit.default_timer() - start
    tier = "compiled" if tiers.status()["run_value_and_grad"] == "compiled" else "NumPy executor: kernels load or build"
    print(f"value: {value:.6f}\ngrad[:4]: {g[:4]}  (shape {g.shape})")
    print(f"trace + first gradient: {first * 1e3:.1f} ms ({tier})\n")
    tape = ft.trace(logistic_loss, w, X, y)
    print(f"{tape}\n")
    summary(tape)
    show_timing(logistic_loss, (w, X, y))
    show_jax_check(g, functools.partial(logistic_loss, xp=jnp), (w, X, y))

    heading("2. A tanh MLP with params = (W1, b1, W2, b2)")
    params = (rng.normal(size=(8, 32)) / 3, np.zeros(32), rng.normal(size=(32, 1)) / 6, np.zeros(1))
    Xm, Ym = rng.normal(size=(64, 8)), rng.normal(size=(64, 1))
    value, grads = ft.value_and_grad(mlp_loss)(params, Xm, Ym)
    print(f"value: {value:.6f}")
    print(f"grads: {type(grads).__name__} of shapes {[gr.shape for gr in grads]}")
    summary(ft.trace(mlp_loss, params, Xm, Ym))
    show_timing(mlp_loss, (params, Xm, Ym))
    show_jax_check(grads, functools.partial(mlp_loss, xp=jnp), (params, Xm, Ym))

    heading("3. 1000 explicit-Euler steps of the Lorenz system, scalar Python arithmetic")
    u = np.array([1.0, 1.0, 1.0])
    value, g = ft.value_and_grad(lorenz)(u)
    print(f"value: {value:.6f}\ngrad: {g}")
    tape = ft.trace(lorenz, u)
    steps_note = f"{tape.stats()['instructions'] / 1000:.0f} per step"
    print(f"the Python loop was recorded once: {tape.stats()['instructions']} instructions ({steps_note})")
    summary(tape)
    show_timing(lorenz, (u,), plain_args=(u.tolist(),))
    print("(f runs on Python floats, its fastest form)")
    show_jax_check(g, lorenz_jax if jax else None, (u,))

    heading("4. Second order: Hessian-vector products and Newton-CG on a 1000-dimensional Rosenbrock")
    x = np.full(1000, 0.5)
    v = rng.normal(size=1000)
    hv = ft.hvp(rosenbrock, (x,), (v,))
    print(f"H(x) v, never forming H: {hv[:3]} ...  (shape {hv.shape})")
    V = rng.normal(size=(1000, 4))
    HV = ft.hvp(rosenbrock, (x,), (V,))
    print(f"four directions in one sweep: shape {HV.shape}")
    tape = ft.trace(rosenbrock, x)
    tape(x), tape.value_and_grad(x), tape.hvp(x, V)  # every sweep timed below starts its build
    wait_for_compiled()
    t_f = median_us(tape, x)
    t_vg = median_us(tape.value_and_grad, x)
    t_hvp = median_us(tape.hvp, x, v)
    t_hvp4 = median_us(tape.hvp, x, V)
    print(f"time: forward {t_f:.1f} us, value_and_grad {t_vg:.1f} us ({t_vg / t_f:.1f}x), hvp {t_hvp:.1f} us")
    print(f"      ({t_hvp / t_f:.1f}x), hvp with 4 directions {t_hvp4:.1f} us ({t_hvp4 / t_hvp:.1f}x one direction)")
    if jax is not None:
        ref = jax.jvp(jax.grad(functools.partial(rosenbrock, xp=jnp)), (x,), (v,))[1]
        print(f"agrees with jax.jvp(jax.grad(f)) to {float(np.max(np.abs(hv - ref))):.0e}")
    H = ft.hessian(functools.partial(rosenbrock, xp=np))(x[:100])
    print(f"dense Hessian of the first 100 coordinates: {H.shape}, symmetric to {np.max(np.abs(H - H.T)):.0e}")
    try:
        from scipy.optimize import minimize
    except ImportError:
        print("scipy not installed: skipping Newton-CG")
        return
    x0 = np.tile([-1.2, 1.0], 500)
    start = timeit.default_timer()
    result = minimize(x0=x0, method="Newton-CG", options={"xtol": 1e-10}, **ft.scipy_objective(rosenbrock))
    elapsed = timeit.default_timer() - start
    print(f"minimize(x0, method='Newton-CG', **ft.scipy_objective(f)): {result.message}")
    print(f"  f = {result.fun:.2e} after {result.nit} iterations and {result.nhev} HVPs, {elapsed:.2f} s")
    print(f"  max |x - 1| = {np.max(np.abs(result.x - 1.0)):.1e}")


def show_oracle():
    """Every derivative kind of one function against JAX and finite differences."""
    heading("5. The oracle: oracle.check(f, x) against JAX (float64) and finite differences")
    try:
        import oracle
    except ImportError as exc:
        print(f"oracle unavailable ({exc}): install the jax extra")
        return
    x = np.linspace(-1.0, 1.0, 6)
    print(oracle.check(lambda v: np.sum(np.tanh(v) * np.exp(-(v**2)) + np.logaddexp(v, v[::-1])), x, name="f"))


def rosenbrock(x, xp=np):
    """The n-dimensional Rosenbrock function."""
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


if __name__ == "__main__":
    main()
    if jax is not None:
        show_oracle()
