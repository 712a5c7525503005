"""Small programs shared by the saved-tape and hostile-input tests."""

import numpy as np

X3 = np.array([0.5, -1.0, 2.0])
M33 = np.array([[1.0, 0.5, -0.25], [0.0, 2.0, 1.0], [-1.0, 0.25, 0.5]])


def rich(x, m):
    """One of each structural primitive: matmul, gather, cumsum, max, broadcast, and a guard."""
    y = m @ x
    z = np.tanh(y)[::-1]
    s = np.cumsum(z) + np.max(x)
    w = x[:, None] * np.ones((3, 2))
    if np.sum(x) > 0:
        s = s * 2.0
    return np.sum(s) + np.sum(w)
