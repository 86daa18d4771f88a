"""Any teacher's logits, cached per text: logit-level distillation from a teacher too slow to run on the fly.

:mod:`he_inhibitor.teacher_cache` keeps the MiniLM teacher's token-level
outputs (hidden states, attention maps) for the training rows, in MiniLM's
WordPiece ids. A teacher with another tokenizer (all-mpnet-base-v2, several
times slower per step) cannot share those ids, and augmentation multiplies
its forward passes (Tang et al. used ~20 copies per phrase), so its logits
are computed once per distinct text and read back by text: the student's
side makes a copy (perturbed, joined) in MiniLM ids, :func:`decode_rows`
turns it into text, and the cache answers with the teacher's logits for that
text. Which copies are wanted is the caller's business: generate them
(seeded) ahead of training, :meth:`LogitCache.add` them, then
:meth:`LogitCache.get` them per batch.

Layout: ``<root>/<teacher key>/`` holds ``meta.json`` and shards
``<name>.keys.npy`` (sha256 of each text's UTF-8, first 16 bytes, sorted)
and ``<name>.logits.npy`` (float32 [n, labels]); plain ``.npy``, no pickle.
The teacher key hashes the model's config and weights and ``max_length``,
so a retrained teacher never reads another's logits. Every :meth:`add`
writes one new shard under a temporary name, renamed into place, so an
interrupted run keeps every shard it finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.teacher import SST2_MAX_LENGTH, positive_int, load_teacher, load_tokenizer, logits

FORMAT = 1
KEY_DTYPE = "S16"
SHARD_ROWS = 4096  # texts per forward chunk; a shard is written per add() call
PRECISIONS = ("float32", "bfloat16")
PRECISION = "bfloat16"
"""The recipe's: a logit teacher labels the training phrases (``teacher-logits``) and any bank of copies
(``teacher-copies``) under bfloat16 autocast, twice as fast as float32 for the same labels
(``scripts/teacher_precision.py``: logits within 0.04, mean 0.005, at temperature 2 nothing a student sees)."""


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """[n] 16-byte keys: the first 16 bytes of each text's sha256 (collisions: ~n^2 / 2^129, none in practice)."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest()[:16] for t in texts], dtype=KEY_DTYPE)


def teacher_key(teacher_dir: Path, max_length: int, precision: str = "float32") -> str:
    """A name for one teacher's logits: its config, every weight file, ``max_length`` and the precision
    it ran at, hashed (float32 adds nothing to the hash, so keys made before bfloat16 stay valid)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    h = hashlib.sha256(f"{FORMAT}|{max_length}|".encode())
    if precision != "float32":
        h.update(f"{precision}|".encode())
    weights = sorted(teacher_dir.glob("*.safetensors")) + sorted(teacher_dir.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"{teacher_dir}: no model weights (*.safetensors) to cache logits of")
    for f in [teacher_dir / "config.json", *weights]:
        with f.open("rb") as src:
            while block := src.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def decode_rows(tokenizer: Tokenizer, ids: np.ndarray, lengths: np.ndarray, mask_token: str) -> list[str]:
    """Rows of WordPiece ids ``[CLS] ... [SEP]`` [B, T] (the augmentation's copies) as text for another tokenizer.

    [CLS]/[SEP] are dropped (the other tokenizer adds its own) and each [MASK]
    becomes ``mask_token``, the other tokenizer's mask (MPNet: ``<mask>``),
    instead of the literal "[MASK]" it would split into pieces. A word piece
    that followed a mask is decoded as a word of its own ("##ed" as "ed").
    """
    mask_id = tokenizer.token_to_id("[MASK]")
    out = []
    for row, n in zip(ids, lengths):
        inner = [int(i) for i in row[1 : int(n) - 1]]
        words, segment = [], []
        for i in [*inner, None]:
            if i is None or i == mask_id:
                if segment:  # a piece after a mask starts a word of its own, without its "##"
                    words.append(tokenizer.decode(segment).removeprefix("##"))
                if i is not None:
                    words.append(mask_token)
                segment = []
            else:
                segment.append(i)
        out.append(" ".join(words))
    return out


class LogitCache:
    """The logits of the teacher saved in ``teacher_dir``, per text, under ``root``.

    ``precision`` "bfloat16" runs the teacher under CPU autocast: twice the
    texts per second on CPUs with bfloat16 instructions, for logits within a
    few hundredths of float32's (``scripts/teacher_precision.py``); the recipe
    uses it (``PRECISION``). Each precision has its own key.
    """

    def __init__(self, root: str | Path, teacher_dir: str | Path, max_length: int = SST2_MAX_LENGTH,
                 precision: str = "float32") -> None:
        self.teacher_dir, self.max_length, self.precision = Path(teacher_dir), max_length, precision
        self.dir = Path(root) / teacher_key(self.teacher_dir, max_length, precision)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "teacher": str(self.teacher_dir.resolve()), "max_length": max_length,
                "precision": precision}
        if not (self.dir / "meta.json").is_file():
            (self.dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        self._keys = np.zeros(0, KEY_DTYPE)
        self._logits = np.zeros((0, 0), np.float32)
        self._model = self._tokenizer = None
        self._reload()

    def _reload(self) -> None:
        keys, values = [], []
        for f in sorted(self.dir.glob("*.keys.npy")):
            keys.append(np.load(f, allow_pickle=False))
            values.append(np.load(f.with_name(f.name.replace(".keys.", ".logits.")), allow_pickle=False))
        if keys:
            k, v = np.concatenate(keys), np.concatenate(values)
            order = np.argsort(k, kind="stable")
            self._keys, self._logits = k[order], v[order]

    def __len__(self) -> int:
        return len(self._keys)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each key in the sorted store, and whether it is there."""
        pos = np.searchsorted(self._keys, keys)
        found = pos < len(self._keys)
        found[found] = self._keys[pos[found]] == keys[found]
        return pos, found

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts not cached yet, in first-seen order."""
        keys = text_keys(texts)
        _, found = self._find(keys)
        return list(dict.fromkeys(t for t, f in zip(texts, found) if not f))

    def add(self, texts: Sequence[str], progress: bool = False) -> int:
        """Run the teacher on the texts not cached yet and store their logits; returns how many it ran.

        The teacher is loaded on first need (float32, eval mode, batches sorted
        by length: :func:`he_inhibitor.teacher.logits`). Every SHARD_ROWS texts
        are written as a shard of their own, so an interrupted call keeps what
        it finished and a rerun computes only the rest.
        """
        todo = self.missing(texts)
        if not todo:
            return 0
        if self._model is None:
            self._model, self._tokenizer = load_teacher(self.teacher_dir), load_tokenizer(self.teacher_dir)
        with tqdm(total=len(todo), desc="teacher logits", unit="text", disable=not progress) as bar:
            for s in range(0, len(todo), SHARD_ROWS):
                chunk = todo[s : s + SHARD_ROWS]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
                    z = logits(self._model, self._tokenizer, chunk, self.max_length)
                self._write(text_keys(chunk), z.float().numpy())
                bar.update(len(chunk))
        self._reload()
        return len(todo)

    def _write(self, keys: np.ndarray, values: np.ndarray) -> None:
        """One shard, sorted by key; keys renamed into place last (a shard counts once its keys exist)."""
        order = np.argsort(keys, kind="stable")
        name = f"{time.time_ns()}-{os.getpid()}"
        for suffix, array in ((".logits.npy", values.astype(np.float32)[order]), (".keys.npy", keys[order])):
            tmp = self.dir / f".{name}{suffix}.partial"
            with tmp.open("wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, self.dir / f"{name}{suffix}")

    def get(self, texts: Sequence[str]) -> torch.Tensor:
        """Cached logits [N, labels] float32 in the order of ``texts``; ``KeyError`` if any is not cached."""
        pos, found = self._find(text_keys(texts))
        if not found.all():
            first = next(t for t, f in zip(texts, found) if not f)
            raise KeyError(f"{int((~found).sum())} of {len(texts)} texts have no cached logits "
                           f"(first: {first!r}); add() them first")
        return torch.from_numpy(self._logits[pos].copy())


def add_parser(subparsers) -> None:
    """Register ``he-inhibitor teacher-logits``."""
    p = subparsers.add_parser(
        "teacher-logits", help="cache a teacher's logits for the SST-2 training phrases (for distill's logit_teacher)",
        description="Run a fine-tuned teacher (he-inhibitor teacher --out DIR) over every SST-2 training "
        "phrase once and keep its logits per text under --cache, where `distill` with "
        "logit_teacher=DIR reads them. Resumable: a rerun computes only what is missing.")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher directory")
    p.add_argument("--cache", type=Path, default=Path("runs/logits"), help="cache root (%(default)s)")
    p.add_argument("--data-dir", type=Path, default=None, help="directory with SST-2 train.tsv")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (%(default)s)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("error: no --data-dir given and no default SST-2 directory found")
    torch.set_num_threads(args.threads)
    sentences, _ = load_sst2(Path(data_dir), "train")
    try:
        cache = LogitCache(args.cache, args.teacher, precision=PRECISION)
    except FileNotFoundError as err:
        raise SystemExit(f"error: --teacher {args.teacher}: {err}")
    t0 = time.time()
    ran = cache.add(sentences, progress=True)
    print(json.dumps({"cache": str(cache.dir), "texts": len(set(sentences)), "computed": ran,
                      "seconds": round(time.time() - t0, 1)}))
    return 0
