"""Optimizers: SGD with momentum and weight decay, and Adam — float32, in-place free, checkpointable.

Every update is computed in float32 from float32 parameters, gradients and state, with the
hyperparameters rounded to float32 once (``np.float32(lr)``), so no step silently widens to
float64 (NumPy 2 keeps ``float32_array * np.float32`` in float32).  ``lr`` is passed to each
``step`` because the schedule changes it.

SGD (PyTorch's convention: the momentum buffer accumulates gradients, not steps)::

    g = grad + wd * w              (wd only for decayed parameters)
    v = mu * v + g                 (v starts at 0)
    w = w - lr * v

Adam (Kingma & Ba 2015, Algorithm 1; weight decay added to the gradient, as
``torch.optim.Adam`` does — not AdamW's decoupled decay)::

    g = grad + wd * w
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t),  v_hat = v / (1 - b2**t)        (bias corrections in float64,
                                                              rounded to float32 once)
    w = w - lr * m_hat / (sqrt(v_hat) + eps)

The state (``v`` or ``m``, ``v``, ``t``) is a dict of arrays, saved in checkpoints.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SGD", "Adam", "make_optimizer", "OPTIMIZERS"]

F32 = np.float32


class SGD:
    """SGD with momentum ``mu`` and L2 weight decay ``wd`` on the parameters in ``decay``."""

    name = "sgd"

    def __init__(self, params: dict, *, momentum: float = 0.9, weight_decay: float = 0.0,
                 decay: set | None = None):
        self.momentum, self.weight_decay = momentum, weight_decay
        self.decay = set(decay or ())
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict, lr: float) -> None:
        """Update ``params`` (name -> float32 array; entries are replaced, arrays never written)."""
        mu, wd, lr32 = F32(self.momentum), F32(self.weight_decay), F32(lr)
        for k in self.velocity:
            g = grads[k]
            if k in self.decay and self.weight_decay:
                g = g + wd * params[k]
            self.velocity[k] = mu * self.velocity[k] + g
            params[k] = params[k] - lr32 * self.velocity[k]
        self.t += 1

    def state(self) -> dict[str, np.ndarray]:
        out = {f"velocity:{k}": v for k, v in self.velocity.items()}
        out["t"] = np.int64(self.t)
        return out

    def load_state(self, state: dict) -> None:
        for k in self.velocity:
            self.velocity[k] = _restore(state, f"velocity:{k}", self.velocity[k])
        self.t = int(state["t"])


class Adam:
    """Adam with ``betas = (b1, b2)``, ``eps`` and L2 weight decay on the parameters in ``decay``."""

    name = "adam"

    def __init__(self, params: dict, *, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decay: set | None = None):
        self.b1, self.b2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.decay = set(decay or ())
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict, lr: float) -> None:
        self.t += 1
        b1, b2, eps, wd, lr32 = F32(self.b1), F32(self.b2), F32(self.eps), F32(self.weight_decay), F32(lr)
        c1 = F32(1.0 - self.b1 ** self.t)
        c2 = F32(1.0 - self.b2 ** self.t)
        one = F32(1)
        for k in self.m:
            g = grads[k]
            if k in self.decay and self.weight_decay:
                g = g + wd * params[k]
            self.m[k] = b1 * self.m[k] + (one - b1) * g
            self.v[k] = b2 * self.v[k] + (one - b2) * (g * g)
            m_hat = self.m[k] / c1
            v_hat = self.v[k] / c2
            params[k] = params[k] - lr32 * m_hat / (np.sqrt(v_hat) + eps)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"m:{k}": a for k, a in self.m.items()}
        out.update({f"v:{k}": a for k, a in self.v.items()})
        out["t"] = np.int64(self.t)
        return out

    def load_state(self, state: dict) -> None:
        for k in self.m:
            self.m[k] = _restore(state, f"m:{k}", self.m[k])
            self.v[k] = _restore(state, f"v:{k}", self.v[k])
        self.t = int(state["t"])


def _restore(state: dict, key: str, like: np.ndarray) -> np.ndarray:
    if key not in state:
        raise ValueError(f"optimizer state has no entry {key!r}")
    a = np.asarray(state[key])
    if a.shape != like.shape or a.dtype != like.dtype:
        raise ValueError(f"optimizer state {key!r} has {a.dtype}{list(a.shape)}, "
                         f"expected {like.dtype}{list(like.shape)}")
    return a.copy()


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, params: dict, *, momentum: float, weight_decay: float, decay: set):
    """``"sgd"`` or ``"adam"`` over ``params`` (name -> float32 array)."""
    if name == "sgd":
        return SGD(params, momentum=momentum, weight_decay=weight_decay, decay=decay)
    if name == "adam":
        return Adam(params, weight_decay=weight_decay, decay=decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
