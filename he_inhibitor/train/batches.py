"""Training batches from the teacher cache: length-bucketed, shuffled, reproducible per epoch.

Each row carries what the losses compare against: the teacher's logits and
hidden states (and attention maps when the attention loss is on), read from
the memory-mapped cache, with the teacher's token ids mapped to the student's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import load_sst2
from he_inhibitor.teacher_cache import TeacherCache, build_cache
from he_inhibitor.vocab import load_unpadded, teacher_to_student_ids


class Batches:
    """Length-bucketed shuffled batches from the teacher cache, reproducible per epoch."""

    def __init__(self, cache: TeacherCache, id_map: np.ndarray, batch_size: int, seed: int, need_attn: bool,
                 logits: np.ndarray | None = None) -> None:
        """``logits``: [rows, labels] another teacher's logits for the cache's rows (config ``logit_teacher``),
        in place of the cache's own."""
        self.cache, self.id_map, self.batch_size, self.seed, self.need_attn = cache, id_map, batch_size, seed, need_attn
        self.lengths = cache.lengths()
        self.logits = cache.logits if logits is None else np.asarray(logits, np.float32)
        if len(self.logits) != len(self.lengths):
            raise ValueError(f"{len(self.logits)} teacher logits for {len(self.lengths)} cached rows")

    def order(self, epoch: int, min_length: int = 0) -> list[np.ndarray]:
        """Epoch ``epoch``'s batches (row indices) in training order; the same epoch always gives the same order.

        ``min_length``: only the rows of at least that many word pieces (calibration on sentence-length rows).
        """
        rng = np.random.default_rng(self.seed + epoch)
        idx = rng.permutation(len(self.lengths))
        idx = idx[self.lengths[idx] >= min_length]
        chunk = self.batch_size * 50
        batches = []
        for c in range(0, len(idx), chunk):  # sort within chunks: little padding, still random
            part = idx[c : c + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[b : b + self.batch_size] for b in range(0, len(part), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def longest(self, n_batches: int) -> list[np.ndarray]:
        """The ``n_batches`` batches of the longest rows, longest first."""
        idx = np.argsort(-self.lengths, kind="stable")[: n_batches * self.batch_size]
        return [idx[b : b + self.batch_size] for b in range(0, len(idx), self.batch_size)]

    def collate(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """``rows`` padded to their longest: student and teacher ids, mask, labels and the teacher's outputs
        (and the row indices, where a copy bank finds the rows' copies)."""
        c, lens = self.cache, self.lengths[rows]
        t, b = int(lens.max()), len(rows)
        t_ids = np.zeros((b, t), np.int64)
        mask = np.zeros((b, t), bool)
        hid = np.zeros((b, t) + c.hidden.shape[1:], np.float32)
        att = np.zeros((b, t, t, c.attn.shape[1]), np.float32) if self.need_attn else None
        for r, i in enumerate(rows):
            n, o = lens[r], c.offsets[i]
            t_ids[r, :n] = c.ids[o : o + n]
            mask[r, :n] = True
            hid[r, :n] = c.hidden[o : o + n]
            if att is not None:
                att[r, :n, :n] = c.attn[c.attn_offsets[i] : c.attn_offsets[i + 1]].reshape(n, n, -1)
        batch = {
            "ids": torch.from_numpy(self.id_map[t_ids]), "t_ids": torch.from_numpy(t_ids), "mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(c.labels[rows]), "t_logits": torch.from_numpy(self.logits[rows]),
            "t_hidden": torch.from_numpy(hid), "rows": torch.from_numpy(np.asarray(rows, np.int64)),
        }
        if att is not None:
            batch["t_attn"] = torch.from_numpy(att)
        return batch


def training_batches(teacher_dir: Path, data_dir: Path, tokenizer, max_len: int,
                     cache_dir: Path = Path("runs/cache"), batch_size: int = 64) -> Batches:
    """Batches of SST-2 train from the teacher's cache (built on first use), in ``tokenizer``'s ids."""
    sentences, labels = load_sst2(data_dir, "train")
    cache = build_cache(teacher_dir, sentences, labels, cache_dir, max_len=max_len)
    id_map = teacher_to_student_ids(load_unpadded(teacher_dir), tokenizer)
    return Batches(cache, id_map, batch_size, 0, need_attn=False)
