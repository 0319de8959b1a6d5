"""Prepared calls of the Numba kernels: the work that depends only on a layer's weights done once.

:func:`refquant.kernels.fast.conv2d_requant` and its siblings take everything per call: they
validate the operands, choose the tile path, repack a conv's OIHW weight to ``[C_out, K']``,
compute the per-channel constants ``c[n]`` of the zero-point algebra (``fast``'s module doc,
step 1), broadcast the requantizer to per-channel vectors and plan the scratch arrays. For a
layer executed many times only the input changes, so this module splits that work by what it
depends on:

=========================  ==============================================  ================
what                       depends on                                      computed
=========================  ==============================================  ================
tile path, operand flips,  the weight, its zero points, the input dtype    :func:`prepare_layer`
packed weights ``[C, K']``
``c[n]`` and the padding   the input zero point and the int32 bias         :meth:`PreparedLayer.bind`
value
requantizer vectors        the requantizer                                 :meth:`PreparedLayer.requant_args`
geometry, chunking,        the input shape and Numba's thread count        first call with that shape
scratch shapes
scratch arrays             nothing — allocated per call (so a prepared     every call
                           layer may run on several threads at once)
=========================  ==============================================  ================

The jitted kernels are :mod:`fast`'s own (``fast._CONV_KERNELS``, ``fast._MATMUL_KERNELS``),
called with exactly the arguments ``fast._run_conv`` / ``fast._run_matmul`` compute, so a
prepared call returns the same bits and raises the same errors (accumulator overflow at the
same first index, fixed-point shift overflow) as the unprepared call. The validation moves to
the place its inputs are known: weight, weight zero points and bias when preparing and binding
(:func:`~refquant.kernels.reference.check_operands`, same messages), the input's shape when its
plan is made (:func:`~refquant.kernels.geometry.conv_geometry`, same messages) and its dtype on
every call.

A depthwise conv (one input channel per group, ``fast._uses_depthwise``) is prepared for
``fast._depthwise_kernel``: its weights centred (``w - z_w``, int32 ``[C_out, kh·kw]``) and,
for the channels-last kernel, in float32 blocks of 32 channels (``fast._channels_last_weights``),
its binding the bias (int64) and ``z_x``.

8-bit non-depthwise layers also get the exact float32 GEMM (:mod:`exact_gemm`): their weights
centred to float32 when preparing, the K-chunk boundaries for the input zero point's bound and
the int64 bias in :meth:`PreparedLayer.bind` (``Binding.gemm``), and the choice between it and
the tile kernel per input shape (:func:`exact_gemm.uses_sgemm`, the rule the unprepared calls
use, so results, errors and :meth:`PreparedLayer.scratch_bytes` agree with them).

Only 8-bit operands are prepared: for 16-bit ones the tile path depends on the input's values
(``fast._magnitude``), so :func:`prepare_layer` returns ``None`` and the caller uses the
unprepared kernels.
"""

from __future__ import annotations

import numpy as np

from . import exact_gemm, fast
from .geometry import conv_geometry
from .reference import check_operands

__all__ = ["PreparedLayer", "Binding", "prepare_layer"]


class Binding:
    """The constants of one (input zero point, int32 bias) pair for a prepared layer.

    ``col_const[n] = bias[n] - z'_a · Σ_k w'[n, k] + K · z'_a · z'_w[n]`` (int64) with
    ``z'_a = z_a + α`` and ``w'``/``z'_w`` the weight and zero points as the kernel reads them
    (flipped, ``fast``'s module doc); ``pad_value`` is ``z'_a`` in the operand's dtype (a conv
    pads with real zero).
    """

    __slots__ = ("x_zero_point", "col_const", "pad_value", "gemm")

    def __init__(self, x_zero_point: int, col_const: np.ndarray, pad_value, gemm=None):
        self.x_zero_point, self.col_const, self.pad_value = x_zero_point, col_const, pad_value
        self.gemm = gemm  # the exact float32 GEMM's binding (bias, K-chunks), if the layer has one


class PreparedLayer:
    """A Conv or MatMul weight laid out for :mod:`fast`'s kernels, for one input dtype.

    ``kind`` is ``"conv2d"`` (OIHW weight, conv attributes in ``attrs``) or ``"matmul"``
    (``[N, K]`` weight). Call :meth:`bind` once per input zero point and bias, then
    :meth:`run` per input.
    """

    def __init__(self, kind: str, w: np.ndarray, w_zero_point, x_dtype, *, name: str, attrs: dict):
        self.kind, self.name, self.attrs = kind, name, dict(attrs)
        self.x_dtype = np.dtype(x_dtype)
        w = fast._kernel_operand(np.asarray(w))
        fast._check_dtype(w, "weight", name)
        self.n_out = w.shape[0]
        # validates the weight zero points (scalar or per channel, inside the weight's range)
        # exactly as a call would; the input zero point is checked in bind()
        probe = np.zeros((0,) * (4 if kind == "conv2d" else 2), self.x_dtype)
        _, zw, _ = check_operands(probe, w, 0, w_zero_point, None, self.n_out, name)
        self.k = int(np.prod(w.shape[1:]))
        # for 8-bit operands fast._operands reads only dtypes, so a zero-size input stands in
        op = fast._operands(np.zeros((0, self.k), self.x_dtype), w, 0, zw, self.k)
        self.path, self.a_view_dtype, self.a_flip, self.alpha = op.path, op.a.dtype, op.a_flip, op.alpha
        self.zw_shifted = zw + op.beta  # the zero points move with the operands
        self.need_row_sums = bool(np.any(self.zw_shifted != 0))
        self.depthwise = kind == "conv2d" and fast._uses_depthwise(w.shape, self.x_dtype, w.dtype,
                                                                              self.attrs.get("group", 1))
        if self.depthwise:  # fast's depthwise kernel: raw input, centred int32 weights
            self.path, self.a_view_dtype, self.a_flip, self.alpha = "depthwise", self.x_dtype, None, 0
            self.weights = fast._centred_depthwise_weights(w, zw)
            # the channels-last kernel's float32 blocks, for the input shapes it takes
            self.block_weights = (fast._channels_last_weights(self.weights)
                                  if w.shape[0] == self.attrs.get("group", 1) and w.shape[2] * w.shape[3]
                                  <= fast._FLOAT_SUM_TAPS else fast._NO_BLOCK_WEIGHTS)
            self.w_flip = None
            self.kernel = fast._depthwise_kernel
        elif kind == "conv2d":
            k_padded = fast._padded_k(self.k, self.path)
            self.weights = np.zeros((self.n_out, k_padded), op.w.dtype)  # columns past K stay 0
            fast._pack_weights(op.w, op.w_flip, self.weights)
            self.w_flip = op.w.dtype.type(0)  # the flip is packed in
            self.kernel = fast._CONV_KERNELS[self.path]
        else:
            self.weights, self.w_flip = op.w, op.w_flip
            self.kernel = fast._MATMUL_KERNELS[self.path]
        self.w_shape, self._w_dtype = w.shape, w.dtype
        # the exact float32 GEMM (exact_gemm), chosen per input shape in _plan
        self.gemm = (exact_gemm.GemmLayer(kind, w, zw, self.x_dtype, name, self.attrs.get("group", 1))
                     if exact_gemm.eligible(self.x_dtype, w.dtype, w.shape, self.attrs.get("group", 1)) else None)
        self._plans: dict = {}
        self._one_pass_memo = None  # (binding, requant args, fast._one_pass_channels) of a depthwise layer

    # ---- constants ------------------------------------------------------------------------
    def bind(self, x_zero_point, bias) -> Binding:
        """Check ``x_zero_point`` and ``bias`` as a call would and compute their constants."""
        probe = np.zeros((0,) * (4 if self.kind == "conv2d" else 2), self.x_dtype)
        za, _, b = check_operands(probe, np.zeros((0,), np.int8), x_zero_point, 0, bias, self.n_out, self.name)
        if self.depthwise:
            return Binding(int(za), np.ascontiguousarray(b, np.int64), np.int32(za))
        za_s = int(za) + self.alpha
        col_const = np.empty(self.n_out, np.int64)
        fast._column_constants(self.weights, self.w_flip, self.k, b, za_s, self.zw_shifted, col_const)
        gemm = self.gemm.bind(int(za), b) if self.gemm is not None else None
        return Binding(int(za), col_const, self.a_view_dtype.type(za_s), gemm)

    def requant_args(self, rq):
        """The requantizer as the kernels read it (``None``: store the int32 accumulators)."""
        return fast._requant_args(rq, self.n_out if rq is not None else 0)

    # ---- running --------------------------------------------------------------------------
    def _plan(self, shape: tuple, threads: int):
        key = (shape, threads)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if self.gemm is not None and self.kind == "conv2d":
            g = conv_geometry(shape, self.w_shape, name=self.name, **self.attrs)
            if exact_gemm.uses_sgemm(self.x_dtype, self._w_dtype, self.w_shape, g.n * exact_gemm._conv_macs(g),
                                     g.n * g.oh * g.ow, g.group):
                plan = ((g.n, g.c_out, g.oh, g.ow), None, g, self._scratch_bytes(shape, threads), True)
                self._plans[key] = plan
                return plan
        if self.gemm is not None and self.kind == "matmul" and len(shape) == 2 and shape[1] == self.k:
            if exact_gemm.uses_sgemm(self.x_dtype, self._w_dtype, self.w_shape, shape[0] * self.n_out * self.k,
                                     shape[0]):
                plan = ((shape[0], self.n_out), None, None, self._scratch_bytes(shape, threads), True)
                self._plans[key] = plan
                return plan
        if self.depthwise:
            g = conv_geometry(shape, self.w_shape, name=self.name, **self.attrs)
            _, arrays = fast._depthwise_plan(g, threads)
            plan = ((g.n, g.c_out, g.oh, g.ow), arrays, fast._depthwise_geometry(g),
                    self._scratch_bytes(shape, threads), False)
        elif self.kind == "conv2d":
            g = conv_geometry(shape, self.w_shape, name=self.name, **self.attrs)
            chunks, arrays = fast._conv_plan(g, self.path, self.x_dtype.itemsize, self.weights.dtype.itemsize,
                                             threads)
            geometry = (g.strides[0], g.strides[1], g.dilations[0], g.dilations[1], g.pads[0], g.pads[1],
                        g.kh, g.kw, g.group)
            plan = ((g.n, g.c_out, g.oh, g.ow), arrays, geometry, self._scratch_bytes(shape, threads), False)
        else:
            if len(shape) != 2 or shape[1] != self.k:
                raise ValueError(f"{self.name}: expected a [M, K] and w [N, K] with equal K, "
                                 f"got {shape} and {self.w_shape}")
            split_rows, _, arrays = fast._matmul_plan(shape[0], self.n_out, self.k, threads)
            plan = ((shape[0], self.n_out), arrays, split_rows, self._scratch_bytes(shape, threads), False)
        self._plans[key] = plan
        return plan

    def _scratch_bytes(self, shape, threads) -> int:
        return int(exact_gemm.requant_scratch_bytes(self.kind, shape, self.w_shape, a_dtype=self.x_dtype,
                                                    w_dtype=self._w_dtype, threads=threads, **self.attrs))

    def scratch_bytes(self, shape) -> int:
        """:func:`exact_gemm.requant_scratch_bytes` of a call on an input of ``shape`` (the unprepared
        call's accounting, packed weights included), memoised with the shape's plan."""
        return self._plan(tuple(shape), fast._threads(None))[3]

    def arguments(self, x: np.ndarray, binding: Binding, rq_args, out_dtype) -> tuple:
        """``(output, status, args, scratch_bytes)``: the freshly allocated output and scratch
        of one call, the jitted kernel's arguments (``self.kernel(*args)`` fills ``output``; a
        non-negative ``status`` entry records an overflow — see :meth:`run`) and
        :meth:`scratch_bytes` of the call."""
        if x.dtype != self.x_dtype:
            raise TypeError(f"{self.name}: prepared for {self.x_dtype} inputs, got {x.dtype}")
        x = fast._kernel_operand(x)
        out_shape, arrays, extra, scratch_bytes, sgemm = self._plan(x.shape, fast._threads(None))
        if sgemm:
            raise ValueError(f"{self.name}: this input shape runs the exact float32 GEMM (call(), not arguments())")
        out = np.empty(out_shape, out_dtype)
        if self.depthwise:
            planes, row_sums, accs, status, blocks = fast._depthwise_scratch(arrays)
            args = (x, self.weights, self.block_weights if blocks.size else fast._NO_BLOCK_WEIGHTS, extra,
                    binding.pad_value, binding.col_const, rq_args, self._one_pass(binding, rq_args),
                    fast._signed_view(out), planes, row_sums, accs, status, blocks)
            return out, status, args, scratch_bytes
        a = x.view(self.a_view_dtype)
        blocks = np.zeros(arrays["blocks"][0], np.int64)
        status = _filled(arrays["status"][0], np.int64, -1)
        if self.kind == "conv2d":
            rings = _filled(arrays["rings"][0], self.a_view_dtype, binding.pad_value)  # pad columns stay z_x
            ring_keys = _filled(arrays["ring_keys"][0], np.int64, -1)
            patches = np.zeros(arrays["patches"][0], self.a_view_dtype)  # columns past K stay 0
            row_sums = np.zeros(arrays["row_sums"][0], np.int64)
            args = (a, self.weights, extra, self.a_flip, binding.pad_value, self.zw_shifted,
                    binding.col_const, self.need_row_sums, rq_args, fast._signed_view(out),
                    rings, ring_keys, patches, row_sums, blocks, status)
        else:
            args = (a, self.weights, self.a_flip, self.w_flip, self.zw_shifted, binding.col_const,
                    self.need_row_sums, extra, rq_args, fast._signed_view(out), blocks, status)
        return out, status, args, scratch_bytes

    def _one_pass(self, binding: Binding, rq_args) -> np.ndarray:
        """``fast._one_pass_channels`` of a depthwise layer for this binding and requantizer
        (O(C·taps)), memoised for the last pair seen: a prepared program passes the same two
        objects on every call."""
        memo = self._one_pass_memo
        if memo is None or memo[0] is not binding or memo[1] is not rq_args:
            memo = self._one_pass_memo = (binding, rq_args, fast._one_pass_channels(self.weights, binding.col_const,
                                                                                   rq_args))
        return memo[2]

    def call(self, x: np.ndarray, binding: Binding, rq_args, out_dtype) -> tuple[np.ndarray, int]:
        """:meth:`run`, and the call's :meth:`scratch_bytes` (one plan look-up for both)."""
        if self.gemm is not None:
            if x.dtype != self.x_dtype:
                raise TypeError(f"{self.name}: prepared for {self.x_dtype} inputs, got {x.dtype}")
            threads = fast._threads(None)
            out_shape, _, g, scratch_bytes, sgemm = self._plan(x.shape, threads)
            if sgemm:
                x = fast._kernel_operand(x)
                out = np.empty(out_shape, out_dtype)
                if self.kind == "conv2d":
                    status = self.gemm.conv(x, g, binding.gemm, rq_args, fast._signed_view(out), threads)
                else:
                    status = self.gemm.matmul(x, binding.gemm, rq_args, fast._signed_view(out), threads)
                if max(status.reshape(-1).tolist()) >= 0:
                    fast._raise_overflows(status, out.shape, self.name)
                return out, scratch_bytes
        out, status, args, scratch_bytes = self.arguments(x, binding, rq_args, out_dtype)
        self.kernel(*args)
        if max(status.reshape(-1).tolist()) >= 0:  # a handful of entries: faster than a NumPy reduction
            fast._raise_overflows(status, out.shape, self.name)
        return out, scratch_bytes

    def run(self, x: np.ndarray, binding: Binding, rq_args, out_dtype) -> np.ndarray:
        """The kernel on ``x``: requantized to ``out_dtype`` (``rq_args`` from
        :meth:`requant_args`), or int32 accumulators (``requant_args(None)``, ``np.int32``).
        Raises what the unprepared call raises on an overflow."""
        return self.call(x, binding, rq_args, out_dtype)[0]


def _filled(shape, dtype, value) -> np.ndarray:
    """``np.full`` without its Python-level overhead (these arrays are small)."""
    a = np.empty(shape, dtype)
    a.fill(value)
    return a


def prepare_layer(kind: str, w, w_zero_point, *, x_dtype, name: str, **attrs) -> PreparedLayer | None:
    """Prepare ``w`` for inputs of ``x_dtype``; ``None`` when the operands are not both 8-bit
    (the caller then uses the unprepared kernels).

    ``kind`` is ``"conv2d"`` (``w`` OIHW; ``attrs`` the conv attributes ``strides``, ``pads``,
    ``dilations``, ``group``, ``auto_pad``) or ``"matmul"`` (``w`` is ``[N, K]``).
    """
    w = np.asarray(w)
    if kind not in ("conv2d", "matmul"):
        raise ValueError(f"prepare_layer: kind must be 'conv2d' or 'matmul', got {kind!r}")
    x_dtype = np.dtype(x_dtype)
    if x_dtype.kind not in "iu" or x_dtype.itemsize != 1 or w.dtype.kind not in "iu" or w.dtype.itemsize != 1:
        return None
    return PreparedLayer(kind, w, w_zero_point, x_dtype, name=name, attrs=attrs)
