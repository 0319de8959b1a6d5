"""The 1000 ImageNet-1k (ILSVRC-2012) class names, shipped as ``imagenet_classes.txt`` beside
this module: line ``k`` (0-based) is the name of class index ``k`` in the usual order of the
sorted WordNet IDs (0 "tench", 1 "goldfish", 281 "tabby", 285 "Egyptian cat", 999 "toilet
tissue").  The names are the short human-readable ones torchvision uses; two are repeated
as in that list: "crane" (134 the bird, 517 the machine) and "maillot" (638, 639).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["IMAGENET_CLASSES_PATH", "imagenet_class_names"]

IMAGENET_CLASSES_PATH = Path(__file__).resolve().parent / "imagenet_classes.txt"


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 class names, index = class; ValueError naming the file if it is not 1000 lines."""
    names = tuple(IMAGENET_CLASSES_PATH.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000 or not all(n.strip() for n in names):
        raise ValueError(f"{IMAGENET_CLASSES_PATH}: expected 1000 non-empty lines, got {len(names)}")
    return names
