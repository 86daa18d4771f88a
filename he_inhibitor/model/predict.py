"""A student's predicted labels through the real inference path: its own tokenizer, then its forward pass.

Sentences are sorted by length and batched, so padding stays small; the
order of the returned labels is the order of the sentences given.
"""

from __future__ import annotations

import numpy as np
import torch

from he_inhibitor.model.student import Student
from he_inhibitor.vocab import encode


@torch.no_grad()
def predict(student: Student, tokenizer, sentences: list[str], batch_size: int = 128, truncate: bool = False) -> np.ndarray:
    """Predicted labels of ``sentences`` (no truncation to the student's positions unless asked)."""
    student.eval()
    order = np.argsort([len(x) for x in sentences], kind="stable")  # similar lengths together: little padding
    out = np.zeros(len(sentences), np.int64)
    for b in range(0, len(order), batch_size):
        rows = order[b : b + batch_size]
        ids, mask = encode(tokenizer, [sentences[i] for i in rows], student.cfg.max_len, truncate)
        out[rows] = student(torch.from_numpy(ids), torch.from_numpy(mask)).argmax(-1).numpy()
    return out


def accuracy(
    student: Student, tokenizer, sentences: list[str], labels: list[int], batch_size: int = 128, truncate: bool = False
) -> float:
    """The fraction of ``sentences`` whose ``predict`` label equals ``labels``."""
    return float((predict(student, tokenizer, sentences, batch_size, truncate) == np.asarray(labels)).mean())
