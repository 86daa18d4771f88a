"""A whole distillation run (``he-inhibitor distill``): data, vocabulary, student, both phases, the saved student.

Two phases: ``exact`` non-linearities first; then the bounds B are calibrated
on training data, the norms are frozen, and a ``poly`` phase fine-tunes the
student with the circuit's own polynomials, so the shipped model is exactly
what the encrypted circuit computes. With ``init`` only the poly phase runs,
on a trained student.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import load_sst2
from he_inhibitor.model.predict import accuracy
from he_inhibitor.model.student import load_student, save_student
from he_inhibitor.teacher import load_teacher
from he_inhibitor.teacher_cache import build_cache
from he_inhibitor.teacher_logits import PRECISION, LogitCache
from he_inhibitor.train.augment import AugmentConfig, TeacherLabeller
from he_inhibitor.train.batches import Batches
from he_inhibitor.train.calibration import calibrate
from he_inhibitor.train.copy_bank import BankLabeller, CopyBank, CopyBankError, bank_path, build_bank, padded_rows
from he_inhibitor.train.config import DistillConfig
from he_inhibitor.train.init import new_student, student_token_vectors, untie_word_table, word_neighbour_table
from he_inhibitor.train.losses import Distiller, teacher_layers
from he_inhibitor.train.loop import run_phase
from he_inhibitor.vocab import (
    TOKENIZER_FILE, load_tokenizer, load_unpadded, make_tokenizer, teacher_to_student_ids, teacher_vocab, trimmed_vocab,
)


def distill(cfg: DistillConfig, teacher_dir: Path, data_dir: Path, out: Path, cache_dir: Path = Path("runs/cache"),
            init: Path | None = None, command: str | None = None, logit_cache: Path = Path("runs/logits")) -> dict:
    """Run both phases, save the float16 student with its tokenizer into ``out``, return metrics.

    ``init``: a trained student (its weights, vocabulary, bounds and frozen
    norms) to fine-tune instead: only the poly phase runs, with its bounds
    as they are (``he-inhibitor calibrate`` widens them afterwards).
    ``command``: the command line, recorded in metrics.json for the results table.
    ``logit_cache``: where ``he-inhibitor teacher-logits`` cached ``cfg.logit_teacher``'s logits.
    """
    if init is not None and cfg.embedding_tied:
        raise ValueError("embedding_tied ties a fresh student's table to the teacher's rows; with --init the table is already trained")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    if init is not None:
        tokenizer, student = load_tokenizer(init), load_student(init)
        cfg = replace(cfg, student=student.cfg)
    (out / "distill_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    sentences, labels = training_rows(cfg, data_dir)
    dev_s, dev_y = load_sst2(data_dir, "dev")
    # read before any teacher work, so that a missing cache is refused at once
    logits = None if cfg.logit_teacher is None else _cached_logits(cfg.logit_teacher, logit_cache, sentences)
    cache = build_cache(teacher_dir, sentences, labels, cache_dir, max_len=cfg.student.max_len)

    teacher_tok = load_unpadded(teacher_dir)
    if init is None:
        tokenizer = student_tokenizer(cfg, teacher_tok, sentences)
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
    batches = Batches(cache, id_map, cfg.batch_size, cfg.seed, need_attn=cfg.loss.attn > 0, logits=logits)
    # read before any training, so that a missing bank is refused at once
    bank = None if cfg.cached_copies == 0 else _copy_bank(cfg, teacher_dir, cache, id_map, logit_cache, data_dir)
    teacher = None

    def labeller_for(aug: AugmentConfig) -> TeacherLabeller | BankLabeller | None:
        """The teacher (loaded once) labelling ``aug``'s copies, or None without augmentation."""
        nonlocal teacher
        if aug.copies == 0:
            return None
        if teacher is None:
            teacher = load_teacher(teacher_dir)
            if cfg.loss.attn > 0:
                teacher.set_attn_implementation("eager")  # the fused kernels return no attention maps
        neighbours = word_neighbour_table(teacher_tok, tokenizer, vectors, aug.neighbours) if aug.p_neighbour > 0 else None
        labeller = TeacherLabeller(teacher, teacher_tok, aug, np.asarray(cache.ids), id_map,
                                   need_attn=cfg.loss.attn > 0, max_len=cfg.student.max_len, neighbours=neighbours)
        return labeller if bank is None else BankLabeller(labeller, bank)

    state: dict = {"teacher_train_agreement": float((batches.logits.argmax(1) == cache.labels).mean())}
    if init is not None:
        state["init"] = str(init)
    if command is not None:
        state["command"] = command
    # Dev sentences too long for the positions are truncated while training, and counted:
    # the shipped student must have none (tiny test vocabularies split words into many pieces).
    state["dev_truncated"] = sum(len(e.ids) > cfg.student.max_len for e in tokenizer.encode_batch(dev_s))
    dev_accuracy = partial(accuracy, student, tokenizer, dev_s, dev_y, truncate=True)

    with open(out / "log.jsonl", "a") as log:
        if init is None:
            exact_cfg = replace(cfg, loss=replace(cfg.loss, range=0.0, range_max=0.0))  # no bounds yet to respect
            student.fuse(cfg.fused_attention)
            run_phase("exact", dist, batches, exact_cfg, cfg.epochs_exact, cfg.lr, out, log, state, dev_accuracy,
                      labeller_for(cfg.augment))
            student.fuse(False)  # calibration observes every input
            state["bounds"] = calibrate(student, batches, cfg.calibration_batches, cfg.calibration_margin,
                                        cfg.poly_calibration_batches, min_length=cfg.calibration_min_length,
                                        fit_min_length=cfg.calibration_fit_min_length)
        student.freeze_norms()
        student.set_form("poly")
        state["dev_poly_before_finetune"] = dev_accuracy()
        poly_cfg = cfg if cfg.augment_poly is None else replace(cfg, augment=cfg.augment_poly)
        student.fuse(cfg.fused_attention)
        run_phase("poly", dist, batches, poly_cfg, cfg.epochs_poly, cfg.lr_poly, out, log, state, dev_accuracy,
                  labeller_for(poly_cfg.augment))
        student.fuse(False)
        state.setdefault("dev_poly", state["dev_poly_before_finetune"])  # epochs_poly = 0: calibration's fits as they are

    untie_word_table(student)
    save_student(student, out)
    shipped = load_student(out).set_form("poly")  # what ships is float16: measure that
    state["dev_poly_float16"] = accuracy(shipped, tokenizer, dev_s, dev_y, truncate=True)
    state["dev_exact_float16"] = accuracy(shipped.set_form("exact"), tokenizer, dev_s, dev_y, truncate=True)
    state["parameters"] = sum(p.numel() for p in student.parameters())
    (out / "metrics.json").write_text(json.dumps(state, indent=2) + "\n")
    return state


def training_rows(cfg: DistillConfig, data_dir: Path) -> tuple[list[str], list[int]]:
    """SST-2 train, its first ``cfg.limit`` rows where a limit is set: what a run distils on."""
    sentences, labels = load_sst2(data_dir, "train")
    return (sentences[: cfg.limit], labels[: cfg.limit]) if cfg.limit else (sentences, labels)


def student_tokenizer(cfg: DistillConfig, teacher_tok, sentences: list[str]):
    """A new student's WordPiece tokenizer: the teacher's tokens the training text uses, or all of them."""
    vocab = teacher_vocab(teacher_tok) if cfg.vocabulary == "teacher" else trimmed_vocab(teacher_tok, sentences)
    return make_tokenizer(vocab)


def build_copies(cfg: DistillConfig, teacher_dir: Path, data_dir: Path, cache_dir: Path = Path("runs/cache"),
                 logit_cache: Path = Path("runs/logits"), progress: bool = True) -> Path:
    """Build the copy bank ``cfg`` reads (``he-inhibitor teacher-copies``); returns its path."""
    sentences, labels = training_rows(cfg, data_dir)
    cache = build_cache(teacher_dir, sentences, labels, cache_dir, max_len=cfg.student.max_len)
    teacher_tok = load_unpadded(teacher_dir)
    id_map = teacher_to_student_ids(teacher_tok, student_tokenizer(cfg, teacher_tok, sentences))
    copier = TeacherLabeller(None, teacher_tok, cfg.augment, np.asarray(cache.ids), id_map, need_attn=False,
                             max_len=cfg.student.max_len)
    return build_bank(cfg, copier, teacher_tok, cache, id_map, logit_cache, progress)


def _copy_bank(cfg: DistillConfig, teacher_dir: Path, cache, id_map: np.ndarray, root: Path, data_dir: Path) -> CopyBank:
    """The bank ``cfg.cached_copies`` asks for, or a CopyBankError naming the command that builds it."""
    path = bank_path(root, cfg, padded_rows(cache)[0], id_map)
    if not path.is_file():
        raise CopyBankError(f"no bank of {cfg.cached_copies} copies per row for this config under {root}; run "
                            f"`he-inhibitor teacher-copies --teacher {teacher_dir} --data-dir {data_dir} "
                            f"--logit-cache {root}` with this run's --config/--set first")
    return CopyBank(path, len(cache))


class LogitTeacherError(ValueError):
    """The config's logit_teacher has no weights, or its logits are not cached: what to run is in the message."""


def _cached_logits(teacher: str, root: Path, sentences: list[str]) -> np.ndarray:
    """[rows, labels] the logit teacher's cached logits of the training phrases, in row order."""
    try:
        return LogitCache(root, teacher, precision=PRECISION).get(sentences).numpy()
    except FileNotFoundError as err:
        raise LogitTeacherError(f"logit_teacher {teacher}: {err}") from None
    except KeyError as err:
        raise LogitTeacherError(f"logit_teacher {teacher}: {err.args[0]}; run `he-inhibitor teacher-logits "
                                f"--teacher {teacher} --cache {root}` first") from None
