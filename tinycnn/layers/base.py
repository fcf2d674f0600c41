"""The contract every layer keeps.

A layer is a small object with two methods:

    forward(x, training=False) -> y     computes the output and remembers what backward needs;
    backward(dout) -> dx                given dL/dy, returns dL/dx and fills ``self.grads``.

Parameters live in ``self.params`` (a dict of arrays); ``backward`` fills ``self.grads`` with the
same keys. Parameters are created on the first ``forward`` (or by ``build``), from the shape of
one sample and in the input's floating dtype, so float64 input gives float64 parameters -- which is
what the gradient checks need. There is no autograd graph: the chain rule is the order in which
``Sequential`` calls ``backward``.

Adding a layer of your own
--------------------------
Subclass ``Layer`` anywhere -- in tinycnn or in your own script -- and write:

    __init__(self, ..., name=None, seed=None)   store the arguments, call super().__init__(name, seed)
    build(self, input_shape, dtype, rng=None)   (if it has weights) call super().build, create params
    output_shape(self, input_shape)             (if the shape changes) the per-sample output shape
    forward(self, x, training=False)            call self._prepare(x) first; keep what backward needs
    backward(self, dout)                        return dx; fill self.grads[k] for every k in params
    get_config(self)                            every __init__ argument, as JSON values

then prove ``backward`` with ``tinycnn.gradcheck.check_layer(layer, x)`` on float64 input
(``tests/test_gradients.py`` does it for every layer here). That is all: defining the class
registers it (``__init_subclass__`` below puts it in ``LAYERS`` under its class name), so a model
that uses it trains, saves and loads with no change to tinycnn. ``load_model`` runs no code from
the file: it finds the class by name in ``LAYERS``, so the class must be defined (imported) in the
program that loads the model. An activation -- a layer usable as ``activation="..."`` -- subclasses
``tinycnn.layers.activations.Activation`` instead; ``LeakyReLU`` there is a worked example.
"""

import inspect
import json
import re

import numpy as np

from .. import checks
from ..backend import check_device, device_of, is_gpu_array, require_cupy, to_device

#: Every layer class by its class name: how ``load_model`` turns a saved architecture back into
#: layers, and where ``activation="..."`` looks. Filled by ``Layer.__init_subclass__``, never by hand.
LAYERS = {}


def _snake_case(name):
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


class Layer:
    """Base class: names, building on first use, shape and dtype checks, parameter counting.

    Every subclass is registered when Python runs its ``class`` statement (see the module
    docstring): that is the one place a layer becomes known to ``load_model``.
    """

    #: True when ``forward(x, training=True)`` treats every sample of x on its own, the same way
    #: every time. ``fit`` may then split a batch over the CPU cores (``tinycnn/parallel.py``).
    #: False for BatchNormalization (batch statistics), Dropout (random masks) and, to be safe,
    #: for a layer of your own until you set it.
    per_sample = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _register(cls)

    def __init__(self, name=None, seed=None):
        self.name = checks.text(name, "name") if name is not None else _snake_case(type(self).__name__)
        self.seed = checks.seed(seed)         # int or numpy Generator for initialisation; None: the model's
        self.params = {}          # trainable arrays, updated by the optimizer
        self.grads = {}           # dL/d(param), same keys as params, filled by backward
        self.state = {}           # non-trainable arrays saved with the model (e.g. moving averages)
        self.input_shape = None   # shape of one sample, set by build
        self.dtype = None
        self.device = "cpu"       # where params live: "cpu" (NumPy) or "gpu" (CuPy); see to()

    # -- building ---------------------------------------------------------------------------
    @property
    def built(self):
        return self.input_shape is not None

    def build(self, input_shape, dtype=np.float32, rng=None):
        """Fix the per-sample input shape and dtype; layers with weights create them here."""
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)

    def _rng(self, rng):
        """The generator to initialise from: the layer's own seed wins over the model's."""
        if self.seed is not None or rng is None:
            return np.random.default_rng(self.seed)
        return rng

    def output_shape(self, input_shape):
        """Per-sample output shape for a per-sample input shape (no batch axis)."""
        return tuple(input_shape)

    def _prepare(self, x):
        """Build on first use, then check that ``x`` matches what the layer was built for."""
        if not self.built:
            if x.dtype not in (np.float32, np.float64):
                raise TypeError(f"{self.name}: input has dtype {x.dtype}; layers take float32 or "
                                "float64 arrays (convert with x.astype('float32')).")
            self.build(x.shape[1:], x.dtype)
            if is_gpu_array(x) or self.device == "gpu":   # keep the weights beside the data
                self.to("gpu")
        if device_of(x) != self.device:
            raise TypeError(f"{self.name}: the layer is on the {self.device.upper()} but its input is a "
                            f"{'CuPy' if is_gpu_array(x) else 'NumPy'} array; move one of them "
                            f"(layer.to('{device_of(x)}'), or model.to(...) for a whole model).")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected input of shape (batch, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}.")
        elif x.dtype != self.dtype:
            raise TypeError(f"{self.name}: built for {self.dtype} but got {x.dtype}; "
                            f"convert the input with x.astype('{self.dtype}').")

    # -- the two methods every layer implements ----------------------------------------------
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    # -- bookkeeping ------------------------------------------------------------------------
    def count_params(self):
        return int(sum(p.size for p in self.params.values()) + sum(s.size for s in self.state.values()))

    def get_config(self):
        """The constructor arguments that rebuild this layer (saved as JSON by ``save``)."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def to(self, device):
        """Move this layer to ``"cpu"`` or ``"gpu"``, parameters and all; returns the layer.

        An unbuilt layer remembers the device and creates its parameters there. Asking for the
        GPU without CuPy or without a CUDA device raises at once: there is no silent fallback.
        """
        check_device(device)
        if device == "gpu":
            require_cupy()
        self.device = device
        activation = getattr(self, "activation", None)
        if activation is not None:
            activation.to(device)
        self.params = {k: to_device(v, device) for k, v in self.params.items()}
        self.state = {k: to_device(v, device) for k, v in self.state.items()}
        self.grads = {}
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


# -- the registry: a layer is saved by its class name and found by it again ------------------------

def _register(cls):
    """Put ``cls`` in ``LAYERS`` under its class name.

    Names starting with "_" are helpers (base classes shared by several layers) and stay out.
    Two different classes cannot share a name, since a saved model names its layers' classes;
    defining the same class again (re-running a notebook cell, reloading a module) replaces it.
    """
    name = cls.__name__
    if name.startswith("_"):
        return
    known = LAYERS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"A layer class named {name!r} already exists ({known.__module__}."
                        f"{known.__qualname__}); saved models name their layers by class name, so "
                        f"give {cls.__module__}.{cls.__qualname__} another name.")
    LAYERS[name] = cls


def spec_of(layer):
    """What a saved model stores for ``layer``: ``{"type": class name, "config": get_config()}``.

    Raises ``ValueError`` now, at save time, if ``load_model`` could not rebuild the layer as it
    is: its class is not the one registered under its name, its config is not JSON, or rebuilding
    from the config would lose an argument (``get_config`` forgot it). Nothing is dropped silently.
    """
    cls, config = type(layer), layer.get_config()
    if LAYERS.get(cls.__name__) is not cls:
        raise ValueError(f"{layer.name}: cannot save a {cls.__qualname__}: load_model finds layers by "
                         "class name and this class is not registered under its name (names "
                         "starting with '_' are not registered, and a class redefined since this "
                         "layer was made is another class). Rename it or make the layer again.")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{layer.name}: {cls.__name__}.get_config() must return JSON values "
                         f"(numbers, strings, lists, dicts), got {config!r} ({err}).") from None
    for arg in _init_args(layer):
        if isinstance(getattr(layer, arg), Layer):      # an activation inside Dense or Conv2D
            spec_of(getattr(layer, arg))
    _check_rebuilt(layer, cls.from_config(config), layer.name)
    return {"type": cls.__name__, "config": config}


def _check_rebuilt(layer, rebuilt, where):
    """Compare ``layer`` with ``rebuilt`` = ``from_config(get_config())`` argument by argument:
    every ``__init__`` argument the layer keeps as an attribute of the same name (``self.alpha =
    alpha``) must come back equal. Layer-valued arguments (an activation) are compared the same way."""
    for arg in _init_args(layer):
        mine, theirs = getattr(layer, arg), getattr(rebuilt, arg, None)
        if isinstance(mine, Layer):
            if type(theirs) is not type(mine):
                raise ValueError(f"{where}: its {arg} {type(mine).__name__} would load as "
                                 f"{type(theirs).__name__}; get_config() must save it.")
            _check_rebuilt(mine, theirs, f"{where} ({arg} {type(mine).__name__})")
        elif _plain(mine) and mine != theirs:
            raise ValueError(f"{where}: {type(layer).__name__}.get_config() does not keep the argument "
                             f"{arg!r} ({arg}={mine!r} here, {theirs!r} after loading); add it to "
                             "get_config() so that load_model can rebuild the layer.")


def _init_args(layer):
    """The ``__init__`` arguments ``layer`` keeps under their own names (name and seed aside)."""
    return [arg for arg in inspect.signature(type(layer).__init__).parameters
            if arg not in ("self", "name", "seed") and hasattr(layer, arg)]


def _plain(value):
    """A value that ``==`` compares meaningfully: numbers, strings, None and tuples/lists of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, np.number))


class UnknownLayerError(ValueError):
    """A saved model names a layer class that the running program has not defined."""


def from_spec(spec):
    """The layer a saved ``{"type": ..., "config": ...}`` describes, its class found in ``LAYERS``.

    Loading runs no code from the file: an unknown class name is an ``UnknownLayerError`` that
    says to define (or import) the class in the running program first.
    """
    cls = LAYERS.get(spec["type"])
    if cls is None:
        raise UnknownLayerError(f"the layer class {spec['type']!r} is not defined in this program. "
                                "Loading runs no code from the file, so a layer class of your own "
                                "must be defined (or imported) before load_model is called. Known "
                                f"layer classes: {', '.join(sorted(LAYERS))}.")
    return cls.from_config(spec["config"])
