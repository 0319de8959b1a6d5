"""The engine's own hook implementations: the kernel backends every installation has, the
built-in quantization-aware-training quantizers (min-max) and the shipped models.

Registered by the plugin manager directly (not through an entry point), so selecting plugins
with ``REFQUANT_PLUGINS`` never removes them.
"""

from pathlib import Path

from .hookspecs import hookimpl

#: shipped models: ``NAME.json`` + ``NAME.npz`` + the model card ``NAME.md``
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@hookimpl
def register_backends(register):
    from .kernels import fast, reference

    register("reference", reference)
    register("numba", fast)


@hookimpl
def register_qat_quantizers(register):
    from .train.minmax_qat import EMAMinMaxQATActivations, MinMaxQATWeights

    register(MinMaxQATWeights())
    register(EMAMinMaxQATActivations())


def card_description(card: Path) -> str:
    """The first line of a model card, without its Markdown heading marks."""
    lines = card.read_text(encoding="utf-8").splitlines()
    return lines[0].lstrip("#").strip() if lines else ""


@hookimpl
def register_models(register):
    """Every ``models/NAME.json`` that has a model card ``models/NAME.md``."""
    from .graph import load_model

    for graph_file in sorted(MODELS_DIR.glob("*.json")):
        card = graph_file.with_suffix(".md")
        if card.is_file():
            register(graph_file.stem, lambda path=graph_file: load_model(path), card_description(card))
