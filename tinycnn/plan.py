"""The one loop that runs a model: forward to the logits, the loss, backward. Everything calls it.

``fit`` (in one thread, or on each thread's share of a batch), ``evaluate``, ``predict`` and the
gradient checks all run a model through a :class:`Plan`. Its whole story:

    for step in steps:                   x = step.forward(x, training)      # x ends as the logits
    loss = loss.forward(x, y)
    d = loss.backward() * scale                                             # dL/dlogits
    for step in reversed(steps[first:]): d = step.backward(d)               # fills every grads

``steps`` is the list of layers with the final softmax left out: the fused loss
(``losses.SoftmaxCrossEntropy``) applies it, stably, so a ``Softmax`` layer at the end is dropped,
and a last layer with ``activation="softmax"`` runs as :func:`without_activation` of itself (the
same layer, sharing its parameters and gradients, with ``activation=None``). ``predict`` applies
that softmax to the logits afterwards.

``first`` is the first step with parameters. Nobody needs the gradient of the data, so the
backward pass stops there; the steps before it (augmentation) run forward only.

``scale`` is 1 for a whole batch. Data parallelism (``tinycnn/parallel.py``) runs the same on a
share of n samples out of a batch of N, with scale = n / N, so that the shares' gradients add up
to the whole batch's.

Two modes. ``fast=False``, the reference mode (``model.compile(..., fast=False)``), runs exactly
the layers' own ``forward`` and ``backward``. ``fast=True``, the default, differs on the CPU only
where a fast twin stands in for layers or the loss: each Conv2D → ReLU → MaxPool2D
(``activation="relu"`` on the Conv2D, or a ``ReLU()`` layer between them) runs as one
:class:`~tinycnn.layers.fused.ConvReLUMaxPool` block, and each Conv2D → BatchNormalization → ReLU
→ MaxPool2D as one :class:`~tinycnn.layers.fused.ConvBatchNormReLUMaxPool` block, which compute
the same numbers in fewer passes over memory; each Dropout runs as
:class:`~tinycnn.layers.fused.OnePassDropout`, which draws the same mask by a kernel and applies
it in the same pass; ``SoftmaxCrossEntropy`` runs as
:class:`~tinycnn.losses.OnePassSoftmaxCrossEntropy`, one kernel each way; and the first step with
parameters, when it is such a block or a Conv2D
(:class:`~tinycnn.layers.fused.Conv2DWithoutDx`), skips its input gradient, which nobody needs.
``tests/test_fast_paths.py`` proves the two modes equal.

The layer contract (``layers/base.py``) is checked as the steps run when ``check`` is set: in the
reference mode always, in the fast mode on the first training step of ``fit``.
"""

import copy
import math

from .backend import is_gpu_array
from .layers.activations import ReLU, Softmax
from .layers.base import check_backward, check_forward
from .layers.conv import Conv2D
from .layers.dropout import Dropout
from .layers.fused import Conv2DWithoutDx, ConvBatchNormReLUMaxPool, ConvReLUMaxPool, OnePassDropout
from .layers.normalization import BatchNormalization
from .layers.pooling import MaxPool2D
from .losses import fast_twin


class Plan:
    """The steps that take ``layers`` to the logits, and the loops that run them.

    ``loss`` is a loss object of this plan's own (it keeps the probabilities its backward needs);
    ``input_grad=True`` makes even the first step with parameters return dL/dx (the gradient
    checks need it; training does not).
    """

    def __init__(self, layers, loss=None, fast=True, input_grad=False, check=False):
        self.loss = fast_twin(loss) if fast and loss is not None else loss
        self.fast, self.check = fast, check
        self.softmax = final_softmax(layers)
        self.steps = logit_steps(layers, fast, input_grad)
        self.first = first_trainable(self.steps)
        self._input_shapes = {}         # step index -> the shape of its last input, when checking

    def forward(self, x, training=False, start=0, stop=None):
        """Run ``steps[start:stop]`` (all of them: x to the logits); each keeps what its backward
        needs."""
        for i, step in enumerate(self.steps[start:stop], start):
            y = step.forward(x, training)
            if self.check:
                check_forward(step, x, y)
                self._input_shapes[i] = x.shape
            x = y
        return x

    def backward(self, d, stop=0):
        """Send d = dL/dlogits back through ``steps[stop:]``, last first; returns dL/d(their input),
        or None from a step that skips it."""
        for i in reversed(range(stop, len(self.steps))):
            d = self.steps[i].backward(d)
            if self.check:
                check_backward(self.steps[i], d, self._input_shapes.get(i))
        return d

    def loss_and_gradients(self, x, y, scale=1.0, start=0, read=True):
        """Forward from ``steps[start]`` to the logits, the loss, and backward to the first step with
        parameters, with dL/dlogits multiplied by ``scale``; every step's ``grads`` is filled.
        Returns (logits, mean loss over x). A loss that is not finite is returned before any
        backward pass.

        ``read=False`` (``fit``'s deferred mode, on the GPU): the loss stays an array where it was
        computed, unread, and the backward pass runs whatever it holds; the optimizer's sticky
        flag then refuses the update of a loss that is not finite."""
        logits = self.forward(x, training=True, start=start)
        loss = self.loss.forward(logits, y)
        if read:
            loss = float(loss)
            if not math.isfinite(loss):
                return logits, loss
        d = self.loss.backward()
        if scale != 1.0:
            d *= scale
        self.backward(d, stop=max(start, self.first))
        return logits, loss

    def predict(self, x):
        """The model's output in inference: the logits, then the final softmax if there is one."""
        logits = self.forward(x, training=False)
        return logits if self.softmax is None else self.softmax.forward(logits)


def final_softmax(layers):
    """The softmax a model ends in (a ``Softmax`` layer, or the last layer's softmax activation),
    or None when it ends in plain logits."""
    last = layers[-1]
    if isinstance(last, Softmax):
        return last
    activation = getattr(last, "activation", None)
    return activation if isinstance(activation, Softmax) else None


def without_activation(layer):
    """``layer`` as it runs without its activation: a shallow copy with ``activation=None``.

    The copy shares the layer's ``params``, ``grads`` and ``state`` dicts, so the forward and
    backward it runs are the layer's own code, and what backward fills lands in the layer.
    """
    twin = copy.copy(layer)
    twin.activation = None
    return twin


def logit_steps(layers, fast=True, input_grad=False):
    """The steps from the input to the logits (see the module docstring)."""
    softmax = final_softmax(layers)
    steps = list(layers)
    if softmax is steps[-1]:
        steps.pop()
    elif softmax is not None:
        steps[-1] = without_activation(steps[-1])
    if not fast:
        return steps
    steps = _fused(steps)
    first = first_trainable(steps)
    if not input_grad and steps and isinstance(steps[first], (ConvReLUMaxPool, ConvBatchNormReLUMaxPool)):
        steps[first].input_grad = False
    elif not input_grad and steps and type(steps[first]) is Conv2D:
        steps[first] = Conv2DWithoutDx(steps[first])
    return steps


def _fused(steps):
    """Replace each Conv2D(relu) → MaxPool2D and Conv2D → ReLU → MaxPool2D run by one block,
    each Conv2D → BatchNormalization → ReLU → MaxPool2D by another, and each Dropout by its
    one-pass twin.

    Only on the CPU: the blocks' kernels are Numba's (OnePassDropout runs the layer's own forward
    on the GPU). Only ReLU: the blocks compute ReLU and no other activation."""
    out, i = [], 0
    while i < len(steps):
        s = steps[i]
        if type(s) is Dropout:
            out.append(OnePassDropout(s))
            i += 1
            continue
        if type(s) is Conv2D and not is_gpu_array(s.params.get("kernel")):
            rest = [type(step) for step in steps[i + 1:i + 4]]
            if type(s.activation) is ReLU and rest[:1] == [MaxPool2D]:
                out.append(ConvReLUMaxPool(s, steps[i + 1]))
                i += 2
                continue
            if s.activation is None and rest[:2] == [ReLU, MaxPool2D]:
                out.append(ConvReLUMaxPool(s, steps[i + 2]))
                i += 3
                continue
            if s.activation is None and rest == [BatchNormalization, ReLU, MaxPool2D]:
                out.append(ConvBatchNormReLUMaxPool(s, steps[i + 1], steps[i + 3]))
                i += 4
                continue
        out.append(s)
        i += 1
    return out


def first_trainable(steps):
    """Where a training step's backward pass ends: the first layer or step with parameters (0 if
    none). Everything before it runs forward only."""
    return next((i for i, s in enumerate(steps) if s.params), 0)
