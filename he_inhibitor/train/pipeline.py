"""Knowledge distillation of the teacher into the HE-friendly student (``he-inhibitor distill``).

Losses (TinyBERT-style, arXiv 2308.13958), each weighted in the config:
soft-label KD on logits with temperature (KL * tau^2), hard-label CE,
hidden-state MSE through learned projections with a layer mapping,
embedding MSE, an attention-level loss (teacher attention maps against the
student's normalised inhibition), and the range penalty that keeps every
polynomial input inside its interval.

Two phases: ``exact`` non-linearities first; then the bounds B are calibrated
on training data, the norms are frozen, and a ``poly`` phase fine-tunes the
student with the circuit's own polynomials, so the shipped model is exactly
what the encrypted circuit computes.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from he_inhibitor.train.augment import AugmentConfig, TeacherLabeller, nearest_words
from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig, load_student, save_student
from he_inhibitor.teacher_cache import TeacherCache, build_cache
from he_inhibitor.vocab import (
    TOKENIZER_FILE, encode, load_tokenizer, load_unpadded, make_tokenizer, teacher_to_student_ids, teacher_vocab,
    trimmed_vocab,
)


@dataclass
class LossWeights:
    kd: float = 1.0
    ce: float = 0.2
    hidden: float = 0.05
    emb: float = 0.0
    attn: float = 0.0
    range: float = 1.0


def recipe_student() -> StudentConfig:
    """The shipped student's architecture (``he_inhibitor/assets/student/config.json``).

    StudentConfig's own defaults stay the plain inhibitor (4 heads, no bias, no length norm, Remez
    fits), which every hand-built tiny student and every dot-product student relies on; the options
    the shipped student adds are set here, where ``he-inhibitor distill`` reads its recipe. 16
    interleaved heads make the circuit's head sums cheaper; the key norm and the relative bias are
    public plaintexts in the circuit (no level); weighted fits are made by calibration from the
    inputs each polynomial really sees (docs/design.md §2, §5).
    """
    return StudentConfig(n_heads=16, key_norm=0.5, rel_bias=True, rel_bias_init=1.0,
                         abs_poly=PolySpec(14, "weighted"), relu_poly=PolySpec(14, "weighted"))


def recipe_augment() -> AugmentConfig:
    """The shipped recipe's augmentation: two teacher-labelled copies of every batch, word pieces
    masked or replaced, three rows in four joined to another row to make sentence-length inputs."""
    return AugmentConfig(copies=2, p_mask=0.15, p_replace=0.15, concat=0.75)


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied key by key, descending into dicts that both sides hold."""
    out = dict(base)
    for key, value in overrides.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merge(base[key], value) if both else value
    return out


@dataclass
class DistillConfig:
    """A distillation run. The defaults are the shipped recipe, so ``he-inhibitor distill`` without
    ``--config`` trains it; an experiment is a small JSON of overrides (``load_config``)."""

    student: StudentConfig = field(default_factory=recipe_student)
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=recipe_augment)
    # the poly phase's augmentation; None: the same as ``augment``. Joined copies cost ~4x
    # there (the attention's |q - k| polynomial runs on every pair of their doubled length).
    augment_poly: AugmentConfig | None = None
    temperature: float = 2.0
    # "kl": KL between softened distributions (times tau^2); "mse": squared error between the
    # raw logits (Kim et al. 2021, arXiv 2105.08919), which also matches the teacher's confidence
    kd_loss: str = "kl"
    # "table": PCA of the teacher's input embedding table; "contextual": PCA of the
    # teacher's hidden states (mean over layers) of each token alone, "[CLS] tok [SEP]".
    embedding_init: str = "contextual"
    # train the word table as R + E P: E the (fixed) teacher rows it was initialised from, P their
    # projection to d (initialised to the PCA basis), R a free residual starting at zero. A word rare
    # in training then still moves with the words the teacher places near it. Saved as one table.
    embedding_tied: bool = False
    # with ``embedding_tied``, False keeps R at zero: the table stays E P, so every word, however
    # rare in training, is the teacher's vector through one learned projection (no per-word memory)
    embedding_residual: bool = True
    # 0: the teacher's position rows through the words' PCA basis, which leaves them tiny; r > 0: through
    # their own PCA basis, at r times the mean word row norm (``position_table``; the teacher's ratio is 0.34)
    position_norm: float = 0.0
    # "train": the teacher tokens the training text uses (smallest table); "teacher": every ASCII
    # teacher token (``vocab.teacher_vocab``), so that dev words unseen in training are not split
    # into pieces; useful with a tied table, whose unseen rows are still the teacher's vectors
    vocabulary: str = "train"
    layer_map: str | list[int] = "uniform"  # "uniform" | "first" | "last" | explicit teacher layers
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    epochs_exact: int = 1
    # fractions allowed: the poly phase only adapts a trained student. 0 skips it: weighted fits
    # leave the calibrated poly form about as accurate as exact, and poly training on top of them
    # lowered dev accuracy (docs/log.md, weighted fits)
    epochs_poly: float = 0.0
    lr_poly: float = 5e-4
    calibration_batches: int = 200
    calibration_margin: float = 0.1
    # then per non-linearity, in evaluation order, its bound widened to cover what the
    # poly form (earlier polynomials already in place) feeds it; 0 turns this off
    poly_calibration_batches: int = 25
    limit: int | None = None
    seed: int = 1
    threads: int = 1
    # the exact phase's inhibitor attention through torch.compile (Student.fuse_exact): 3-10x
    # faster per layer (scripts/bench_fused_attention.py), about 2x per step with 2 copies,
    # after a one-off compile of under a minute; needs a C++ compiler
    fused_attention: bool = True
    # learning-rate multiplier of the relative biases b_h(o): Adam moves each by at most about lr a step,
    # so in one epoch at 2e-3 a bias travels about 1, which may be too little to learn a direction
    rel_bias_lr: float = 5.0
    checkpoint_every: int = 300

    def __post_init__(self) -> None:
        if self.kd_loss not in ("kl", "mse"):
            raise ValueError(f"kd_loss must be 'kl' or 'mse', not {self.kd_loss!r}")
        if self.vocabulary not in ("train", "teacher"):
            raise ValueError(f"vocabulary must be 'train' or 'teacher', not {self.vocabulary!r}")
        if self.position_norm < 0:
            raise ValueError(f"position_norm is a ratio of norms, >= 0, not {self.position_norm}")
        if not self.embedding_residual and not self.embedding_tied:
            raise ValueError("embedding_residual=False freezes the residual R of a tied table: it needs embedding_tied")
        if not math.isfinite(self.rel_bias_lr) or self.rel_bias_lr < 0:
            raise ValueError(f"rel_bias_lr multiplies the learning rate (0 freezes the bias), so it is >= 0, not {self.rel_bias_lr}")

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        """The recipe with ``data``'s keys overridden; nested dicts override key by key, so
        ``{"student": {"n_layers": 3}}`` changes the depth and keeps the rest of the recipe's student.
        ``augment_poly`` has no recipe value (None: the same as ``augment``), so a dict there starts
        from AugmentConfig's own defaults."""
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"unknown distill config keys: {sorted(set(data) - known)}")
        full = merge(asdict(cls()), data)
        full["student"] = StudentConfig.from_dict(full["student"])
        full["loss"] = LossWeights(**full["loss"])
        for key in ("augment", "augment_poly"):
            if isinstance(full.get(key), dict):
                full[key] = AugmentConfig(**full[key])
        return cls(**full)


def read_overrides(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file's overrides, with those of the file its ``"extends"`` names (relative to it)
    underneath, so that a family of experiments shares one base file of overrides."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ValueError(f"config files extend each other in a cycle: {path}")
    data = json.loads(path.read_text())
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return merge(read_overrides(path.parent / parent, (*_seen, path.resolve())), data)


def load_config(path: Path | None = None, sets: list[str] = ()) -> DistillConfig:
    """The shipped recipe with a config file's overrides (``read_overrides``) and then each
    ``--set`` applied (``parse_set``)."""
    overrides = read_overrides(path) if path is not None else {}
    for item in sets:
        overrides = merge(overrides, parse_set(item))
    return DistillConfig.from_dict(overrides)


def parse_set(item: str) -> dict:
    """``"student.n_layers=3"`` -> ``{"student": {"n_layers": 3}}``: a dotted key and a JSON value
    (a bare word that is not JSON is taken as a string, so ``layer_map=last`` works unquoted)."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set takes KEY=VALUE with a dotted KEY, not {item!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def teacher_layers(layer_map: str | list[int], n_student: int, n_teacher: int) -> list[int]:
    """Teacher hidden-state index (1..n_teacher) that each student layer imitates."""
    if isinstance(layer_map, list):
        if len(layer_map) != n_student or not all(1 <= t <= n_teacher for t in layer_map):
            raise ValueError(f"layer_map {layer_map} must list {n_student} teacher layers in 1..{n_teacher}")
        return list(layer_map)
    maps = {
        "uniform": [round((i + 1) * n_teacher / n_student) for i in range(n_student)],
        "first": [i + 1 for i in range(n_student)],
        "last": [n_teacher - n_student + i + 1 for i in range(n_student)],
    }
    if layer_map not in maps:
        raise ValueError(f"layer_map must be one of {sorted(maps)} or a list, not {layer_map!r}")
    return maps[layer_map]


@torch.no_grad()
def contextual_token_vectors(teacher_dir: Path, vocab_ids: np.ndarray, cls_id: int, sep_id: int, batch_size: int = 512) -> np.ndarray:
    """Each token's teacher hidden state alone in "[CLS] tok [SEP]", averaged over all layers.

    Unlike the input table, these vectors have passed through the fine-tuned
    encoder, so they already carry much of a word's sentiment.
    """
    from he_inhibitor.teacher import load_teacher

    teacher = load_teacher(teacher_dir)
    out = np.zeros((len(vocab_ids), teacher.config.hidden_size))
    for b in tqdm(range(0, len(vocab_ids), batch_size), desc="token vectors", unit="batch"):
        ids = torch.from_numpy(vocab_ids[b : b + batch_size]).long()
        seq = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1)  # [B, 3]
        hs = teacher(input_ids=seq, output_hidden_states=True).hidden_states
        out[b : b + batch_size] = torch.stack(hs, 0)[:, :, 1].mean(0).double().numpy()
    return out


class TeacherSpan(nn.Module):
    """Parametrization of the word table: weight = R + E P (see ``DistillConfig.embedding_tied``)."""

    def __init__(self, rows: torch.Tensor, proj: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows)  # E [V, d_teacher]
        self.proj = nn.Parameter(proj)  # P [d_teacher, d]

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return residual + self.rows @ self.proj  # [V, d]


def init_embeddings_from_teacher(student: Student, teacher_word: np.ndarray, teacher_pos: np.ndarray,
                                 tied: bool = False, residual: bool = True, position_norm: float = 0.0) -> np.ndarray:
    """Word and position tables from the teacher's, projected to d by PCA (SVD of the word rows).

    ``teacher_word`` holds one row per student token. ``tied``: the word table
    becomes R + E P (``DistillConfig.embedding_tied``), E the scaled centred
    rows, P the basis, R zero, which is the same table; ``residual=False``
    freezes R at zero. ``position_norm`` > 0: the position rows go through
    their own PCA basis instead (``position_table``). Returns the word
    projection basis [d, d_teacher].
    """
    d = student.cfg.d_model
    words = teacher_word.astype(np.float64)
    mean = words.mean(0)
    _, _, vt = np.linalg.svd(words - mean, full_matrices=False)
    basis = vt[:d]  # [d, d_teacher]
    scale = 1.0 / ((words - mean) @ basis.T).std()
    rows = (words - mean) * scale  # [V, d_teacher]
    table = rows @ basis.T  # [V, d]
    if position_norm > 0:
        p = position_table(teacher_pos[: student.cfg.max_len], d, position_norm * np.linalg.norm(table, axis=1).mean())
    else:
        p = (teacher_pos[: student.cfg.max_len] - teacher_pos[: student.cfg.max_len].mean(0)) @ basis.T * scale
    with torch.no_grad():
        student.word.weight.copy_(torch.from_numpy(table))
        student.pos.weight.copy_(torch.from_numpy(p))
    if tied:
        from torch.nn.utils import parametrize

        with torch.no_grad():
            student.word.weight.zero_()
        span = TeacherSpan(torch.from_numpy(rows).float(), torch.from_numpy(basis.T.copy()).float())
        parametrize.register_parametrization(student.word, "weight", span)
        student.word.parametrizations.weight.original.requires_grad_(residual)
    return basis


def position_table(teacher_pos: np.ndarray, d: int, norm: float) -> np.ndarray:
    """The teacher's position rows [T, d_teacher] by their own PCA in d dimensions, mean row norm ``norm``.

    Through the words' basis they keep only what happens to lie in the word
    subspace, a small fraction of a word row's norm, far below the teacher's
    own ratio. No recorded run has shown it to help, so it is an option, not
    the recipe.
    """
    centred = teacher_pos.astype(np.float64) - teacher_pos.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(d, vt.shape[0])
    out = np.zeros((len(teacher_pos), d))
    out[:, :k] = centred @ vt[:k].T
    return out * (norm / np.linalg.norm(out, axis=1).mean())


def untie_word_table(student: Student) -> None:
    """Fold R + E P into one plain table (what is saved and shipped)."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(student.word, "weight"):
        parametrize.remove_parametrizations(student.word, "weight", leave_parametrized=True)


class Distiller(nn.Module):
    """The student plus the projections only distillation needs (dropped when saving)."""

    def __init__(self, student: Student, d_teacher: int, t_layers: list[int]) -> None:
        super().__init__()
        self.student, self.t_layers = student, t_layers
        d = student.cfg.d_model
        self.proj = nn.ModuleList(nn.Linear(d, d_teacher) for _ in t_layers)
        self.proj_emb = nn.Linear(d, d_teacher)

    def losses(self, batch: dict[str, torch.Tensor], cfg: DistillConfig) -> dict[str, torch.Tensor]:
        s, w = self.student, cfg.loss
        ids, mask = batch["ids"], batch["mask"]
        x0 = s.embed(ids, mask)
        x, hidden, weights = s.encode(x0, mask, need_weights=w.attn > 0)
        logits = s.classifier(s.drop(s.pool(x, mask)))
        tau = cfg.temperature
        if cfg.kd_loss == "mse":
            kd = F.mse_loss(logits, batch["t_logits"], reduction="none").sum(-1).mean()
        else:
            kd = F.kl_div(F.log_softmax(logits / tau, -1), F.softmax(batch["t_logits"] / tau, -1), reduction="batchmean") * tau**2
        out = {"kd": kd, "ce": F.cross_entropy(logits, batch["labels"])}
        m = mask.unsqueeze(-1).float()
        n_tok = m.sum() * batch["t_hidden"].shape[-1]
        if w.hidden > 0:
            out["hidden"] = sum(
                (((p(h) - batch["t_hidden"][:, :, t]) ** 2) * m).sum() / n_tok
                for p, h, t in zip(self.proj, hidden, self.t_layers)
            ) / len(hidden)
        if w.emb > 0:
            out["emb"] = (((self.proj_emb(x0) - batch["t_hidden"][:, :, 0]) ** 2) * m).sum() / n_tok
        if w.attn > 0:
            pair = (mask.unsqueeze(2) & mask.unsqueeze(1)).float()  # [B, T, T]
            out["attn"] = sum(
                (batch["t_attn"][..., t - 1] * (batch["t_attn"][..., t - 1].clamp_min(1e-8).log() - a.clamp_min(1e-8).log()) * pair).sum() / mask.sum()
                for a, t in zip(weights, self.t_layers)
            ) / len(weights)
        if w.range > 0:
            out["range"] = s.range_penalty()
        out["loss"] = sum(getattr(w, k) * v for k, v in out.items())
        out["acc"] = (logits.argmax(-1) == batch["labels"]).float().mean()
        return out


class Batches:
    """Length-bucketed shuffled batches from the teacher cache, reproducible per epoch."""

    def __init__(self, cache: TeacherCache, id_map: np.ndarray, batch_size: int, seed: int, need_attn: bool) -> None:
        self.cache, self.id_map, self.batch_size, self.seed, self.need_attn = cache, id_map, batch_size, seed, need_attn
        self.lengths = cache.lengths()

    def order(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + epoch)
        idx = rng.permutation(len(self.lengths))
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
            "labels": torch.from_numpy(c.labels[rows]), "t_logits": torch.from_numpy(c.logits[rows]),
            "t_hidden": torch.from_numpy(hid),
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


@torch.no_grad()
def predict(student: Student, tokenizer, sentences: list[str], batch_size: int = 128, truncate: bool = False) -> np.ndarray:
    """Predicted labels through the real inference path: the student's own tokenizer (no truncation unless asked)."""
    student.eval()
    order = np.argsort([len(x) for x in sentences], kind="stable")  # similar lengths together: little padding
    out = np.zeros(len(sentences), np.int64)
    for b in range(0, len(order), batch_size):
        rows = order[b : b + batch_size]
        ids, mask = encode(tokenizer, [sentences[i] for i in rows], student.cfg.max_len, truncate)
        out[rows] = student(torch.from_numpy(ids), torch.from_numpy(mask)).argmax(-1).numpy()
    return out


def evaluate(
    student: Student, tokenizer, sentences: list[str], labels: list[int], batch_size: int = 128, truncate: bool = False
) -> float:
    """Accuracy of ``predict``."""
    return float((predict(student, tokenizer, sentences, batch_size, truncate) == np.asarray(labels)).mean())


@torch.no_grad()
def _observe(student: Student, batches: Batches, n_batches: int, longest: bool) -> None:
    """Forward ``n_batches`` fixed training batches (random, or the longest rows) with every max_ratio reset first."""
    for _, m in student.nonlinearities():
        m.max_ratio.zero_()
    for rows in batches.longest(n_batches) if longest else batches.order(epoch=10_000)[:n_batches]:
        b = batches.collate(rows)
        student(b["ids"], b["mask"])


@torch.no_grad()
def _call_order(student: Student, batches: Batches, n_batches: int, longest: bool) -> list:
    """The non-linearities in the order of their first call, observed (``_observe``) in the current form."""
    order: list = []
    hooks = [m.register_forward_pre_hook(lambda mod, _: order.append(mod) if mod not in order else None)
             for _, m in student.nonlinearities()]
    try:
        _observe(student, batches, n_batches, longest)
    finally:
        for h in hooks:
            h.remove()
    return order


@torch.no_grad()
def refit_weighted(student: Student, batches: Batches, n_batches: int, longest: bool = False) -> int:
    """Refit every weighted non-linearity at its current bound, in call order, in poly form; returns how many.

    Each sees its inputs with the polynomials before it already refitted, as
    in the circuit. Run after bounds move (``he-inhibitor calibrate``).
    """
    student.eval()
    student.set_form("exact")
    order = _call_order(student, batches, 1, longest)
    try:
        for m in tqdm(order, desc="refit weighted fits", unit="non-linearity", leave=False):  # those before m in poly form, m and those after it still exact
            if m.spec.weighted:
                _fit_densities(student, batches, n_batches, longest, [m])
            m.set_form("poly")
    finally:
        student.set_form("exact")
    return sum(m.spec.weighted for m in order)


@torch.no_grad()
def _fit_densities(student: Student, batches: Batches, n_batches: int, longest: bool, modules: list) -> None:
    """Refit each weighted non-linearity in ``modules`` to the histogram of its inputs over ``n_batches``."""
    if not modules:
        return
    for m in modules:
        m.collect_density(True)
    try:
        _observe(student, batches, n_batches, longest)
        for m in modules:
            m.fit_to_density()
    finally:
        for m in modules:
            m.collect_density(False)


@torch.no_grad()
def calibrate(student: Student, batches: Batches, n_batches: int, margin: float, poly_batches: int = 0,
              longest: bool = False) -> dict[str, float]:
    """Set each bound B to (1 + margin) x the largest input seen on training data; returns the bounds.

    ``longest``: observe the longest training rows instead of random batches
    (the inhibitor sums over keys, so ranges grow with sentence length).

    Weighted fits (``PolySpec.method == "weighted"``) are made here too, from
    the histogram of each one's inputs at its final bound.

    First in exact form. Then, with ``poly_batches``, in poly form one
    non-linearity at a time in evaluation order: the polynomials before it
    are final, so what it sees is what the poly phase (and the circuit) will
    feed it; its bound only widens. Low-degree fits change activations
    enough that exact-form bounds alone let later inputs leave their
    intervals, where the polynomials explode. A recursive student calls its
    shared modules once per application, so it repeats the sweep until no
    bound moves (at most twice per application; the last sweep's widening is
    then a small fraction of the margin).
    """
    student.eval()
    student.set_form("exact")
    names = {m: n for n, m in student.nonlinearities()}
    nl = [(names[m], m) for m in _call_order(student, batches, n_batches, longest)]

    def widen(name: str, m, floor: float) -> None:
        new = max(floor, float(m.max_ratio * m.bound) * (1 + margin))
        if not math.isfinite(new) or new <= 0:
            raise RuntimeError(f"calibration: {name} saw no finite non-zero input (largest |x| = {new})")
        m.bound.fill_(new)

    for name, m in nl:
        widen(name, m, 0.0)
    # weighted fits, first from exact-form inputs (so that poly form can run), then refitted
    # in the sweep below to the inputs the polynomials before them actually feed them
    _fit_densities(student, batches, n_batches, longest, [m for _, m in nl if m.spec.weighted])
    if poly_batches > 0:
        student.set_form("poly")
        for _ in range(2 * student.cfg.n_layers if student.cfg.recursive else 1):
            before = [float(m.bound) for _, m in nl]
            for name, m in tqdm(nl, desc="calibrate in poly form", unit="non-linearity", leave=False):
                _observe(student, batches, poly_batches, longest)
                widen(name, m, float(m.bound))
                if m.spec.weighted:
                    _fit_densities(student, batches, poly_batches, longest, [m])
            if before == [float(m.bound) for _, m in nl]:
                break
        student.set_form("exact")
    for _, m in nl:
        m.max_ratio.zero_()
    return {name: round(float(m.bound), 4) for name, m in nl}


def _schedule(step: int, total: int, warmup: float) -> float:
    w = max(1, int(total * warmup))
    return step / w if step < w else max(0.0, (total - step) / max(1, total - w))


def param_groups(dist: nn.Module, rel_bias_lr: float) -> list[dict]:
    """AdamW groups: the relative biases at ``rel_bias_lr`` times the rate and without weight decay
    (a prior over offsets, which decay would pull back to symmetric), everything else at 1x."""
    rel, rest = [], []
    for name, p in dist.named_parameters():
        if p.requires_grad:
            (rel if name.endswith("attn.rel_bias") else rest).append(p)
    return [g for g in ({"params": rest, "lr_scale": 1.0}, {"params": rel, "lr_scale": rel_bias_lr, "weight_decay": 0.0}) if g["params"]]


def run_phase(
    name: str, dist: Distiller, batches: Batches, cfg: DistillConfig, epochs: float, lr: float,
    out: Path, log, state: dict, evaluate_fn, labeller: TeacherLabeller | None = None,
) -> None:
    """One training phase with warm-up/decay, a progress bar and resumable checkpoints.

    With a ``labeller``, every step also trains on ``cfg.augment.copies``
    teacher-labelled perturbed copies of its batch (seeded by step, so a
    resumed run draws the same copies).
    """
    if epochs <= 0:
        return
    params = [p for p in dist.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(dist, cfg.rel_bias_lr), lr=lr, weight_decay=cfg.weight_decay)
    total = max(1, round(epochs * len(batches)))
    ckpt = out / f"checkpoint-{name}.pt"
    step = 0
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=True)
        dist.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        step = int(saved["step"])
        print(f"resumed phase {name} at step {step}/{total}")
    bar = tqdm(total=total, initial=step, desc=f"distill[{name}]", unit="batch", dynamic_ncols=True)
    while step < total:
        epoch, done = divmod(step, len(batches))
        for rows in batches.order(epoch)[done : done + total - step]:
            dist.train()
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"] * _schedule(step, total, cfg.warmup)
            batch = batches.collate(rows)
            parts = dist.losses(batch, cfg)
            if labeller is not None:
                rng = np.random.default_rng((cfg.seed, step, len(name)))
                aug = [dist.losses(labeller.label(batch, rng), cfg)["loss"] for _ in range(cfg.augment.copies)]
                parts["aug"] = sum(aug) / len(aug)
                parts["loss"] = parts["loss"] + parts["aug"]
            if not torch.isfinite(parts["loss"]):
                kept = f"the last checkpoint {ckpt} is kept" if ckpt.is_file() else "no checkpoint of this phase yet"
                raise FloatingPointError(
                    f"phase {name}, step {step}: loss is {parts['loss'].item()} (a polynomial input far outside "
                    f"its interval?); {kept}")
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            bar.update(1)
            if step % 50 == 0:
                rec = {"phase": name, "step": step, "lr": opt.param_groups[0]["lr"], **{k: round(float(v.detach()), 5) for k, v in parts.items()}}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.3f}")
            if step % cfg.checkpoint_every == 0 or step == total:
                torch.save({"model": dist.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
        acc = evaluate_fn()
        log.write(json.dumps({"phase": name, "epoch": epoch + 1, "dev_accuracy": acc}) + "\n")
        log.flush()
        bar.write(f"[{name}] epoch {epoch + 1} of {epochs:g}: dev accuracy {acc:.4f}")
    bar.close()
    state[f"dev_{name}"] = evaluate_fn()


def student_vocab_in_teacher_ids(teacher_tok, tokenizer) -> np.ndarray:
    """The teacher id of each student token, in the student's id order: [V_student]."""
    return np.array([teacher_tok.token_to_id(tokenizer.id_to_token(i)) for i in range(tokenizer.get_vocab_size())])


def student_token_vectors(teacher_dir: Path, teacher_tok, tokenizer) -> np.ndarray:
    """``contextual_token_vectors`` of every token of the student's vocabulary, in its id order: [V, d_teacher]."""
    vocab_ids = student_vocab_in_teacher_ids(teacher_tok, tokenizer)
    return contextual_token_vectors(teacher_dir, vocab_ids, teacher_tok.token_to_id("[CLS]"), teacher_tok.token_to_id("[SEP]"))


def word_neighbour_table(teacher_tok, tokenizer, vectors: np.ndarray, k: int) -> np.ndarray:
    """[teacher vocab, k] teacher ids of each whole word's ``k`` nearest whole words (-1 rows elsewhere).

    Whole words are the student's alphabetic tokens that do not continue a
    word ("##"): a continuation piece replaced by a word would split it.
    """
    tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]
    words = np.array([t.isalpha() for t in tokens])  # "##" pieces and [PAD]-like specials are not
    near = nearest_words(vectors, words, k)  # [V_student, k] student ids
    teacher_ids = student_vocab_in_teacher_ids(teacher_tok, tokenizer)
    table = np.full((teacher_tok.get_vocab_size(), k), -1, np.int64)
    table[teacher_ids[words]] = teacher_ids[near[words]]
    return table


def new_student(cfg: DistillConfig, teacher_dir: Path, teacher_tok, tokenizer, vectors: np.ndarray | None) -> Student:
    """A fresh student for ``tokenizer``'s vocabulary, its embeddings initialised from the teacher's.

    ``vectors``: ``student_token_vectors``, for the contextual initialisation.
    """
    from safetensors.numpy import load_file

    cfg.student.vocab_size = tokenizer.get_vocab_size()
    student = Student(cfg.student)
    tw = load_file(str(teacher_dir / "model.safetensors"))
    if cfg.embedding_init == "contextual":
        word_rows = vectors
    elif cfg.embedding_init == "table":
        word_rows = tw["bert.embeddings.word_embeddings.weight"].astype(np.float32)[student_vocab_in_teacher_ids(teacher_tok, tokenizer)]
    else:
        raise ValueError(f"embedding_init must be 'table' or 'contextual', not {cfg.embedding_init!r}")
    init_embeddings_from_teacher(student, word_rows, tw["bert.embeddings.position_embeddings.weight"].astype(np.float32),
                                 tied=cfg.embedding_tied, residual=cfg.embedding_residual,
                                 position_norm=cfg.position_norm)
    return student


def distill(cfg: DistillConfig, teacher_dir: Path, data_dir: Path, out: Path, cache_dir: Path = Path("runs/cache"),
            init: Path | None = None, command: str | None = None) -> dict:
    """Run both phases, save the float16 student with its tokenizer into ``out``, return metrics.

    ``init``: a trained student (its weights, vocabulary, bounds and frozen
    norms) to fine-tune instead: only the poly phase runs, with its bounds
    as they are (``he-inhibitor calibrate`` widens them afterwards).
    ``command``: the command line, recorded in metrics.json for the results table.
    """
    if init is not None and cfg.embedding_tied:
        raise ValueError("embedding_tied ties a fresh student's table to the teacher's rows; with --init the table is already trained")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    if init is not None:
        tokenizer, student = load_tokenizer(init), load_student(init)
        cfg.student = student.cfg
    (out / "distill_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    sentences, labels = load_sst2(data_dir, "train")
    if cfg.limit:
        sentences, labels = sentences[: cfg.limit], labels[: cfg.limit]
    dev_s, dev_y = load_sst2(data_dir, "dev")
    cache = build_cache(teacher_dir, sentences, labels, cache_dir, max_len=cfg.student.max_len)

    teacher_tok = load_unpadded(teacher_dir)
    if init is None:
        vocab = teacher_vocab(teacher_tok) if cfg.vocabulary == "teacher" else trimmed_vocab(teacher_tok, sentences)
        tokenizer = make_tokenizer(vocab)
    augments = [a for a in (cfg.augment, cfg.augment_poly) if a is not None and a.copies > 0]
    vectors = None
    if (init is None and cfg.embedding_init == "contextual") or any(a.p_neighbour > 0 for a in augments):
        vectors = student_token_vectors(teacher_dir, teacher_tok, tokenizer)
    if init is None:
        student = new_student(cfg, teacher_dir, teacher_tok, tokenizer, vectors)
    tokenizer.save(str(out / TOKENIZER_FILE))
    id_map = teacher_to_student_ids(teacher_tok, tokenizer)
    n_teacher = cache.hidden.shape[1] - 1
    dist = Distiller(student, cache.hidden.shape[2], teacher_layers(cfg.layer_map, cfg.student.n_layers, n_teacher))
    batches = Batches(cache, id_map, cfg.batch_size, cfg.seed, need_attn=cfg.loss.attn > 0)
    teacher = None

    def labeller_for(aug: AugmentConfig) -> TeacherLabeller | None:
        """The teacher (loaded once) labelling ``aug``'s copies, or None without augmentation."""
        nonlocal teacher
        if aug.copies == 0:
            return None
        if teacher is None:
            from he_inhibitor.teacher import load_teacher

            teacher = load_teacher(teacher_dir)
            if cfg.loss.attn > 0:
                teacher.set_attn_implementation("eager")  # the fused kernels return no attention maps
        neighbours = word_neighbour_table(teacher_tok, tokenizer, vectors, aug.neighbours) if aug.p_neighbour > 0 else None
        return TeacherLabeller(teacher, teacher_tok, aug, np.asarray(cache.ids), id_map,
                               need_attn=cfg.loss.attn > 0, max_len=cfg.student.max_len, neighbours=neighbours)

    state: dict = {"teacher_train_agreement": float((cache.logits.argmax(1) == cache.labels).mean())}
    if init is not None:
        state["init"] = str(init)
    if command is not None:
        state["command"] = command
    # Dev sentences too long for the positions are truncated while training, and counted:
    # the shipped student must have none (tiny test vocabularies split words into many pieces).
    state["dev_truncated"] = sum(len(e.ids) > cfg.student.max_len for e in tokenizer.encode_batch(dev_s))
    evaluate_fn = lambda: evaluate(student, tokenizer, dev_s, dev_y, truncate=True)  # noqa: E731

    with open(out / "log.jsonl", "a") as log:
        if init is None:
            exact_weights = LossWeights(**{**asdict(cfg.loss), "range": 0.0})  # no bounds yet to respect
            student.fuse_exact(cfg.fused_attention)
            run_phase("exact", dist, batches, DistillConfig.from_dict({**asdict(cfg), "loss": asdict(exact_weights)}),
                      cfg.epochs_exact, cfg.lr, out, log, state, evaluate_fn, labeller_for(cfg.augment))
            student.fuse_exact(False)
            state["bounds"] = calibrate(student, batches, cfg.calibration_batches, cfg.calibration_margin,
                                        cfg.poly_calibration_batches)
        student.freeze_norms()
        student.set_form("poly")
        state["dev_poly_before_finetune"] = evaluate_fn()
        poly_cfg = cfg if cfg.augment_poly is None else replace(cfg, augment=cfg.augment_poly)
        run_phase("poly", dist, batches, poly_cfg, cfg.epochs_poly, cfg.lr_poly, out, log, state, evaluate_fn,
                  labeller_for(poly_cfg.augment))
        state.setdefault("dev_poly", state["dev_poly_before_finetune"])  # epochs_poly = 0: calibration's fits as they are

    untie_word_table(student)
    save_student(student, out)
    shipped = load_student(out).set_form("poly")  # what ships is float16: measure that
    state["dev_poly_float16"] = evaluate(shipped, tokenizer, dev_s, dev_y, truncate=True)
    state["dev_exact_float16"] = evaluate(shipped.set_form("exact"), tokenizer, dev_s, dev_y, truncate=True)
    state["parameters"] = sum(p.numel() for p in student.parameters())
    (out / "metrics.json").write_text(json.dumps(state, indent=2) + "\n")
    return state


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil the teacher into the inhibitor student")
    p.add_argument("--teacher", type=Path, required=True, help="teacher directory (he-inhibitor teacher output)")
    p.add_argument("--data-dir", type=Path, default=None, help="directory with SST-2 train.tsv and dev.tsv")
    p.add_argument("--out", type=Path, required=True, help="output directory (checkpoints, log, student)")
    p.add_argument("--config", type=Path, default=None,
                   help="JSON of overrides of the shipped recipe (any subset of DistillConfig's keys; "
                        "\"extends\": another such file underneath); without it: the shipped recipe")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="one override after --config, dotted key and JSON value, e.g. --set student.n_layers=3 "
                        "(repeatable)")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/cache"), help="where teacher outputs are cached")
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune this trained student (poly phase only) instead of distilling a new one")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.sets)
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise SystemExit(f"error: --config {args.config} / --set {args.sets}: {err}")
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("error: no --data-dir given and no default SST-2 directory found")
    t0 = time.time()
    try:
        state = distill(cfg, args.teacher, Path(data_dir), args.out, args.cache_dir, args.init,
                        command=shlex.join(["he-inhibitor", *sys.argv[1:]]))
    except (FileNotFoundError, ValueError) as err:
        if args.init is None:
            raise
        raise SystemExit(f"error: --init {args.init}: {err}")
    print(json.dumps({**state, "seconds": round(time.time() - t0, 1)}, indent=2))
    return 0
