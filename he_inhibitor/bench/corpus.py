"""Sentences -> the client's embedded inputs x0 [T, d] and masks, for a batch of sentences.

Sentences longer than the circuit's T tokens are truncated (first T-1 tokens
and the final one, as `vocab.encode` truncates) and counted: the benchmark
reports how many were, and the accuracy over the ones that fit, so no
truncation goes unreported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from he_inhibitor.service.embed import Embedder
from he_inhibitor.vocab import encode


@dataclass(frozen=True)
class Corpus:
    x0: np.ndarray  # [N, T, d], zero at padding
    m: np.ndarray  # [N, T] of 0.0 / 1.0
    labels: np.ndarray  # [N]
    truncated: np.ndarray  # [N] bool

    def __len__(self) -> int:
        return len(self.labels)


def embed_corpus(embedder: Embedder, sentences: list[str], labels: list[int], T: int) -> Corpus:
    """x0 = (word[tok] + pos[:T]) * m for every sentence, padded to T (Embedder.embed, with truncation)."""
    lengths = np.array([len(e.ids) for e in embedder.tokenizer.encode_batch(sentences)])
    ids, mask = encode(embedder.tokenizer, sentences, max_len=T, truncate=True)
    pad = T - ids.shape[1]
    ids, mask = np.pad(ids, ((0, 0), (0, pad))), np.pad(mask, ((0, 0), (0, pad)))
    m = mask.astype(np.float64)
    x0 = (embedder.word[ids] + embedder.pos[:T][None]) * m[..., None]
    return Corpus(x0, m, np.asarray(labels), lengths > T)
