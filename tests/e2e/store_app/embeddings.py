"""A deterministic local embedding function (no model, no network): each word of the text adds
1 to one of `DIMS` buckets (a stable hash of the word), and the vector is normalized. Texts that
share words are close; texts that share none are orthogonal."""

from __future__ import annotations

import hashlib
import math

DIMS = 64


def _bucket(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % DIMS


def embed(texts: list[str]) -> list[list[float]]:
    vectors = []
    for text in texts:
        vector = [0.0] * DIMS
        for word in text.lower().split():
            vector[_bucket(word.strip(".,!?"))] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vectors.append([v / norm for v in vector])
    return vectors
