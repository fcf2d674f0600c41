"""The contract every layer keeps.

A layer is a small object with two methods:

    forward(x, training=False) -> y     computes the output and remembers what backward needs;
    backward(dout) -> dx                given dL/dy, returns dL/dx and fills ``self.grads``.

The whole contract, which ``fit`` checks as it runs (the reference mode, ``compile(fast=False)``,
at every step; the default at the first) and ``tinycnn.gradcheck.check_layer`` checks too:

- ``forward`` returns an array whose shape, batch axis aside, is ``output_shape(x.shape[1:])``;
- ``backward`` returns dx with the shape of x;
- ``backward`` fills ``self.grads`` with exactly the keys of ``self.params``, each gradient the
  shape and dtype of its parameter;
- ``get_config()`` returns every ``__init__`` argument, so that ``from_config`` rebuilds the layer
  as it is (checked when the model is saved);
- ``per_sample`` is True only when ``forward(x, training=True)`` treats every sample on its own.

Parameters live in ``self.params`` (a dict of arrays). They are created on the first ``forward``
(or by ``build``), from the shape of one sample and in the input's floating dtype, so float64
input gives float64 parameters -- which is what the gradient checks need. There is no autograd
graph: the chain rule is the order in which the model calls ``backward`` (``tinycnn/plan.py``).

Adding a layer of your own
--------------------------
Subclass ``Layer`` anywhere -- in tinycnn or in your own script -- and write:

    __init__(self, ..., name=None, seed=None)   store each argument under its own name
                                                (self.size = size), call super().__init__(name, seed)
    build(self, input_shape, dtype, rng=None)   (if it has weights) call super().build, create params
    output_shape(self, input_shape)             (if the shape changes) the per-sample output shape
    forward(self, x, training=False)            call self._prepare(x) first; keep what backward needs
    backward(self, dout)                        return dx; fill self.grads[k] for every k in params
    get_config(self)                            every __init__ argument, as JSON values
    per_sample = True                           (a class attribute) if forward treats each sample
                                                on its own, the same way every time: fit may then
                                                split a batch over the CPU cores

then prove ``backward`` with ``tinycnn.gradcheck.check_layer(layer, x)`` on float64 input
(``tests/test_gradients.py`` does it for every layer here). That is all: defining the class
registers it (``__init_subclass__`` below puts it in ``LAYERS`` under its class name), so a model
that uses it trains, saves and loads with no change to tinycnn. ``load_model`` runs no code from
the file: it finds the class by name in ``LAYERS``, so the class must be defined (imported) in the
program that loads the model. An activation -- a layer usable as ``activation="..."`` -- subclasses
``tinycnn.layers.activations.Activation`` instead; ``LeakyReLU`` there is a worked example.
"""

import functools
import inspect
import json
import re
import weakref

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
    #: False for BatchNormalization (batch statistics: ``parallel.py`` runs a twin that sums them
    #: across the threads instead) and, to be safe, for a layer of your own until you set it
    #: (``fit`` says when a layer keeps it on one thread).
    per_sample = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = _taking_input_shape(vars(cls)["__init__"])
        _register(cls)

    def __init__(self, name=None, seed=None, input_shape=None, input_dim=None):
        self.name = checks.text(name, "name") if name is not None else _snake_case(type(self).__name__)
        self.input_shape_arg = _input_shape_arg(input_shape, input_dim)   # Keras's, for a first layer
        self.seed = checks.seed(seed)         # int or numpy Generator for initialisation; None: the model's
        self.params = {}          # trainable arrays, updated by the optimizer
        self.grads = {}           # dL/d(param), same keys as params, filled by backward
        self.state = {}           # non-trainable arrays saved with the model (e.g. moving averages)
        self.input_shape = None   # shape of one sample, set by build
        self.dtype = None
        self.device = "cpu"       # where params live: "cpu" (NumPy) or "gpu" (CuPy); see to()
        self._model = None        # a weak reference to the model that holds this layer (see model)

    @property
    def model(self):
        """The model this layer is a place in (``Sequential.add`` sets it), or None."""
        ref = getattr(self, "_model", None)
        return ref() if ref is not None else None

    @model.setter
    def model(self, model):
        self._model = weakref.ref(model)     # weak: a layer does not keep its model alive

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
        for arrays in (self.params, self.state):   # in place: a plan's steps share these dicts
            arrays.update({k: to_device(v, device) for k, v in arrays.items()})
        self.grads.clear()
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _taking_input_shape(init):
    """``init`` that also takes Keras's ``input_shape=`` (and ``input_dim=``, for ``Dense``).

    Keras lets the first layer of a model give the shape of one sample:
    ``Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1))``. Every layer takes that keyword
    here, so that no layer's own ``__init__`` has to pass it along: the shape is kept as
    ``layer.input_shape_arg``, and ``Sequential.add`` builds the model from it (and refuses it on
    any layer but the first).
    """
    @functools.wraps(init)
    def __init__(self, *args, input_shape=None, input_dim=None, **kwargs):
        init(self, *args, **kwargs)
        if input_shape is not None or input_dim is not None:
            self.input_shape_arg = _input_shape_arg(input_shape, input_dim)
    return __init__


def _input_shape_arg(input_shape, input_dim):
    """Keras's ``input_shape=(28, 28, 1)`` or ``input_dim=784`` as one shape, or None."""
    if input_dim is not None:
        if input_shape is not None:
            raise ValueError("Give input_shape or input_dim, not both.")
        return (checks.integer(input_dim, "input_dim", minimum=1),)
    return None if input_shape is None else checks.shape(input_shape, "input_shape")


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


#: Attributes every layer has that describe its life, not its configuration (where it runs, what
#: it was built for, its arrays): ``_check_rebuilt`` does not compare them.
_BOOKKEEPING = {"name", "seed", "params", "grads", "state", "input_shape", "dtype", "device", "input_shape_arg"}


def _check_rebuilt(layer, rebuilt, where):
    """Compare ``layer`` with ``rebuilt`` = ``from_config(get_config())``, attribute by attribute.

    Every attribute that ``__init__`` sets (those the fresh ``rebuilt`` has) must come back equal,
    whatever its name: ``self.alpha = alpha`` and ``self.pool_size = size`` alike. Layer-valued
    attributes (an activation) are compared the same way; arrays and generators are not compared.
    """
    init_args = set(_init_args(layer))
    for attr in vars(rebuilt):
        if attr in _BOOKKEEPING or attr.startswith("_") or not hasattr(layer, attr):
            continue
        mine, theirs = getattr(layer, attr), getattr(rebuilt, attr)
        if isinstance(mine, Layer):
            if type(theirs) is not type(mine):
                raise ValueError(f"{where}: its {attr} {type(mine).__name__} would load as "
                                 f"{type(theirs).__name__}; get_config() must save it.")
            _check_rebuilt(mine, theirs, f"{where} ({attr} {type(mine).__name__})")
        elif _plain(mine) and mine != theirs:
            if attr in init_args:
                raise ValueError(f"{where}: {type(layer).__name__}.get_config() does not keep the argument "
                                 f"{attr!r} ({attr}={mine!r} here, {theirs!r} after loading); add it to "
                                 "get_config() so that load_model can rebuild the layer.")
            raise ValueError(f"{where}: {type(layer).__name__}.get_config() does not rebuild the layer as "
                             f"it is: its attribute {attr!r} is {mine!r} here and {theirs!r} after "
                             "loading. Store each __init__ argument under its own name (self.size = "
                             "size) and return every argument from get_config().")


def _init_args(layer):
    """The ``__init__`` arguments ``layer`` keeps under their own names (name and seed aside)."""
    return [arg for arg in inspect.signature(type(layer).__init__).parameters
            if arg not in ("self", "name", "seed", "input_shape", "input_dim") and hasattr(layer, arg)]


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


# -- checking the contract while a model runs (tinycnn/plan.py calls these) ------------------------

def check_forward(layer, x, y):
    """``y = layer.forward(x)`` has the shape that ``layer.output_shape`` promises."""
    expected = tuple(layer.output_shape(tuple(x.shape[1:])))
    if tuple(y.shape) != (x.shape[0], *expected):
        raise ValueError(f"{layer.name}: forward returned shape {tuple(y.shape)} for input {tuple(x.shape)}, "
                         f"but output_shape{tuple(x.shape[1:])} says {expected} per sample. The model "
                         f"builds the next layer from output_shape, so {type(layer).__name__}.output_shape "
                         "must return what forward returns, without the batch axis.")


def check_backward(layer, dx, x_shape):
    """After ``dx = layer.backward(dout)``: dx has the shape of the input x (``x_shape``, when
    known; None for a step that skips dL/dx), and ``layer.grads`` matches ``layer.params``."""
    if dx is not None and x_shape is not None and tuple(dx.shape) != tuple(x_shape):
        raise ValueError(f"{layer.name}: backward returned dx of shape {tuple(dx.shape)}, but its input x "
                         f"had shape {tuple(x_shape)}. backward(dout) must return dL/dx, shaped like x.")
    check_gradients(layer)


def check_gradients(layer):
    """``layer.grads`` has exactly the keys of ``layer.params``, each gradient the shape and dtype
    of its parameter (what an optimizer needs before it reads them together)."""
    params, grads = layer.params, layer.grads
    if set(grads) != set(params):
        missing, extra = sorted(set(params) - set(grads)), sorted(set(grads) - set(params))
        raise ValueError(f"{layer.name}: backward must fill grads with exactly the keys of params "
                         f"({sorted(params)}); "
                         + "; ".join(filter(None, [missing and f"missing {missing}",
                                                   extra and f"not parameters: {extra}"])) + ".")
    for key, param in params.items():
        grad = grads[key]
        if tuple(getattr(grad, "shape", ())) != tuple(param.shape) or getattr(grad, "dtype", None) != param.dtype:
            raise ValueError(f"{layer.name}: grads[{key!r}] has shape {tuple(getattr(grad, 'shape', ()))} and "
                             f"dtype {getattr(grad, 'dtype', type(grad).__name__)}, but the parameter "
                             f"params[{key!r}] has shape {tuple(param.shape)} and dtype {param.dtype}; a "
                             "gradient must have the shape and dtype of its parameter.")
