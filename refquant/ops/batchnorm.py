"""BatchNormalization (ONNX, inference mode) in float32.

Usually folded into the preceding Conv or Gemm at load (:func:`refquant.graph.fold_batchnorm`);
this forward runs when it cannot be folded.
"""

from __future__ import annotations

import numpy as np

from .checks import require_float, require_float32, require_grad_shape


def batch_normalization(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    *,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    training_mode: int = 0,
) -> np.ndarray:
    """ONNX BatchNormalization, inference mode, channel axis 1::

        y[n, c, ...] = scale[c] * (x[n, c, ...] - mean[c]) / sqrt(var[c] + epsilon) + bias[c]

    Numeric decisions: evaluated in float32 in exactly this order (subtract, multiply, divide
    by the float32 square root, add), which is the onnx reference evaluator's order.
    ``momentum`` only matters in training mode, which refquant does not run
    (``training_mode`` must be 0).
    """
    require_float32("BatchNormalization", x=x, scale=scale, bias=bias, mean=mean, var=var)
    if training_mode != 0:
        raise ValueError("BatchNormalization: only inference mode (training_mode=0) is supported")
    if x.ndim < 2:
        raise ValueError(f"BatchNormalization: x must be at least 2-D (N, C, ...), got shape {x.shape}")
    c = x.shape[1]
    for name, p in (("scale", scale), ("B", bias), ("input_mean", mean), ("input_var", var)):
        if p.shape != (c,):
            raise ValueError(f"BatchNormalization: {name!r} must have shape ({c},), got {p.shape}")
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    s, b, m, v = (p.reshape(per_channel) for p in (scale, bias, mean, var))
    return s * (x - m) / np.sqrt(v + np.float32(epsilon)) + b


# ---- training mode ----------------------------------------------------------------------------


def _batch_statistics(op, x, scale, bias, mean, var):
    dtype = require_float(op, x=x, scale=scale, bias=bias, mean=mean, var=var)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be at least 2-D (N, C, ...), got shape {x.shape}")
    c = x.shape[1]
    for name, p in (("scale", scale), ("B", bias), ("input_mean", mean), ("input_var", var)):
        if p.shape != (c,):
            raise ValueError(f"{op}: {name!r} must have shape ({c},), got {p.shape}")
    axes = (0,) + tuple(range(2, x.ndim))
    count = x.size // c
    if count < 1:
        raise ValueError(f"{op}: x of shape {x.shape} has no values per channel")
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    mu = np.mean(x, axis=axes, dtype=dtype)
    centred = x - mu.reshape(per_channel)
    sigma2 = np.mean(centred * centred, axis=axes, dtype=dtype)
    return axes, count, per_channel, mu, centred, sigma2


def batch_normalization_train(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    *,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
) -> tuple:
    """ONNX BatchNormalization in training mode (``training_mode=1``): ``(y, running_mean, running_var)``.

    Per channel ``c``, over the batch and spatial axes (``M`` values)::

        mu[c]     = (1/M) sum x[n, c, ...]
        sigma2[c] = (1/M) sum (x[n, c, ...] - mu[c])^2                 population variance
        y         = scale[c] * (x - mu[c]) / sqrt(sigma2[c] + epsilon) + bias[c]
        running_mean = input_mean * momentum + mu * (1 - momentum)
        running_var  = input_var  * momentum + sigma2 * (1 - momentum)

    This is the onnx reference evaluator's definition: the running variance is updated with
    the population (biased) variance — PyTorch uses the unbiased one there.  Numeric
    decisions: everything in ``x``'s dtype; the means are NumPy pairwise sums and one
    division; ``y`` in the inference formula's order (subtract, multiply, divide by the
    square root, add); ``momentum`` and ``1 - momentum`` are rounded to that dtype once.
    """
    op = "BatchNormalization (training)"
    _, _, per_channel, mu, centred, sigma2 = _batch_statistics(op, x, scale, bias, mean, var)
    t = x.dtype.type
    s, b = scale.reshape(per_channel), bias.reshape(per_channel)
    y = s * centred / np.sqrt(sigma2.reshape(per_channel) + t(epsilon)) + b
    running_mean = mean * t(momentum) + mu * t(1 - momentum)
    running_var = var * t(momentum) + sigma2 * t(1 - momentum)
    return y, running_mean, running_var


def batch_normalization_train_backward(
    dy: np.ndarray,
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    *,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
) -> tuple:
    """Gradients of training-mode BatchNormalization: ``(dx, dscale, dbias, None, None)``.

    With ``xhat = (x - mu) / sqrt(sigma2 + eps)`` and the means over the ``M`` values of a
    channel (the batch statistics depend on ``x``, so ``dx`` has two correction terms)::

        dbias[c]  = sum dy
        dscale[c] = sum dy * xhat
        dx        = scale[c] / sqrt(sigma2[c] + eps) * (dy - dbias[c]/M - xhat * dscale[c]/M)

    The running statistics are buffers, not functions of the loss: ``input_mean`` and
    ``input_var`` get no gradient.  Batch statistics are recomputed from ``x`` exactly as the
    forward computes them.  Numeric decisions: ``dy``'s dtype, NumPy pairwise sums.
    """
    op = "BatchNormalization (training) backward"
    require_float(op, dy=dy)
    axes, count, per_channel, mu, centred, sigma2 = _batch_statistics(op, x, scale, bias, mean, var)
    require_grad_shape(op, dy, x.shape)
    t = x.dtype.type
    inv_std = t(1) / np.sqrt(sigma2 + t(epsilon))
    xhat = centred * inv_std.reshape(per_channel)
    dbias = dy.sum(axis=axes)
    dscale = (dy * xhat).sum(axis=axes)
    m = t(count)
    dx = (scale * inv_std).reshape(per_channel) * (
        dy - (dbias / m).reshape(per_channel) - xhat * (dscale / m).reshape(per_channel)
    )
    return dx, dscale, dbias, None, None
