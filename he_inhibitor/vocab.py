"""The student's trimmed WordPiece vocabulary and its tokenizer (``tokenizers``, no torch).

The student keeps only the teacher's tokens that occur in the training text.
Greedy longest-match WordPiece then tokenizes every training sentence exactly
as the teacher does (each piece the full vocabulary chose is still there, and
no longer piece was added), so hidden states align position by position for
distillation, while the embedding table shrinks to a few MB.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD_ID = 0
TOKENIZER_FILE = "tokenizer.json"


class SentenceTooLongError(ValueError):
    """A sentence needs more positions than the student (and its circuit) has."""


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json`` file, or a directory holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / TOKENIZER_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no tokenizer at {p}")
    return Tokenizer.from_file(str(p))


def load_unpadded(path: str | Path) -> Tokenizer:
    """A tokenizer with padding and truncation off: the teacher's ids, matched one to one with the student's."""
    tok = load_tokenizer(path)
    tok.no_padding()
    tok.no_truncation()
    return tok


def trimmed_vocab(teacher: Tokenizer, sentences: Iterable[str]) -> list[str]:
    """Specials first, then every teacher token the sentences use, in the teacher's id order."""
    used: set[int] = set()
    for enc in teacher.encode_batch(list(sentences)):
        used.update(enc.ids)
    inv = {i: t for t, i in teacher.get_vocab().items()}
    return list(SPECIALS) + [inv[i] for i in sorted(used) if inv[i] not in SPECIALS]


def teacher_vocab(teacher: Tokenizer) -> list[str]:
    """Specials first, then every ASCII teacher token but the ``[unused...]`` slots, in id order.

    Uncased BERT normalisation strips accents, so on any text this tokenizes
    exactly as the teacher does; words the training text never uses keep a
    row, which a word table tied to the teacher's vectors fills with meaning.
    """
    inv = sorted((i, t) for t, i in teacher.get_vocab().items())
    return list(SPECIALS) + [t for _, t in inv if t.isascii() and not t.startswith("[unused") and t not in SPECIALS]


def make_tokenizer(vocab: list[str]) -> Tokenizer:
    """Uncased BERT WordPiece over ``vocab`` that adds [CLS] ... [SEP] like the teacher."""
    if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
        raise ValueError(f"vocabulary must start with {SPECIALS}")
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = BertPreTokenizer()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    return tok


def teacher_to_student_ids(teacher: Tokenizer, student: Tokenizer) -> np.ndarray:
    """Lookup table: teacher id -> student id ([UNK] where the student lacks the token)."""
    table = np.full(teacher.get_vocab_size(), student.token_to_id("[UNK]"), dtype=np.int64)
    for token, tid in teacher.get_vocab().items():
        sid = student.token_to_id(token)
        if sid is not None:
            table[tid] = sid
    return table


def encode(tokenizer: Tokenizer, sentences: list[str], max_len: int, truncate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sentences -> (ids [B, T], mask [B, T] bool), T the longest in the batch.

    With ``truncate=False`` a sentence longer than ``max_len`` is refused
    (inference must never silently drop words); training may truncate.
    """
    if isinstance(sentences, str):
        raise TypeError("encode takes a list of sentences, not a single string")
    for s in sentences:
        if not isinstance(s, str) or not s.strip():
            raise ValueError(f"not a sentence: {s!r}")
    encs = tokenizer.encode_batch(sentences)
    lengths = [len(e.ids) for e in encs]
    if not truncate and max(lengths) > max_len:
        i = int(np.argmax(lengths))
        raise SentenceTooLongError(
            f"sentence {i} has {lengths[i]} tokens; the student takes at most {max_len}: {sentences[i][:80]!r}"
        )
    t = min(max(lengths), max_len)
    ids = np.full((len(encs), t), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(encs), t), dtype=bool)
    for row, e in enumerate(encs):
        seq = e.ids if len(e.ids) <= max_len else e.ids[: max_len - 1] + [e.ids[-1]]
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = True
    return ids, mask
