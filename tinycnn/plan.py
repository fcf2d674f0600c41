"""The steps a training pass runs: the model's layers, with two small changes.

``Sequential`` trains by calling ``forward`` on each step and then ``backward`` in reverse:

    for step in steps:           x = step.forward(x, training=True)      # x ends as the logits
    for step in reversed(steps): d = step.backward(d)

``steps`` is the list of layers, except that
1. a final softmax is left out: the fused loss (``losses.SoftmaxCrossEntropy``) applies it, so a
   ``Softmax`` layer at the end is dropped, and ``activation="softmax"`` on the last layer is
   wrapped in :class:`Logits`;
2. on the CPU, each Conv2D → ReLU → MaxPool2D (``activation="relu"`` on the Conv2D, or a separate
   ``ReLU()`` layer) becomes one :class:`~tinycnn.layers.fused.ConvReLUMaxPool` block, which gives
   the same numbers in fewer passes over memory.

In training, nobody needs the gradient of the data, so the backward pass can stop early:
:func:`trainable_tail` keeps the steps from the first one with parameters on (augmentation layers
before it run forward only), and that first step, wrapped in :class:`NoInputGrad`, skips its own
input gradient (for a convolution: a matrix product and col2im).
"""

from .backend import is_gpu_array
from .layers.activations import ReLU, Softmax
from .layers.conv import Conv2D
from .layers.dense import Dense
from .layers.fused import ConvReLUMaxPool
from .layers.pooling import MaxPool2D


class Logits:
    """A last layer with ``activation="softmax"``, run without its softmax."""

    def __init__(self, layer):
        self.layer, self.name = layer, layer.name

    params = property(lambda self: self.layer.params)
    grads = property(lambda self: self.layer.grads)

    def forward(self, x, training=False):
        return self.layer.forward(x, training, apply_activation=False)

    def backward(self, dout, input_grad=True):
        return self.layer.backward(dout, apply_activation=False, input_grad=input_grad)


class NoInputGrad:
    """The first step with parameters, in training: fills its gradients, returns no dL/dx."""

    def __init__(self, step):
        self.step, self.name = step, step.name

    params = property(lambda self: self.step.params)
    grads = property(lambda self: self.step.grads)

    def forward(self, x, training=False):
        return self.step.forward(x, training)

    def backward(self, dout):
        self.step.backward(dout, input_grad=False)
        return None


def softmax_head(layers):
    """How the layers end: "layer" (a Softmax layer), "activation" (softmax on the last layer)
    or None (plain logits)."""
    last = layers[-1]
    if isinstance(last, Softmax):
        return "layer"
    if isinstance(getattr(last, "activation", None), Softmax):
        return "activation"
    return None


def logit_steps(layers):
    """The steps from the input to the logits (see the module docstring)."""
    head = softmax_head(layers)
    steps = list(layers[:-1] if head == "layer" else layers)
    if head == "activation":
        steps[-1] = Logits(steps[-1])
    return _fused(steps)


def _fused(steps):
    """Replace each Conv2D(relu) → MaxPool2D and Conv2D → ReLU → MaxPool2D run by one block."""
    out, i = [], 0
    while i < len(steps):
        s = steps[i]
        if type(s) is Conv2D and not is_gpu_array(s.params.get("kernel")):
            rest = steps[i + 1:i + 3]
            if type(s.activation) is ReLU and rest and type(rest[0]) is MaxPool2D:
                out.append(ConvReLUMaxPool(s, rest[0]))
                i += 2
                continue
            if (s.activation is None and len(rest) == 2 and type(rest[0]) is ReLU
                    and type(rest[1]) is MaxPool2D):
                out.append(ConvReLUMaxPool(s, rest[1]))
                i += 3
                continue
        out.append(s)
        i += 1
    return out


def first_trainable(steps):
    """Where a training step's backward pass ends: the first layer or step with parameters (0 if
    none). Everything before it runs forward only."""
    return next((i for i, s in enumerate(steps) if s.params), 0)


def trainable_tail(steps):
    """(steps before the first one with parameters, the steps from it on): a training step runs
    the first part forward only. The first trainable step skips its input gradient where it can."""
    first = first_trainable(steps)
    head, tail = steps[:first], list(steps[first:])
    if tail and isinstance(tail[0], (Conv2D, Dense, ConvReLUMaxPool, Logits)):
        tail[0] = NoInputGrad(tail[0])
    return head, tail
