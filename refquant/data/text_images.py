"""Printed and written text shipped in scikit-image's wheel, with transcriptions (for OCR).

* ``page`` — ``skimage/data/page.png`` (191×384 grey): a photographed page of the
  scikit-image tutorial, seven text lines fully visible (a heading, five lines of body text,
  one line of code); a cut-off URL at the bottom-left edge is not transcribed.  The
  transcription is ``refquant/data/page.txt``, one line per text line, written by reading the
  image.
* ``text`` — ``skimage/data/text.png`` (172×448 grey): handwritten mathematics (a Laplace
  transform) on ruled paper photographed at a grazing angle, cut at every edge.  The
  transcription ``refquant/data/text.txt`` is a best reading of the legible glyphs, one line per
  ruled band, top to bottom, in plain characters (``∫`` for the two long integral strokes);
  at the glyph level it is uncertain (``x`` may be ``τ``, ``t`` a rotated ``t``), which matters
  little: PP-OCRv4's detector finds no text in the image (spec/models/ppocrv4.md).

Images are found through ``importlib.metadata.distribution("scikit-image")`` without importing
scikit-image, decoded with Pillow, and returned as RGB uint8 (the grey value replicated).
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from .photos import _decode, _locate

__all__ = ["TEXT_IMAGES", "load_text_image", "transcription"]

#: name -> (distribution, file, transcription file in refquant/data or None)
TEXT_IMAGES = {
    "page": ("scikit-image", "skimage/data/page.png", "page.txt"),
    "text": ("scikit-image", "skimage/data/text.png", "text.txt"),
}


def load_text_image(name: str) -> np.ndarray:
    """The image ``name`` of :data:`TEXT_IMAGES` as (H, W, 3) uint8 RGB (read-only)."""
    if name not in TEXT_IMAGES:
        raise ValueError(f"unknown text image {name!r}; known: {', '.join(TEXT_IMAGES)}")
    dist, file, _ = TEXT_IMAGES[name]
    return _decode(_locate(dist, file))


def transcription(name: str) -> list[str] | None:
    """The transcribed lines of text image ``name`` (``None`` when it has none)."""
    if name not in TEXT_IMAGES:
        raise ValueError(f"unknown text image {name!r}; known: {', '.join(TEXT_IMAGES)}")
    file = TEXT_IMAGES[name][2]
    if file is None:
        return None
    text = resources.files("refquant.data").joinpath(file).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
