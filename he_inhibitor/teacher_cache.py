"""Teacher outputs computed once per data set and reused by every distillation run.

A teacher forward pass over SST-2's 67k training phrases costs about ten
minutes on two cores; ablations and the poly phase would repeat it for every
epoch. The cache keeps, per phrase, the logits, every layer's hidden states
(float16) and every layer's head-averaged attention map, ragged and
memory-mapped, in plain ``.npy`` files (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from he_inhibitor.teacher import load_teacher
from he_inhibitor.vocab import load_tokenizer

FORMAT = 1


@dataclass
class TeacherCache:
    """Ragged per-phrase arrays; token arrays index [offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # [tokens] teacher token ids
    offsets: np.ndarray  # [n + 1]
    labels: np.ndarray  # [n]
    logits: np.ndarray  # [n, 2]
    hidden: np.ndarray  # [tokens, n_layers + 1, d_teacher] float16
    attn: np.ndarray  # [sum T_i^2, n_layers] float16, head-averaged
    attn_offsets: np.ndarray  # [n + 1]

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _key(teacher_dir: Path, sentences: list[str], max_len: int) -> str:
    h = hashlib.sha256()
    h.update(f"{FORMAT}|{teacher_dir.resolve()}|{max_len}|".encode())
    h.update((teacher_dir / "model.safetensors").read_bytes()[:1 << 20])
    for s in sentences:
        h.update(s.encode() + b"\0")
    return h.hexdigest()[:16]


def tokenize_for_teacher(tokenizer, sentences: list[str], max_len: int) -> list[list[int]]:
    """Teacher WordPiece ids with [CLS]/[SEP], truncated to ``max_len`` keeping the final [SEP]."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    out = []
    for enc in tokenizer.encode_batch(sentences):
        ids = enc.ids
        out.append(ids if len(ids) <= max_len else ids[: max_len - 1] + ids[-1:])
    return out


@torch.no_grad()
def build_cache(
    teacher_dir: str | Path,
    sentences: list[str],
    labels: list[int],
    cache_root: str | Path,
    max_len: int = 64,
    batch_size: int = 128,
) -> TeacherCache:
    """Run the teacher over ``sentences`` (or load the cache built from the same inputs)."""
    teacher_dir = Path(teacher_dir)
    out = Path(cache_root) / _key(teacher_dir, sentences, max_len)
    if (out / "meta.json").is_file():
        return load_cache(out)
    # a directory of this call's own: two runs that start together each build it (same
    # contents), and the first to finish publishes it; neither writes into the other's files
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".partial-"))

    seqs = tokenize_for_teacher(load_tokenizer(teacher_dir), sentences, max_len)
    lengths = np.array([len(s) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    attn_offsets = np.concatenate([[0], np.cumsum(lengths**2)])
    model = load_teacher(teacher_dir)
    model.set_attn_implementation("eager")  # the fused kernels return no attention maps
    n_layers, d_t = model.config.num_hidden_layers, model.config.hidden_size
    hidden = np.lib.format.open_memmap(tmp / "hidden.npy", "w+", np.float16, (int(offsets[-1]), n_layers + 1, d_t))
    attn = np.lib.format.open_memmap(tmp / "attn.npy", "w+", np.float16, (int(attn_offsets[-1]), n_layers))
    logits = np.zeros((len(seqs), model.config.num_labels), np.float32)

    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    for start in tqdm(range(0, len(order), batch_size), desc="teacher outputs", unit="batch"):
        rows = order[start : start + batch_size]
        t = int(lengths[rows].max())
        ids = torch.zeros((len(rows), t), dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : lengths[i]] = torch.tensor(seqs[i])
            mask[r, : lengths[i]] = 1
        res = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        hs = torch.stack(res.hidden_states, 2)  # [B, T, L+1, d_t]
        att = torch.stack([a.mean(1) for a in res.attentions], -1)  # [B, T, T, L]
        logits[rows] = res.logits.float().numpy()
        for r, i in enumerate(rows):
            n = lengths[i]
            hidden[offsets[i] : offsets[i + 1]] = hs[r, :n].numpy().astype(np.float16)
            attn[attn_offsets[i] : attn_offsets[i + 1]] = att[r, :n, :n].reshape(n * n, -1).numpy().astype(np.float16)
    hidden.flush()
    attn.flush()
    np.save(tmp / "ids.npy", np.concatenate([np.asarray(s, np.int32) for s in seqs]))
    np.save(tmp / "offsets.npy", offsets)
    np.save(tmp / "attn_offsets.npy", attn_offsets)
    np.save(tmp / "labels.npy", np.asarray(labels, np.int64))
    np.save(tmp / "logits.npy", logits)
    (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "teacher": str(teacher_dir), "n": len(seqs), "max_len": max_len}))
    try:
        tmp.rename(out)
    except OSError:  # another run published the same cache first
        if not (out / "meta.json").is_file():
            raise
        shutil.rmtree(tmp)
    return load_cache(out)


def load_cache(path: str | Path) -> TeacherCache:
    p = Path(path)
    meta = json.loads((p / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p}: teacher cache format {meta.get('format')} != {FORMAT}; delete it to rebuild")
    load = lambda name, mmap=None: np.load(p / name, mmap_mode=mmap, allow_pickle=False)  # noqa: E731
    return TeacherCache(
        ids=load("ids.npy"), offsets=load("offsets.npy"), labels=load("labels.npy"),
        logits=load("logits.npy"), hidden=load("hidden.npy", "r"), attn=load("attn.npy", "r"),
        attn_offsets=load("attn_offsets.npy"),
    )
