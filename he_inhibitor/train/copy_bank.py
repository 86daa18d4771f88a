"""A bank of augmented copies labelled once by a slow teacher: its knowledge on the copies, not only the phrases.

The recipe's copies (``train.augment``) are drawn each step and labelled on the
fly by the MiniLM teacher, the only one fast enough to run inside the loop.
A stronger teacher (MPNet-base, several times slower) can label them only
ahead of training. The bank holds ``K`` copies of every training row, made by
the recipe's own augmentation (``TeacherLabeller.copy``: three rows in four
joined to a partner, then pieces masked or replaced) with one fixed seed, so
every distillation seed shares one bank and the teacher runs once. A
joined copy's partner is any training row (``concatenate`` over the whole
set), not a row of the same batch: the recipe's batches are sorted by length
within chunks, so its partners have similar lengths and a batch of short
phrases stays short, while a bank copy pairs lengths at random. A batch of
bank copies is therefore padded longer, and a step costs more than with live
copies (docs/log.md).

The logit teacher sees each copy as text (``teacher_logits.decode_rows``: its
own tokenizer, its own mask token) and its logits are cached per text
(``LogitCache``, resumable, in the recipe's bfloat16 autocast as the phrases).
Hidden states stay with the first teacher, run on the copy's ids
in the loop, since they are compared token by token in its WordPiece ids.

Layout: ``<logit cache root>/copies-<key>.npz`` with ``ids`` [N, K, T] uint16
(teacher ids, zero-padded), ``lengths`` [N, K] and ``logits`` [N, K, labels]
float32; the key hashes everything that decides them (teacher key, training
ids, student vocabulary, augmentation, K, T), so a bank never serves a run
it was not made for.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from he_inhibitor.teacher import SST2_MAX_LENGTH
from he_inhibitor.teacher import load_tokenizer as load_hf_tokenizer
from he_inhibitor.teacher_cache import TeacherCache
from he_inhibitor.teacher_logits import PRECISION, LogitCache, decode_rows, teacher_key
from he_inhibitor.train.augment import TeacherLabeller
from he_inhibitor.train.config import DistillConfig

FORMAT = 1
BANK_SEED = 0  # one bank for every distillation seed: the teacher runs once


class CopyBankError(ValueError):
    """The config's bank is not built yet, or does not fit the run: what to run is in the message."""


def padded_rows(cache: TeacherCache) -> tuple[np.ndarray, np.ndarray]:
    """The cache's ragged teacher ids as [N, T] int64 zero-padded rows, and their lengths [N]."""
    lengths = cache.lengths()
    ids = np.zeros((len(lengths), int(lengths.max())), np.int64)
    for r, (o, n) in enumerate(zip(cache.offsets[:-1], lengths)):
        ids[r, :n] = cache.ids[o : o + n]
    return ids, lengths


def bank_key(cfg: DistillConfig, rows: np.ndarray, id_map: np.ndarray) -> str:
    """A name for the bank ``cfg`` needs over training rows ``rows`` (teacher ids) and a student vocabulary ``id_map``."""
    if cfg.logit_teacher is None:
        raise CopyBankError("cached_copies needs a logit_teacher to label the copies")
    h = hashlib.sha256(json.dumps({
        "format": FORMAT, "seed": BANK_SEED, "copies": cfg.cached_copies, "max_len": cfg.student.max_len,
        "augment": asdict(replace(cfg.augment, copies=0)),
        "teacher": teacher_key(Path(cfg.logit_teacher), SST2_MAX_LENGTH, PRECISION),
    }, sort_keys=True).encode())
    h.update(np.ascontiguousarray(rows).tobytes())
    h.update(np.ascontiguousarray(id_map).tobytes())
    return h.hexdigest()[:16]


def bank_path(root: Path, cfg: DistillConfig, rows: np.ndarray, id_map: np.ndarray) -> Path:
    return Path(root) / f"copies-{bank_key(cfg, rows, id_map)}.npz"


def make_copies(labeller: TeacherLabeller, rows: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` copies of every row, seeded by ``BANK_SEED`` and the copy's index: ids [N, k, T], lengths [N, k]."""
    if len(labeller.id_map) > np.iinfo(np.uint16).max + 1:
        raise CopyBankError(f"a teacher vocabulary of {len(labeller.id_map)} ids does not fit the bank's uint16 ids")
    copies = [labeller.copy(rows, lengths, np.random.default_rng((BANK_SEED, j))) for j in range(k)]
    width = max(c.shape[1] for c, _ in copies)
    ids = np.zeros((len(rows), k, width), np.uint16)
    for j, (c, _) in enumerate(copies):
        ids[:, j, : c.shape[1]] = c
    return ids, np.stack([n for _, n in copies], 1)


def build_bank(cfg: DistillConfig, labeller: TeacherLabeller, teacher_tok, cache: TeacherCache, id_map: np.ndarray,
               root: Path, progress: bool = True) -> Path:
    """Make the copies, run the logit teacher on every one not cached yet, and write the bank; returns its path.

    Resumable: the teacher's logits are cached per text as they are computed
    (``LogitCache``), so an interrupted build repeats only the copying. The
    bank file is written under a temporary name and renamed into place.
    """
    if cfg.cached_copies < 1:
        raise CopyBankError(f"cached_copies is {cfg.cached_copies}: this config reads no bank")
    rows, lengths = padded_rows(cache)
    path = bank_path(root, cfg, rows, id_map)
    if path.is_file():
        return path
    ids, lens = make_copies(labeller, rows, lengths, cfg.cached_copies)
    mask_token = load_hf_tokenizer(Path(cfg.logit_teacher)).mask_token
    flat_ids, flat_lens = ids.reshape(-1, ids.shape[2]).astype(np.int64), lens.reshape(-1)
    texts = [t for s in tqdm(range(0, len(flat_ids), 4096), desc="copies as text", unit="chunk", disable=not progress)
             for t in decode_rows(teacher_tok, flat_ids[s : s + 4096], flat_lens[s : s + 4096], mask_token)]
    logit_cache = LogitCache(root, cfg.logit_teacher, precision=PRECISION)
    logit_cache.add(texts, progress=progress)
    logits = logit_cache.get(texts).numpy().reshape(len(rows), cfg.cached_copies, -1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tmp.open("wb") as f:
        np.savez(f, ids=ids, lengths=lens.astype(np.int16), logits=logits)
    os.replace(tmp, path)
    return path


class CopyBank:
    """A built bank: the copies and their logits, drawn for a batch's rows."""

    def __init__(self, path: Path, n_rows: int) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                self.ids, self.lengths, self.logits = z["ids"], z["lengths"].astype(np.int64), z["logits"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise CopyBankError(f"{path}: not a readable copy bank ({err}); delete it and run "
                                "`he-inhibitor teacher-copies` again") from None
        if not (len(self.ids) == len(self.lengths) == len(self.logits) == n_rows):
            raise CopyBankError(f"{path}: a bank of {len(self.ids)} rows for {n_rows} training rows")

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    def draw(self, rows: np.ndarray, rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``n`` copies of ``rows``, each row's ``n`` distinct bank copies in random order:
        per copy (teacher ids [B, T], lengths [B], logits [B, labels])."""
        if n > self.k:
            raise CopyBankError(f"{n} copies a step from a bank of {self.k} per row")
        slots = np.argsort(rng.random((len(rows), self.k)), 1)[:, :n]  # [B, n] distinct per row
        out = []
        for c in range(n):
            lens = self.lengths[rows, slots[:, c]]
            out.append((self.ids[rows, slots[:, c], : int(lens.max())].astype(np.int64), lens,
                        self.logits[rows, slots[:, c]]))
        return out


class BankLabeller:
    """Copies from a ``CopyBank`` with the logit teacher's cached logits; the first teacher, run on each
    copy, gives the hidden states (``TeacherLabeller.outputs``)."""

    def __init__(self, labeller: TeacherLabeller, bank: CopyBank) -> None:
        self.labeller, self.bank = labeller, bank

    def label(self, batch: dict[str, torch.Tensor], rng: np.random.Generator, n: int) -> list[dict[str, torch.Tensor]]:
        return [self.labeller.outputs(ids, lens, z) for ids, lens, z in self.bank.draw(batch["rows"].numpy(), rng, n)]
