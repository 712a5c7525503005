"""GradBench's ``lstm``: the loss of an l-layer LSTM predicting each next character (b bits) of a text of c
characters (``objective``), and its gradient in the parameters (``jacobian``: the rows of ``main_params``,
then those of ``extra_params``, flattened).

ADBench's cell, kept as the reference has it: every weight is diagonal (an elementwise product), the forget
and output gates read the layer's input and the input gate and the candidate read its hidden state.  Row 2i
of ``main_params`` holds layer i's weights and row 2i+1 its biases, each as four blocks of b (forget, input
gate, output gate, candidate); row 2i of ``state`` is layer i's hidden state and row 2i+1 its cell;
``extra_params`` is the input weight, the output weight and the output bias.  The loss at a step is the
cross-entropy against the next character under a log-sum-exp that adds 2 to the sum (ADBench's
``log(sum(exp(x), 2))``), averaged over the (c−1) b predictions.
"""

import numpy as np

import fasttape as ft

from .inputs import array, shaped
from .replay import replayed


def sigmoid(x, xp=np):
    return 1.0 / (1.0 + xp.exp(-x))


def cell_step(weight, bias, inp, hidden, cell, xp=np):
    """One layer's cell: the new hidden state and cell."""
    b = inp.shape[0]
    gates = xp.concatenate([inp, hidden, inp, hidden]) * weight + bias
    forget, ingate, outgate = (sigmoid(gates[j * b : (j + 1) * b], xp) for j in range(3))
    change = xp.tanh(gates[3 * b :])
    cell = cell * forget + ingate * change
    return outgate * xp.tanh(cell), cell


def loss(main_params, extra_params, state, sequence, xp=np):
    """The mean cross-entropy of the predictions of characters 1..c−1, the state carried from step to step."""
    layers = main_params.shape[0] // 2
    hidden = [state[2 * i] for i in range(layers)]
    cell = [state[2 * i + 1] for i in range(layers)]
    total = 0.0
    for t in range(sequence.shape[0] - 1):
        out = sequence[t] * extra_params[0]
        for i in range(layers):
            hidden[i], cell[i] = cell_step(main_params[2 * i], main_params[2 * i + 1], out, hidden[i], cell[i], xp)
            out = hidden[i]
        prediction = out * extra_params[1] + extra_params[2]
        normaliser = xp.log(xp.sum(xp.exp(prediction)) + 2.0)  # ADBench's log(sum(exp(x), 2))
        total = total + xp.sum(sequence[t + 1] * (prediction - normaliser))
    return -total / ((sequence.shape[0] - 1) * sequence.shape[1])


_gradient = ft.grad(loss, argnums=(0, 1))


def _arrays(data):
    main, sequence = array(data, "main_params", ndim=2), array(data, "sequence", ndim=2)
    if main.shape[0] % 2 or main.shape[1] % 4:
        raise ValueError(f"field 'main_params' should be 2l x 4b (l layers, b bits), got shape {main.shape}")
    layers, bits = main.shape[0] // 2, main.shape[1] // 4
    context = f" (l={layers}, b={bits})"
    extra, state = shaped(data, "extra_params", (3, bits), context), shaped(data, "state", (2 * layers, bits), context)
    if sequence.shape[1] != bits or sequence.shape[0] < 2:
        raise ValueError(f"field 'sequence' should be c x {bits} with c >= 2 characters, got shape {sequence.shape}")
    return main, extra, state, sequence


def _objective(data):
    return replayed(loss, *_arrays(data))


def _jacobian(data):
    args = _arrays(data)

    def run():
        main, extra = _gradient(*args)
        return np.concatenate([main.ravel(), extra.ravel()])

    return run


FUNCTIONS = {"objective": _objective, "jacobian": _jacobian}
