"""Small models built in the tests (random weights, fixed seeds) and their inputs."""

import numpy as np

from refquant.graph import GraphBuilder


def small_cnn(seed: int = 0, n: int = 16):
    """conv-relu-maxpool → conv-relu6 → Add (residual) → GlobalAveragePool → Flatten → Gemm.

    Returns ``(graph, x)`` with ``x`` float32 ``[n, 1, 8, 8]``.
    """
    rng = np.random.default_rng(seed)
    b = GraphBuilder("small-cnn")
    x = b.input("x", ["N", 1, 8, 8])
    h = b.relu(b.conv(x, rng.normal(0, 0.4, (6, 1, 3, 3)).astype(np.float32),
                      rng.normal(0, 0.1, 6).astype(np.float32), pads=[1, 1, 1, 1], name="conv1"))
    h = b.max_pool(h, kernel_shape=[2, 2], strides=[2, 2])
    h2 = b.clip(b.conv(h, rng.normal(0, 0.3, (6, 6, 3, 3)).astype(np.float32), None,
                       pads=[1, 1, 1, 1], name="conv2"), 0.0, 6.0)
    h = b.add(h, h2)
    h = b.flatten(b.global_average_pool(h))
    y = b.gemm(h, rng.normal(0, 0.5, (10, 6)).astype(np.float32),
               rng.normal(0, 0.1, 10).astype(np.float32), transB=1, name="fc")
    xs = rng.normal(0, 1, (n, 1, 8, 8)).astype(np.float32)
    return b.build(y), xs


def small_mlp(seed: int = 0, n: int = 16):
    """Gemm-relu-Gemm-relu-Gemm on ``[n, 64]`` inputs. Returns ``(graph, x)``."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("small-mlp")
    x = b.input("x", ["N", 64])
    h = b.relu(b.gemm(x, rng.normal(0, 0.15, (32, 64)).astype(np.float32),
                      rng.normal(0, 0.1, 32).astype(np.float32), transB=1, name="fc1"))
    h = b.relu(b.matmul(h, rng.normal(0, 0.2, (32, 16)).astype(np.float32), name="fc2"))
    y = b.gemm(h, rng.normal(0, 0.3, (16, 10)).astype(np.float32), None, name="fc3")
    return b.build(y), rng.normal(0, 1, (n, 64)).astype(np.float32)


def outcome(fn, *args, **kwargs):
    """``("ok", result)`` or ``("error", exception type, message)``: what a kernel call did, so
    two backends' calls can be compared outcome for outcome, errors included."""
    try:
        return ("ok", fn(*args, **kwargs))
    except (ValueError, TypeError, OverflowError) as e:
        return ("error", type(e), str(e))


def smallest_input(kernel, dilations, pads, auto_pad: str) -> tuple[int, int]:
    """The smallest input height and width for which a convolution window fits at least once:
    the dilated kernel ``d·(k − 1) + 1`` less the explicit padding (at least 1), and with
    ``auto_pad="VALID"`` the whole dilated kernel."""
    p = pads or (0, 0, 0, 0)
    extent = [d * (k - 1) + 1 for d, k in zip(dilations, kernel)]
    if auto_pad == "VALID":
        return extent[0], extent[1]
    return max(1, extent[0] - (p[0] + p[2])), max(1, extent[1] - (p[1] + p[3]))


def requires_real_model(name: str):
    """A skip marker for tests of the real model ``name`` when its package is missing (the
    ``models`` extra, part of ``test``, installs it; CI never skips these)."""
    import pytest

    from refquant.zoo import weight_file

    try:
        weight_file(name)
        missing = False
    except ImportError:  # pragma: no cover - the extra `models` is part of `test`
        missing = True
    return pytest.mark.skipif(missing, reason=f"{name}: pip install 'refquant[models]'")
