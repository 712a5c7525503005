"""A function as a fasttape user computes it again and again: traced on the first call (the ``prepare``
timing, for an eval's primal), then one compiled forward sweep of its tape per call; traced again when a
Python branch on a traced value goes the other way for new inputs."""

import fasttape as ft


def compiled(f, static_argnums=()):
    """``f``, called through its tape (the arguments of every call of one shape and structure)."""
    tape = None

    def call(*args):
        nonlocal tape
        if tape is not None:
            out = tape.forward(*args)
            if out is not None:
                return out
        tape = ft.trace(f, *args, static_argnums=static_argnums)
        return tape(*args)

    return call


def replayed(f, *args, static_argnums=()):
    """``run()`` of ``f(*args)`` on its tape."""
    call = compiled(f, static_argnums)
    return lambda: call(*args)
