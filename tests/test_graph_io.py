"""Model files: save/load round trip, the example in spec/model-format.md, and every kind of
malformed file giving an error that names the file and the entry."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from refquant.graph import GraphBuilder, infer_shapes, load_model, model_paths, save_model
from refquant.ops import FLOAT_OPS

SPEC = Path(__file__).resolve().parents[1] / "spec" / "model-format.md"
F32 = np.float32


def run(graph, feeds):
    env = {**graph.initializers, **feeds}
    for node in graph.topological_order():
        env[node.outputs[0]] = FLOAT_OPS[node.op_type](*[env[t] if t else None for t in node.inputs], **node.attributes)
    return [env[t] for t in graph.outputs]


def sample_graph():
    rng = np.random.default_rng(0)
    b = GraphBuilder("sample")
    x = b.input("x", ["N", 2, 5, 5])
    h = b.conv(x, rng.standard_normal((4, 1, 3, 3)).astype(F32), None, group=2, auto_pad="SAME_LOWER", name="conv")
    h = b.batch_normalization(h, *[np.full(4, v, F32) for v in (1.5, 0.1, 0.2, 2.0)], epsilon=1e-3, name="bn")
    h = b.clip(h, None, 6.0, name="clip")
    h = b.average_pool(h, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, count_include_pad=1, name="pool")
    h = b.reshape(h, [0, -1], name="reshape")
    h = b.gemm(h, rng.standard_normal((36, 3)).astype(F32), None, alpha=0.5, name="fc")
    return b.build([b.softmax(h, axis=1, name="softmax"), h])


def test_round_trip_keeps_everything(tmp_path):
    g = sample_graph()
    json_path, npz_path = save_model(g, tmp_path / "sub" / "sample")
    assert (json_path.name, npz_path.name) == ("sample.json", "sample.npz")
    back = load_model(tmp_path / "sub" / "sample.json", fold_bn=False)
    assert back.name == g.name and back.outputs == g.outputs
    assert [(t.name, t.shape, t.dtype) for t in back.inputs] == [(t.name, t.shape, t.dtype) for t in g.inputs]
    assert [(n.name, n.op_type, n.inputs, n.outputs, n.attributes) for n in back.nodes] == [
        (n.name, n.op_type, n.inputs, n.outputs, n.attributes) for n in g.nodes]
    assert back.nodes[4].inputs == ["pool.out", "reshape.shape"]
    assert back.nodes[2].inputs == ["bn.out", "", "clip.max"]
    assert set(back.initializers) == set(g.initializers)
    for k, v in g.initializers.items():
        assert back.initializers[k].dtype == v.dtype and np.array_equal(back.initializers[k], v), k
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 5)).astype(F32)
    for ours, theirs in zip(run(back, {"x": x}), run(g, {"x": x})):
        np.testing.assert_array_equal(ours, theirs)


def test_model_paths():
    for p in ("m/tiny", "m/tiny.json", "m/tiny.npz"):
        assert model_paths(p) == (Path("m/tiny.json"), Path("m/tiny.npz"))
    assert model_paths("m/tiny.v2") == (Path("m/tiny.v2.json"), Path("m/tiny.v2.npz"))


def _spec_blocks():
    text = SPEC.read_text()
    example = text[text.index("## Example"):]
    (json_block,) = re.findall(r"```json\n(.*?)```", example, re.S)
    (python_block,) = re.findall(r"```python\n(.*?)```", example, re.S)
    (probs_block,) = re.findall(r"```\n(probs.*?)```", example, re.S)
    return json_block, python_block, probs_block


def test_the_spec_example_loads_and_gives_the_stated_outputs(tmp_path):
    json_block, python_block, probs_block = _spec_blocks()
    (tmp_path / "tiny.json").write_text(json_block)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        exec(compile(python_block, "spec/model-format.md", "exec"), {})
    finally:
        os.chdir(cwd)
    stated = np.array([[float(v) for v in re.findall(r"-?\d\.\d+", line)] for line in probs_block.splitlines()])
    x0 = np.arange(16, dtype=F32).reshape(1, 4, 4) / 8 - 1
    x = np.stack([x0, -x0])
    for fold in (True, False):
        g = load_model(tmp_path / "tiny", fold_bn=fold)
        assert len(g.nodes) == (7 if fold else 8)
        (probs,) = run(g, {"x": x})
        np.testing.assert_allclose(probs, stated, atol=5e-7 + 2e-7)  # 6 decimals + float32
    shapes = infer_shapes(g)
    assert shapes["pool.out"] == ("N", 2, 2, 2) and shapes["probs"] == ("N", 3)


# ---- malformed files ----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    save_model(sample_graph(), tmp_path / "m")
    doc = json.loads((tmp_path / "m.json").read_text())
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return tmp_path, doc, arrays


def _write(tmp_path, doc=None, arrays=None):
    if doc is not None:
        (tmp_path / "m.json").write_text(json.dumps(doc))
    if arrays is not None:
        np.savez(tmp_path / "m.npz", **arrays)


def test_missing_files(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match=r"model graph file .*nothere.json not found"):
        load_model(tmp_path / "nothere")
    (tmp_path / "m.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"weights file .*m.npz not found"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d.update(version=2), r"m.json: unknown key\(s\) \['version'\]"),
        (lambda d: d.pop("nodes"), r"m.json: missing key\(s\) \['nodes'\]"),
        (lambda d: d.update(format_version=2), r"'format_version' 2 is not supported"),
        (lambda d: d.update(format="onnx"), r"'format' must be 'refquant.model'"),
        (lambda d: d["nodes"][0].update(kind="x"), r"nodes\[0\]: unknown key\(s\) \['kind'\]"),
        (lambda d: d["nodes"][1].update(inputs="bn"), r"nodes\[1\] \('bn'\) 'inputs': must be a list of strings"),
        (lambda d: d["initializers"][0].update(dtype="float16"), r"initializers\[0\] \('conv.W'\): dtype 'float16' is not allowed"),
        (lambda d: d["initializers"].append(dict(d["initializers"][0])), r"initializer 'conv.W' is declared twice"),
        (lambda d: d["inputs"][0].pop("dtype"), r"inputs\[0\]: missing key\(s\) \['dtype'\]"),
        (lambda d: d["nodes"][0].update(op_type="Convolution"), r"node 'conv' \(Convolution\): unknown operator"),
        (lambda d: d["nodes"][0]["attributes"].update(pads=[1, 1]), r"node 'conv' \(Conv\): attribute 'pads' must have 4"),
    ],
)
def test_malformed_json(saved, edit, pattern):
    tmp_path, doc, _ = saved
    edit(doc)
    _write(tmp_path, doc=doc)
    with pytest.raises(ValueError, match=pattern):
        load_model(tmp_path / "m")


def test_invalid_json_text(saved):
    tmp_path, _, _ = saved
    (tmp_path / "m.json").write_text('{"format": "refquant.model",')
    with pytest.raises(ValueError, match=r"m.json: not valid JSON"):
        load_model(tmp_path / "m")


def test_weights_must_match_the_declarations(saved):
    tmp_path, doc, arrays = saved
    _write(tmp_path, arrays={k: v for k, v in arrays.items() if k != "fc.B"})
    with pytest.raises(ValueError, match=r"m.npz: initializer\(s\) \['fc.B'\] declared in m.json are missing"):
        load_model(tmp_path / "m")
    _write(tmp_path, arrays={**arrays, "stray": np.ones(2, F32)})
    with pytest.raises(ValueError, match=r"m.npz: array\(s\) \['stray'\] are not declared in m.json"):
        load_model(tmp_path / "m")
    _write(tmp_path, arrays={**arrays, "fc.B": arrays["fc.B"].astype(np.float64)})
    with pytest.raises(ValueError, match=r"initializer 'fc.B' has dtype <f8, but m.json declares float32"):
        load_model(tmp_path / "m")
    _write(tmp_path, arrays={**arrays, "fc.B": arrays["fc.B"].astype(">f4")})
    with pytest.raises(ValueError, match=r"initializer 'fc.B' has dtype >f4, but m.json declares float32 \(native byte order\)"):
        load_model(tmp_path / "m")
    _write(tmp_path, arrays={**arrays, "fc.B": arrays["fc.B"][:, :2]})
    with pytest.raises(ValueError, match=r"initializer 'fc.B' has shape \(36, 2\), but m.json declares \[36, 3\]"):
        load_model(tmp_path / "m")
    bad = arrays["conv.W"].copy()
    bad[0, 0, 0, 0] = np.inf
    _write(tmp_path, arrays={**arrays, "conv.W": bad})
    with pytest.raises(ValueError, match=r"initializer 'conv.W' holds 1 NaN/Inf value"):
        load_model(tmp_path / "m")


def test_pickled_or_foreign_weight_files_are_refused(saved):
    tmp_path, doc, arrays = saved
    objects = {**arrays, "fc.B": np.array([{"a": 1}], dtype=object)}
    doc["initializers"] = [i if i["name"] != "fc.B" else {**i, "shape": [1]} for i in doc["initializers"]]
    _write(tmp_path, doc=doc, arrays=objects)
    with pytest.raises(ValueError, match=r"m.npz: initializer 'fc.B' cannot be read without pickle"):
        load_model(tmp_path / "m")
    (tmp_path / "m.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"m.npz: not a readable .npz file"):
        load_model(tmp_path / "m")
    np.save(tmp_path / "single.npy", np.ones(3, F32))
    os.replace(tmp_path / "single.npy", tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"m.npz: not a .npz archive"):
        load_model(tmp_path / "m")
