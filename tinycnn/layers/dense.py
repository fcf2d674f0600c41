"""Dense: the fully connected layer."""

from .. import checks, initializers
from . import activations
from .base import Layer


class Dense(Layer):
    """y = x @ kernel + bias, then the activation if one is given.

    Shapes
        x       (N, D_in)
        kernel  (D_in, D_out)        Keras layout
        bias    (D_out,)
        y       (N, D_out)

    Backward, with dz = dL/dz for z = x @ kernel + bias (N, D_out):
        dL/dkernel = x.T @ dz       (D_in, D_out): kernel[i, j] carries x[:, i] into z[:, j]
        dL/dbias   = dz.sum(axis=0) (D_out,): the bias is added to every sample
        dL/dx      = dz @ kernel.T  (N, D_in)

    dL/dx is computed as (kernel @ dz.T).T, the same product: OpenBLAS multiplies by a transposed
    right-hand side slowly when N is a few samples, as in fit's shares (``benchmarks/layers.py``
    profiles the step).

    ``activation="relu"`` (or any name in ``layers/activations.py``) applies that layer to z;
    backward first takes the gradient back through it.

    ``kernel_initializer`` and ``bias_initializer`` name how the parameters start
    (``initializers.py``): Keras's "glorot_uniform" and "zeros" by default, "torch_default" for
    PyTorch's ``nn.Linear`` (both uniform in ±1/sqrt(D_in)).

    What ``fit`` runs: this code, in both modes. When the model ends in ``activation="softmax"``,
    the last Dense runs without it (``plan.without_activation``) and the loss applies the softmax
    (``losses.py``).
    """

    per_sample = True

    def __init__(self, units, activation=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name=None, seed=None):
        super().__init__(name=name, seed=seed)
        self.units = checks.integer(units, "units", minimum=1)
        self.activation = activations.get(activation)
        initializers.get(kernel_initializer)            # an unknown name fails here, not in build
        initializers.get(bias_initializer)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_shape, dtype="float32", rng=None):
        if len(input_shape) != 1:
            raise ValueError(f"{self.name}: Dense takes (batch, features) input, got per-sample shape "
                             f"{tuple(input_shape)}; put a Flatten() layer before it.")
        super().build(input_shape, dtype)
        fan_in = input_shape[0]                     # the inputs each unit sums
        rng = self._rng(rng)
        self.params = {
            "kernel": initializers.get(self.kernel_initializer)((fan_in, self.units), rng, self.dtype, fan_in=fan_in),
            "bias": initializers.get(self.bias_initializer)((self.units,), rng, self.dtype, fan_in=fan_in),
        }
        if self.activation is not None:
            self.activation.build((self.units,), self.dtype)

    def output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, training=False):
        self._prepare(x)
        self.x = x
        z = x @ self.params["kernel"]
        z += self.params["bias"]
        return z if self.activation is None else self.activation.forward(z, training)

    def backward(self, dout):
        dz = dout if self.activation is None else self.activation.backward(dout)
        self.grads["kernel"] = self.x.T @ dz
        self.grads["bias"] = dz.sum(axis=0)
        return (self.params["kernel"] @ dz.T).T        # = dz @ kernel.T (see the docstring)

    def get_config(self):
        return {"name": self.name, "units": self.units, "activation": activations.config_of(self.activation),
                "kernel_initializer": self.kernel_initializer, "bias_initializer": self.bias_initializer}
