"""Client-side embedding in the clear: tokenizer + word/position tables, numpy only (no torch).

    x0 = (word[tok] + pos[:T]) * mask          exactly Student.embed, padded to the circuit's T

The tables come from a safetensors file (`word.weight`, `pos.weight`, as the
student saves them); only those two tensors are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer

from he_inhibitor.vocab import encode, load_tokenizer

WEIGHTS_FILE = "model.safetensors"


class Embedder:
    def __init__(self, tokenizer: Tokenizer, word: np.ndarray, pos: np.ndarray) -> None:
        if word.shape[1] != pos.shape[1]:
            raise ValueError(f"word and position tables differ in width: {word.shape} vs {pos.shape}")
        self.tokenizer = tokenizer
        self.word = word.astype(np.float64)
        self.pos = pos.astype(np.float64)

    @classmethod
    def load(cls, directory: str | Path) -> "Embedder":
        """A directory holding tokenizer.json and model.safetensors (the client bundle)."""
        d = Path(directory)
        with safe_open(str(d / WEIGHTS_FILE), framework="np") as f:
            word, pos = f.get_tensor("word.weight"), f.get_tensor("pos.weight")
        return cls(load_tokenizer(d), word, pos)

    @property
    def d(self) -> int:
        return self.word.shape[1]

    def n_tokens(self, text: str) -> int:
        """The sentence's length in word pieces, [CLS] and [SEP] included (before any truncation)."""
        return len(self.tokenizer.encode(text).ids)

    def embed(self, text: str, T: int, truncate: bool = False) -> tuple[np.ndarray, int]:
        """x0 [T, d] (zero at padding) and the number of tokens.

        Beyond T tokens: SentenceTooLongError, or with ``truncate`` the first
        T-1 tokens and the final [SEP] (the client does so beyond its largest
        bucket and flags the answer `truncated`).
        """
        if T > self.pos.shape[0]:
            raise ValueError(f"the circuit takes {T} tokens, the position table only {self.pos.shape[0]}")
        ids, mask = encode(self.tokenizer, [text], max_len=T, truncate=truncate)
        n = int(mask[0].sum())
        x0 = np.zeros((T, self.d))
        x0[:n] = self.word[ids[0, :n]] + self.pos[:n]
        return x0, n
