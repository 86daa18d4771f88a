"""What a distillation run is: ``DistillConfig``, whose defaults are the shipped recipe, and its overrides.

An experiment is a small JSON of overrides (``configs/README.md``): merged key
by key onto the recipe, optionally on top of another file it ``"extends"``,
then each ``--set KEY=VALUE``. Configs are never changed in place; code that
needs a variant builds one with ``dataclasses.replace``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import StudentConfig
from he_inhibitor.train.augment import AugmentConfig


@dataclass
class LossWeights:
    """The weight of each loss in the total (``train.losses``); 0 leaves a loss out (kd and ce are always
    computed, for the log). The exact phase runs with the range terms at 0: there are no bounds yet to respect.

    ``range`` penalises inputs beyond (1 - margin) B averaged over every element; ``range_max`` each
    sentence's largest input (``model.nonlinear.range_stats``), which is what decides whether the
    circuit's bare polynomial stays an approximation on that sentence."""

    kd: float = 1.0
    ce: float = 0.2
    hidden: float = 0.05
    emb: float = 0.0
    attn: float = 0.0
    range: float = 1.0
    # one dev sentence beyond a bound spoils it in the circuit; this term keeps two seeds' outliers in
    # without costing a sentence (docs/log.md, "each sentence's largest input")
    range_max: float = 10.0


def recipe_student() -> StudentConfig:
    """The shipped student's architecture (``he_inhibitor/assets/student/config.json``).

    StudentConfig's own defaults stay the plain inhibitor (4 heads, no bias, no length norm, Remez
    fits), which every hand-built tiny student and every dot-product student relies on; the options
    the shipped student adds are set here, where ``he-inhibitor distill`` reads its recipe. 16
    interleaved heads make the circuit's head sums cheaper; the key norm and the relative bias are
    public plaintexts in the circuit (no level); weighted fits are made by calibration from the
    inputs each polynomial really sees (docs/design.md §2, §5). |x| is fitted at degree 6 (depth 3,
    half the multiplications of degree 14); the ReLUs keep degree 14, because the attention's ReLU,
    summed over every key, is where a lower degree costs accuracy (docs/log.md, 2026-12-04 and -05).
    """
    return StudentConfig(n_heads=16, key_norm=0.5, rel_bias=True, rel_bias_init=1.0,
                         abs_poly=PolySpec(6, "weighted"), relu_poly=PolySpec(14, "weighted"))


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
    # a second teacher (``he-inhibitor teacher --base mpnet``, built where docs/teacher.md builds it)
    # whose cached logits (``he-inhibitor teacher-logits``) replace the first's on the training phrases
    # for the logit losses; the token-level losses (hidden states) and the augmented copies keep the
    # first teacher, whose tokenizer is the student's. None: the first teacher's own logits
    logit_teacher: str | None = "runs/teacher-mpnet/model"
    # K > 0: the augmented copies come from a bank of K per training row, made once with ``augment``'s
    # settings and labelled by logit_teacher (``he-inhibitor teacher-copies``; ``train.copy_bank``);
    # each step trains on ``augment.copies`` of a row's K. The hidden states stay the first teacher's,
    # run on each copy. 0: copies drawn each step and labelled by the first teacher on the fly
    cached_copies: int = 0
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
    # two: the second epoch draws fresh augmented copies, and with the average below lifts the exact
    # form by about a point (docs/log.md, "the weights' average")
    epochs_exact: int = 2
    # d in (0, 1): each phase ends on an exponential moving average of its weights with decay d per
    # step (``train.averaging``; about 1 / (1 - d) recent steps weigh in); 0: on the last weights
    ema: float = 0.995
    # fractions allowed: the poly phase only adapts a trained student to the circuit's own polynomials
    # (0 skips it: the calibrated poly form is then about as accurate as exact). Half an epoch lifts the
    # three seeds' mean by 0.35 points, a quarter by 0.15 (docs/log.md, "half an epoch in poly form")
    epochs_poly: float = 0.5
    lr_poly: float = 5e-4
    calibration_batches: int = 200
    calibration_margin: float = 0.1
    # then per non-linearity, in evaluation order, its bound widened to cover what the
    # poly form (earlier polynomials already in place) feeds it; 0 turns this off
    poly_calibration_batches: int = 25
    # calibrate and fit on random training rows of at least this many word pieces (0: every row); the
    # rows are mostly short phrases, the circuit's inputs sentences (train.calibration.calibrate)
    calibration_min_length: int = 0
    # the weighted fits alone on random rows of at least this many pieces (None: calibration_min_length's
    # rows): bounds then cover every kind of row while the fits sit where sentences' inputs are
    calibration_fit_min_length: int | None = 20
    limit: int | None = None
    seed: int = 1
    threads: int = 1
    # both phases' inhibitor attention through torch.compile (Student.fuse): 3-10x faster per
    # layer (scripts/bench_fused_attention.py), about 2x per step with 2 copies, after a
    # one-off compile of under a minute per form; needs a C++ compiler
    fused_attention: bool = True
    # learning-rate multiplier of the relative biases b_h(o): Adam moves each by at most about lr a step,
    # so in one epoch at 2e-3 a bias travels about 1, which may be too little to learn a direction
    rel_bias_lr: float = 5.0
    checkpoint_every: int = 300

    def __post_init__(self) -> None:
        lengths = {"calibration_min_length": self.calibration_min_length}
        if self.calibration_fit_min_length is not None:  # None: the fits see calibration_min_length's rows
            lengths["calibration_fit_min_length"] = self.calibration_fit_min_length
        for name, value in lengths.items():
            if not (isinstance(value, int) and 0 <= value <= self.student.max_len):
                raise ValueError(f"{name} is a number of word pieces from 0 to the student's max_len "
                                 f"{self.student.max_len}, not {value!r}")
        if self.kd_loss not in ("kl", "mse"):
            raise ValueError(f"kd_loss must be 'kl' or 'mse', not {self.kd_loss!r}")
        if self.vocabulary not in ("train", "teacher"):
            raise ValueError(f"vocabulary must be 'train' or 'teacher', not {self.vocabulary!r}")
        if self.position_norm < 0:
            raise ValueError(f"position_norm is a ratio of norms, >= 0, not {self.position_norm}")
        if not self.embedding_residual and not self.embedding_tied:
            raise ValueError("embedding_residual=False freezes the residual R of a tied table: it needs embedding_tied")
        if self.cached_copies < 0:
            raise ValueError(f"cached_copies is a number of copies per row, >= 0, not {self.cached_copies}")
        if self.cached_copies and self.logit_teacher is None:
            raise ValueError("cached_copies > 0 needs a logit_teacher to label the bank's copies")
        if self.cached_copies and self.augment_poly is not None:
            raise ValueError("cached_copies: both phases draw from one bank, made with `augment`; augment_poly must be unset")
        if self.cached_copies and self.augment.copies > self.cached_copies:
            raise ValueError(f"augment.copies {self.augment.copies} a step would reuse a row's copy: the bank has "
                             f"cached_copies {self.cached_copies} per row")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema is a decay per step in [0, 1) (0: no average), not {self.ema}")
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
