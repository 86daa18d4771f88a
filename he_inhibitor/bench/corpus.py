"""Sentences -> the client's embedded inputs, each padded to the bucket that holds it.

A sentence runs in the smallest bucket T with T >= its tokens, as the client
routes it. Only a sentence longer than the largest bucket is truncated (first
T-1 tokens and the final one, as `vocab.encode` truncates); those are counted,
and the accuracy over the sentences that fit is reported beside the total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from he_inhibitor.bench.target import Target


@dataclass(frozen=True)
class Corpus:
    x0: list[np.ndarray]  # per sentence [T_i, d], zero at padding
    m: list[np.ndarray]  # per sentence [T_i] of 0.0 / 1.0
    T: np.ndarray  # [N] the bucket each sentence runs in
    labels: np.ndarray  # [N]
    truncated: np.ndarray  # [N] bool

    def __len__(self) -> int:
        return len(self.labels)

    def n(self, i: int) -> int:
        """Tokens of sentence i (after truncation)."""
        return int(self.m[i].sum())

    def rows(self, T: int) -> np.ndarray:
        """Indices of the sentences routed to bucket T."""
        return np.flatnonzero(self.T == T)


def embed_corpus(target: Target, sentences: list[str], labels: list[int]) -> Corpus:
    """x0 = (word[tok] + pos[:T]) * m for every sentence in its bucket (Embedder.embed, with truncation)."""
    emb, top = target.embedder, target.buckets[-1]
    lengths = np.array([len(e.ids) for e in emb.tokenizer.encode_batch(sentences)])
    Ts = np.array([target.bucket(n) or top for n in lengths])
    x0, m = [], []
    for s, T in zip(sentences, Ts):
        x, n = emb.embed(s, int(T), truncate=True)
        x0.append(x)
        m.append((np.arange(T) < n).astype(np.float64))
    return Corpus(x0, m, Ts, np.asarray(labels), lengths > top)
