"""The client's half of a bundle (`<bundle>/client/`): tokenize, pick the bucket, embed. No torch.

signature.json lists the token buckets (one compiled circuit each) with their
parameters and layouts; a sentence goes to the smallest bucket that holds it.
The word and position tables are the student's, stored in float16: the
client embeds in the clear and never opens the torch model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from he_inhibitor.circuit.bundle import CLIENT_DIR, SIGNATURE_FILE
from he_inhibitor.embed import Embedder
from he_inhibitor.vocab import SentenceTooLongError, encode


@dataclass(frozen=True)
class Prepared:
    """One sentence ready for a circuit: x0 [T, d] (zero at padding), mask m [T]."""

    x0: np.ndarray
    m: np.ndarray
    T: int
    n_tokens: int


class ClientBundle:
    def __init__(self, signature: dict, embedder: Embedder) -> None:
        self.signature = signature
        self.embedder = embedder

    @classmethod
    def load(cls, bundle: str | Path) -> ClientBundle:
        d = Path(bundle) / CLIENT_DIR
        if not (d / SIGNATURE_FILE).is_file():
            raise FileNotFoundError(f"{d / SIGNATURE_FILE} not found: the bundle has no client part")
        return cls(json.loads((d / SIGNATURE_FILE).read_text()), Embedder.load(d))

    @property
    def buckets(self) -> list[int]:
        return sorted(int(T) for T in self.signature["buckets"])

    @property
    def labels(self) -> list[str]:
        return list(self.signature["labels"])

    def bucket(self, n_tokens: int) -> int:
        """The smallest bucket T >= n_tokens."""
        for T in self.buckets:
            if n_tokens <= T:
                return T
        raise SentenceTooLongError(f"{n_tokens} tokens; the largest bucket takes {self.buckets[-1]}")

    def prepare(self, text: str) -> Prepared:
        _, mask = encode(self.embedder.tokenizer, [text], max_len=int(self.signature["max_len"]))
        T = self.bucket(int(mask.sum()))
        x0, n = self.embedder.embed(text, T)
        return Prepared(x0, (np.arange(T) < n).astype(np.float64), T, n)
