"""Sequential: a stack of layers, and everything that describes it: build, summary, weights, file.

Training it -- compile, fit, evaluate, predict -- is ``trainer.py``'s ``Trainer``, which
``Sequential`` inherits, as Keras splits its ``Model`` from its ``Trainer``; the loop that runs
the layers is ``plan.py``'s ``Plan``.
"""

import numpy as np

from . import checks
from .backend import check_device, to_device, to_numpy
from .layers.base import Layer, check_forward
from .layers.input import InputLayer
from .saving import save_model
from .serialization import load_weights_into
from .trainer import Trainer, one_call_at_a_time


class Sequential(Trainer):
    """A linear stack of layers.

    ``Sequential(layers, input_shape=(28, 28, 1), seed=0)``: ``input_shape`` is the shape of one
    sample (no batch axis); with it the model is built at once, otherwise on the first data it
    sees. Keras's ways of giving it work too: ``input_shape=`` on the first layer, or ``Input(shape=
    ...)`` first in the list. ``seed`` (an int or a ``numpy.random.Generator``) makes the initial
    weights reproducible; layers given their own ``seed`` keep it.

    ``dtype``: the parameters' dtype, float32 unless you ask for float64 (for gradient checks).
    Data of another float dtype is cast to the model's, as Keras does: ``x / 255.0`` (float64)
    trains a float32 model.
    """

    def __init__(self, layers=None, input_shape=None, seed=None, name="sequential", dtype=None):
        super().__init__()
        self._dtype_arg = None if dtype is None else checks.float_dtype(dtype, "dtype")
        self.name = checks.text(name, "name") if name is not None else "sequential"
        self.layers = []
        self.seed = checks.seed(seed)
        self.input_shape = checks.shape(input_shape, "input_shape") if input_shape is not None else None
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise TypeError(f"layers must be a list of layers, got {checks.show(layers)}.")
        self.dtype = None
        self.device = "cpu"
        self._rng = None          # the model's generator: initial weights, then shuffling
        for layer in layers or []:
            self.add(layer)
        if self.input_shape is not None and self.layers:
            self.build(self.input_shape)

    # -- structure ------------------------------------------------------------------------------
    @one_call_at_a_time
    def add(self, layer):
        """Append a layer, renaming it ``conv2d_1``-style if its name is taken.

        Like Keras, ``Sequential(input_shape=(28, 28, 1))`` followed by ``add(...)`` works: once
        the input shape is known, each added layer is built at once.

        A layer is one place in one model: it holds that place's weights, gradients and caches.
        Adding it a second time, or to a second model while the first still exists, is refused
        (building would re-initialise the first model's weights, and one layer in two places
        would mix two places' gradients). Make new layers instead; copy trained weights with
        ``new_model.set_weights(old_model.get_weights())``.
        """
        if isinstance(layer, InputLayer):
            self._take_input_shape(layer.shape, "an InputLayer (or Input(...))", dtype=layer.dtype)
            return
        if not isinstance(layer, Layer):
            hint = " (a class: call it, e.g. Flatten())" if isinstance(layer, type) else ""
            raise TypeError(f"Sequential takes layers such as Dense(10), got {checks.show(layer)}{hint}.")
        if getattr(layer, "input_shape_arg", None) is not None:
            if self.layers:
                raise ValueError(f"input_shape= is for a model's first layer, but {layer.name!r} would be layer "
                                 f"{len(self.layers) + 1}: its input is the previous layer's output. Remove "
                                 "input_shape= here, or give it to the first layer.")
            self._take_input_shape(layer.input_shape_arg, f"input_shape= of {layer.name!r}")
        if any(other is layer for other in self.layers):
            raise ValueError(f"Layer {layer.name!r} is already in this model, at position "
                             f"{next(i for i, other in enumerate(self.layers) if other is layer)}: a layer "
                             f"is one place in one model. For another such place, make another layer: {layer!r}.")
        owner = layer.model
        if owner is not None and owner is not self:
            raise ValueError(f"Layer {layer.name!r} already belongs to the model {owner.name!r}; building this "
                             "model from it would change that one's weights. Make new layers, and copy "
                             "trained weights with new_model.set_weights(old_model.get_weights()).")
        layer.model = self
        names = {other.name for other in self.layers}
        base, k = layer.name, 1
        while layer.name in names:
            layer.name = f"{base}_{k}"
            k += 1
        output_shape = self.output_shape if self.built else None
        self.layers.append(layer)
        if self.built:
            _build_layer(layer, output_shape, self.dtype, self._rng)
            layer.to(self.device)
        elif self.input_shape is not None:
            self.build(self.input_shape)

    def _take_input_shape(self, shape, where, dtype=None):
        """The shape of one sample as the first layer or an InputLayer gives it (Keras's way)."""
        if self.layers:
            raise ValueError(f"{where} must come first in the model, before any layer.")
        if self.input_shape is not None and tuple(self.input_shape) != tuple(shape):
            raise ValueError(f"{where} says samples have shape {tuple(shape)}, but the model was given "
                             f"input_shape={tuple(self.input_shape)}; keep one of the two.")
        self.input_shape = tuple(shape)
        if dtype is not None:
            self._dtype_arg = dtype

    def pop(self):
        """Remove the last layer and return it, as Keras's ``pop``. The layer is free to join
        another model, and the optimizer forgets its state (a layer added in its place starts
        with fresh moments, even under the same name)."""
        if not self.layers:
            raise ValueError("The model has no layers to pop.")
        with self._one_call("pop"):
            layer = self.layers.pop()
            layer._model = None
            if self.optimizer is not None:
                self.optimizer.forget(layer.name)
            return layer

    @property
    def built(self):
        return self.dtype is not None

    @one_call_at_a_time
    def build(self, input_shape=None, dtype=None):
        """Create every layer's parameters for samples of ``input_shape`` (no batch axis), in
        ``dtype``: the model's (``Sequential(dtype=...)``), float32 when it has none."""
        if not self.layers:
            raise ValueError("The model has no layers; add some before building it.")
        if input_shape is None and self.input_shape is None:
            raise ValueError("build() needs the shape of one sample, e.g. build((28, 28, 1)).")
        shape = checks.shape(input_shape if input_shape is not None else self.input_shape, "input_shape")
        dtype = checks.float_dtype(dtype if dtype is not None else self._dtype_arg or "float32", "dtype")
        self.input_shape = shape
        self._rng = np.random.default_rng(self.seed)
        if self.optimizer is not None:      # new weights: the moments of the old ones do not apply
            self.optimizer.reset()
        for layer in self.layers:
            shape = _build_layer(layer, shape, dtype, self._rng)
        self.dtype = np.dtype(dtype)
        if self.device != "cpu":
            for layer in self.layers:
                layer.to(self.device)

    @property
    def output_shape(self):
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    @one_call_at_a_time
    def to(self, device):
        """Move the model to ``"cpu"`` or ``"gpu"``, as in PyTorch; returns the model."""
        check_device(device)
        if device == "gpu":
            from .backend import require_cupy
            require_cupy()
        for layer in self.layers:
            layer.to(device)
        if self.optimizer is not None:
            self.optimizer.state = {k: to_device(v, device) for k, v in self.optimizer.state.items()}
        self.device = device
        return self

    # -- the output ---------------------------------------------------------------------------
    def forward(self, x, training=False):
        """The model's output for a batch already on its device (probabilities when it ends in
        softmax); what ``predict`` computes batch by batch, through the same plan."""
        if training:
            return self.plan().forward(x, training=True)
        return self.plan().predict(x)

    def summary(self, print_fn=print):
        """Print each layer's name, output shape and parameter count, and the totals."""
        if not self.built:
            raise RuntimeError("The model is not built yet: give Sequential(..., input_shape=...) "
                               "or call build(input_shape) or fit() first.")
        rows, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         "(None, " + ", ".join(map(str, shape)) + ")", f"{layer.count_params():,}"))
        # Keras's widths, widened to fit the longest entry: columns never run together.
        widths = [max(34, *(len(r[0]) + 2 for r in rows)), max(24, *(len(r[1]) + 2 for r in rows)),
                  max(12, *(len(r[2]) + 1 for r in rows))]
        rule = "_" * (sum(widths) + 2)
        lines = [f'Model: "{self.name}"', rule,
                 f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}{'Param #':>{widths[2]}}",
                 "=" * len(rule)]
        for i, (name, out, params) in enumerate(rows):
            lines.append(f"{name:<{widths[0]}}{out:<{widths[1]}}{params:>{widths[2]}}")
            lines.append(rule if i == len(rows) - 1 else "")
        total = self.count_params()
        trainable = sum(int(p.size) for layer in self.layers for p in layer.params.values())
        itemsize = self.dtype.itemsize
        lines += [f"Total params: {total:,} ({_size(total * itemsize)})",
                  f"Trainable params: {trainable:,} ({_size(trainable * itemsize)})",
                  f"Non-trainable params: {total - trainable:,} ({_size((total - trainable) * itemsize)})",
                  rule]
        text = "\n".join(lines)
        print_fn(text)
        return text

    @one_call_at_a_time
    def get_weights(self):
        """Every parameter and state array, layer by layer, as NumPy copies."""
        return [to_numpy(a).copy() for layer in self.layers
                for a in list(layer.params.values()) + list(layer.state.values())]

    @one_call_at_a_time
    def set_weights(self, weights):
        """Inverse of :meth:`get_weights`; shapes must match, and every value must be finite."""
        slots = [(layer, d, k) for layer in self.layers for d in (layer.params, layer.state) for k in d]
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"set_weights takes a list of arrays (as get_weights returns), got "
                            f"{checks.show(weights)}.")
        weights = [to_numpy(w) if hasattr(w, "shape") else np.asarray(w) for w in weights]
        if len(weights) != len(slots):
            raise ValueError(f"Expected {len(slots)} arrays, got {len(weights)}.")
        for (layer, d, k), w in zip(slots, weights):       # check every array before writing any
            if tuple(w.shape) != tuple(d[k].shape):
                raise ValueError(f"{layer.name}.{k}: expected shape {tuple(d[k].shape)}, got {tuple(w.shape)}. "
                                 "Nothing was set.")
            bad = int(w.size - np.isfinite(w).sum()) if np.issubdtype(w.dtype, np.inexact) else 0
            if bad:
                raise ValueError(f"{layer.name}.{k}: {bad} values are NaN or infinite; a model's weights must "
                                 "be finite. Nothing was set.")
        for (layer, d, k), w in zip(slots, weights):
            d[k][...] = to_device(np.asarray(w, dtype=d[k].dtype), self.device)

    def save_weights(self, filepath):
        """Keras's ``save_weights``: write the weights to ``filepath`` -- here as a whole model file
        (``save``), so that ``load_weights`` can check, layer by layer, that they fit."""
        self.save(filepath)

    def load_weights(self, filepath):
        """Keras's ``load_weights``: set this model's weights from a file ``save_weights`` or
        ``save`` wrote, for a model of the same layers. Its optimizer and its compile stay as
        they are."""
        with self._one_call("load_weights"):
            load_weights_into(filepath, self)

    @one_call_at_a_time
    def save(self, path):
        """Write the architecture, the weights and the optimizer's state to one ``.npz`` file,
        atomically (``tinycnn/saving.py``; ``load_model`` in ``tinycnn/serialization.py`` reads it
        back, ready to train on where it stopped). The mode (``compile(fast=...)``) is not saved:
        a loaded model runs in the fast mode until compiled otherwise."""
        save_model(self, path)


def _build_layer(layer, input_shape, dtype, rng):
    """Build ``layer`` for samples of ``input_shape``; returns its output shape.

    A layer that does not define ``output_shape`` inherits the base class's, which says the shape
    does not change. The next layer is built from that promise, so it is checked here, once, on a
    sample of zeros: a layer that forgot ``output_shape`` is named now, not blamed on the next.
    """
    layer.build(input_shape, dtype, rng)
    if type(layer).output_shape is Layer.output_shape:
        x = np.zeros((1, *input_shape), dtype=dtype)
        check_forward(layer, x, layer.forward(x, training=False))
    return tuple(layer.output_shape(input_shape))


def _size(nbytes):
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024


