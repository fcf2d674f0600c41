"""Prove a backward pass right by comparing it with finite differences.

For any function f of an array x, the central difference

    df/dx_i  ≈  (f(x + h e_i) - f(x - h e_i)) / (2h)

has an error of order h², so with h = 1e-5 in float64 it matches a correct analytic gradient to
about 1e-8 relative error, while a wrong one is off by order 1.

A layer maps x to y, and ``backward(dout)`` claims to return dL/dx for a loss whose gradient
with respect to y is ``dout``. We make that loss explicit, L = sum(y * dout), with a *random*
``dout`` (all ones would hide bugs that mix up or permute outputs), and differentiate it
numerically with respect to x and to every parameter.

The error reported is the cs231n relative error, max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|).

Point it at your own layer:

    >>> from tinycnn.gradcheck import check_layer
    >>> check_layer(MyLayer(), x)            # x: float64 array; returns {"x": err, "kernel": err, ...}

On the GPU. ``device="gpu"`` runs the same check with the layer (or model) and x on the GPU: x
and the upstream gradient are copied there, the layer is moved with ``.to("gpu")``, and each
entry is perturbed in place *on the GPU*, so the forward passes being differentiated are the
GPU's own (its CUDA kernels, its matrix products). Only the scalar loss comes back to the host
for each perturbation, and the analytic gradients are copied back once, with ``to_numpy``, to
be compared. The numbers need float64 on the GPU too.
"""

import numpy as np

from .backend import to_device, to_numpy
from .layers.base import check_backward, check_forward
from .losses import SoftmaxCrossEntropy
from .plan import Plan


def rel_error(a, b):
    """max |a - b| / max(1e-8, |a| + |b|), element-wise then the worst element (on the host)."""
    a, b = np.asarray(to_numpy(a), dtype=np.float64), np.asarray(to_numpy(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Cannot compare gradients of shapes {a.shape} and {b.shape}.")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f, x, h=1e-5, indices=None):
    """Central differences of the scalar function ``f()`` with respect to array ``x``.

    ``x`` is perturbed in place, one entry at a time, and restored; ``f`` must read it and
    return a Python float. ``x`` may live on the GPU: it is changed there, where ``f`` reads it.
    ``indices`` (flat positions) limits the work to those entries; the others stay 0.
    Returns a NumPy array shaped like ``x``.
    """
    if x.dtype != np.float64:
        raise TypeError(f"Gradient checks need float64 (got {x.dtype}): float32 rounding at "
                        "h = 1e-5 would swamp the difference.")
    grad = np.zeros(x.shape, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)          # flat is a view: writes reach x
    for i in range(flat.size) if indices is None else indices:
        i = int(i)
        old = float(flat[i])     # a copy: on the GPU, flat[i] would be a view that changes too
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def check_layer(layer, x, seed=0, h=1e-5, training=True, device="cpu"):
    """Relative errors of ``layer``'s backward pass: {"x": ..., "<param>": ...} for every param.

    ``x`` is taken as float64; the layer is built from it if it is not built yet (so its
    parameters are float64 too). A layer already built in another dtype is a TypeError that says
    how to get a float64 one: its parameters cannot follow x. The upstream gradient is random,
    drawn from ``seed``. ``device`` ("cpu" or "gpu") is where the layer, x and the upstream
    gradient live while the check runs; the layer stays there afterwards. The layer contract
    (``layers/base.py``) is checked first: a layer that breaks it gets an error naming the rule,
    not a comparison of mismatched arrays.
    """
    if layer.built and layer.dtype != np.float64:
        raise TypeError(
            f"check_layer: layer {layer.name!r} is built for {layer.dtype}, but gradient checks need "
            "float64 parameters (float32 rounding at h = 1e-5 would swamp the difference, and "
            f"converting x cannot change the layer). Check a new, unbuilt {type(layer).__name__}(...), "
            "which check_layer builds from the float64 x, or rebuild this one (new weights): "
            f"layer.build({layer.input_shape}, 'float64').")
    x = np.array(to_numpy(x), dtype=np.float64)
    if not layer.built:
        layer.build(x.shape[1:], x.dtype)          # parameters are made on the CPU ...
    layer.to(device)                               # ... and moved to the device
    x = to_device(x, device)
    y = layer.forward(x, training=training)
    check_forward(layer, x, y)
    dout = to_device(np.random.default_rng(seed).standard_normal(y.shape), device)

    def loss():
        return float((layer.forward(x, training=training) * dout).sum())

    dx = layer.backward(dout)                      # backward of the forward that made y
    check_backward(layer, dx, x.shape)
    analytic = {"x": dx, **{name: g.copy() for name, g in layer.grads.items()}}
    errors = {"x": rel_error(dx, numerical_gradient(loss, x, h))}
    for name, param in layer.params.items():
        errors[name] = rel_error(analytic[name], numerical_gradient(loss, param, h))
    return errors


def check_loss(loss, logits, labels, h=1e-5, device="cpu"):
    """Relative error of a loss's backward (dL/dlogits) against finite differences."""
    logits = to_device(np.array(to_numpy(logits), dtype=np.float64), device)
    labels = to_device(labels, device)
    loss.forward(logits, labels)
    analytic = loss.backward()
    return rel_error(analytic, numerical_gradient(lambda: float(loss.forward(logits, labels)), logits, h))


def check_model(model, x, y, h=1e-5, samples=None, seed=0, device="cpu"):
    """End to end: errors of dL/dx and of every parameter of every layer, L the model's loss.

    Runs the model's own plan (``tinycnn/plan.py``: logits, fused loss, backward through every
    step, in the mode ``compile`` chose) without the optimizer step. Returns {"x": ..., "<layer>/<param>": ...}. A whole model has too many
    parameters to perturb one by one, so ``samples=k`` checks k random entries of each array
    (all of them when it has fewer), as cs231n's ``grad_check_sparse`` does. ``device`` is
    where the model, x and y live while the check runs; the model stays there afterwards.
    An unbuilt model is built in float64 from x; one already built in float32 (as
    ``Sequential(..., input_shape=...)`` builds) is a TypeError that says how to rebuild it.
    """
    if model.built and model.dtype != np.float64:
        raise TypeError(
            f"check_model: the model is built for {model.dtype} (Sequential(..., input_shape=...) "
            "builds in float32), but gradient checks need float64 parameters (float32 rounding at "
            "h = 1e-5 would swamp the difference, and converting x cannot change the model). Rebuild "
            f"it in float64 (new weights, from the model's seed): model.build({model.input_shape}, "
            "'float64'); to keep its weights, take weights = model.get_weights() before and "
            "model.set_weights(weights) after.")
    x = np.array(to_numpy(x), dtype=np.float64)
    if not model.built:
        model.build(x.shape[1:], "float64")
    model.to(device)
    x, y = to_device(x, device), to_device(y, device)
    rng = np.random.default_rng(seed)

    def compare(analytic, array, f):
        idx = None if samples is None or array.size <= samples else rng.choice(array.size, samples, replace=False)
        numeric = numerical_gradient(f, array, h, idx)
        if idx is None:
            return rel_error(analytic, numeric)
        return rel_error(to_numpy(analytic).reshape(-1)[idx], numeric.reshape(-1)[idx])

    loss_fn = type(model.loss)() if model.loss is not None else SoftmaxCrossEntropy()
    plan = Plan(model.layers, loss_fn, fast=model.fast, input_grad=True, check=True)

    def loss():
        return float(plan.loss.forward(plan.forward(x, training=True), y))

    loss()
    dx = plan.backward(plan.loss.backward())
    analytic = {f"{layer.name}/{k}": g.copy() for layer in model.layers for k, g in layer.grads.items()}
    errors = {"x": compare(dx, x, loss)}
    for layer in model.layers:
        for name, param in layer.params.items():
            key = f"{layer.name}/{name}"
            errors[key] = compare(analytic[key], param, loss)
    return errors
