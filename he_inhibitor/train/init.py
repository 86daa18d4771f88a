"""A fresh student started from the teacher: its vocabulary's teacher vectors, embeddings and word neighbours.

A randomly initialised word table would have to learn from SST-2's phrases
alone what the teacher already knows of every word; starting from the
teacher's vectors, projected to the student's width by PCA, the student
begins with the teacher's geometry of words. The same vectors give each
word its nearest words for neighbour augmentation (``augment.p_neighbour``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from he_inhibitor.model.student import Student
from he_inhibitor.teacher import load_teacher
from he_inhibitor.train.augment import nearest_words
from he_inhibitor.train.config import DistillConfig


@torch.no_grad()
def contextual_token_vectors(teacher_dir: Path, vocab_ids: np.ndarray, cls_id: int, sep_id: int, batch_size: int = 512) -> np.ndarray:
    """Each token's teacher hidden state alone in "[CLS] tok [SEP]", averaged over all layers.

    Unlike the input table, these vectors have passed through the fine-tuned
    encoder, so they already carry much of a word's sentiment.
    """
    teacher = load_teacher(teacher_dir)
    out = np.zeros((len(vocab_ids), teacher.config.hidden_size))
    for b in tqdm(range(0, len(vocab_ids), batch_size), desc="token vectors", unit="batch"):
        ids = torch.from_numpy(vocab_ids[b : b + batch_size]).long()
        seq = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1)  # [B, 3]
        hs = teacher(input_ids=seq, output_hidden_states=True).hidden_states
        out[b : b + batch_size] = torch.stack(hs, 0)[:, :, 1].mean(0).double().numpy()
    return out


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
    if parametrize.is_parametrized(student.word, "weight"):
        parametrize.remove_parametrizations(student.word, "weight", leave_parametrized=True)


def new_student(cfg: DistillConfig, teacher_dir: Path, teacher_tok, tokenizer, vectors: np.ndarray | None) -> Student:
    """A fresh student of ``cfg.student`` for ``tokenizer``'s vocabulary, its embeddings initialised from the teacher's.

    ``vectors``: ``student_token_vectors``, for the contextual initialisation.
    """
    student = Student(replace(cfg.student, vocab_size=tokenizer.get_vocab_size()))
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
