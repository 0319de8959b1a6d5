"""The sentence set for judging sentence-embedding models (``refquant compare minilm-l6``).

``sentences.json`` (written for refquant, shipped with it): 21 topics of 10 sentences each, from
a word or two ("Goal!", "Stars twinkle.") to long ones, 4 to 41 WordPiece tokens with
[CLS] and [SEP] under the all-MiniLM-L6-v2 tokenizer. The split is fixed: the sentence with
index 3 of every topic (21 sentences) calibrates; the other 189 are the test set.

    >>> from refquant.data.sentences import load_sentences
    >>> s = load_sentences()
    >>> len(s.test), len(s.calibration), len(s.topics)
    (189, 21, 21)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CALIBRATION_INDEX", "SENTENCES_PATH", "SentenceSet", "load_sentences"]

SENTENCES_PATH = Path(__file__).with_name("sentences.json")
#: the index, within each topic, of its calibration sentence
CALIBRATION_INDEX = 3


@dataclass(frozen=True)
class SentenceSet:
    topics: tuple          # topic names, in file order
    test: tuple            # (topic, sentence) pairs
    calibration: tuple     # (topic, sentence) pairs


def load_sentences(path=SENTENCES_PATH) -> SentenceSet:
    """The shipped sentence set, split into test and calibration sentences (module doc)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    topics = data.get("topics")
    if not isinstance(topics, dict) or not topics:
        raise ValueError(f"{path}: expected a 'topics' object of topic -> list of sentences")
    test, calib = [], []
    for topic, sentences in topics.items():
        if not isinstance(sentences, list) or not all(isinstance(s, str) and s.strip() for s in sentences):
            raise ValueError(f"{path}: topic {topic!r} must be a list of non-empty strings")
        for i, s in enumerate(sentences):
            (calib if i == CALIBRATION_INDEX else test).append((topic, s))
    return SentenceSet(tuple(topics), tuple(test), tuple(calib))
