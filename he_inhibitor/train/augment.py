"""Teacher-labelled data augmentation for distillation (Tang et al., arXiv 1903.12136).

Without it the student over-fits SST-2's training phrases (train accuracy
far above dev) long before the teacher's knowledge is exhausted. Perturbed
copies of each batch -- some word pieces masked, some replaced by words
drawn from the corpus' unigram distribution -- carry no gold label, but the
teacher labels them: its logits and hidden states on the perturbed input
are computed on the fly and the student imitates those. Every perturbed
sentence is a new point of the teacher's function, so the student sees far
more of it than the training phrases show.

A word drawn from the unigram distribution is mostly "the" or "a": a
perturbation, but rarely one that tests what the student knows of a word.
``p_neighbour`` replaces a whole word by one of its nearest words instead
(TinyBERT's augmentation, arXiv 1909.10351, with the fine-tuned teacher's own
token vectors in place of GloVe): "good" by "decent" or "great", inputs near
the teacher's decision boundary that the training phrases never show.

Joining phrases (``concat``) targets length. SST-2's training rows are
phrases, much shorter than the dev sentences, and the students lose to the
teacher on long sentences (``he-inhibitor eval --by-length``; docs/log.md).
A joined pair of phrases, labelled by the teacher, is a long input with the
mixed sentiment long sentences carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class AugmentConfig:
    """``copies`` perturbed copies of every batch (0 turns augmentation off)."""

    copies: int = 0
    p_mask: float = 0.1  # a word piece becomes [MASK]
    p_replace: float = 0.1  # a word piece becomes a corpus word
    concat: float = 0.0  # a row is joined to another row of its batch before perturbing
    p_neighbour: float = 0.0  # a whole word becomes one of its nearest words (others are kept)
    neighbours: int = 15  # how many nearest words it is drawn from

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ValueError(f"augment.copies must be >= 0, not {self.copies}")
        if not 0 <= self.concat <= 1:
            raise ValueError(f"augment.concat is a fraction of rows in [0, 1], not {self.concat}")
        probs = (self.p_mask, self.p_replace, self.p_neighbour)
        if not (min(probs) >= 0 and sum(probs) <= 1):
            raise ValueError(f"augment probabilities (mask, replace, neighbour) must be >= 0 and sum to <= 1, not {probs}")
        if self.neighbours < 1:
            raise ValueError(f"augment.neighbours must be >= 1, not {self.neighbours}")


def nearest_words(vectors: np.ndarray, words: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Each row's ``k`` nearest rows by cosine among those ``words`` marks, itself excluded: [V, k] row indices.

    ``vectors`` [V, d] holds one token vector per row, ``words`` [V] bool the
    rows that are whole words (the only ones that get or give neighbours);
    other rows are -1.
    """
    cand = np.flatnonzero(words)
    if len(cand) <= k:
        raise ValueError(f"augmentation: {len(cand)} whole words are too few for {k} neighbours each")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = np.full((len(vectors), k), -1, np.int64)
    for start in range(0, len(cand), chunk):
        rows = cand[start : start + chunk]
        sim = unit[rows] @ unit[cand].T  # [chunk, n_words]
        sim[np.arange(len(rows)), start + np.arange(len(rows))] = -np.inf  # not itself
        top = np.argpartition(-sim, k, axis=1)[:, :k]
        out[rows] = cand[top]
    return out


def perturb(
    ids: np.ndarray, lengths: np.ndarray, cfg: AugmentConfig, mask_id: int,
    vocab: np.ndarray, weights: np.ndarray, rng: np.random.Generator, neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """A perturbed copy of teacher ids [B, T]: inner pieces masked or replaced, [CLS]/[SEP]/padding kept.

    Positions 0 and ``lengths - 1`` ([CLS], [SEP]) and the padding beyond
    never change, so the copy has the same shape and mask as the original.
    ``neighbours`` [V, k]: each teacher id's nearest words (-1 rows: none,
    the piece is kept), needed when ``cfg.p_neighbour > 0``.
    """
    out = ids.copy()
    pos = np.arange(ids.shape[1])[None, :]
    inner = (pos > 0) & (pos < lengths[:, None] - 1)  # [B, T]
    u = rng.random(ids.shape)
    masked = inner & (u < cfg.p_mask)
    replaced = inner & (u >= cfg.p_mask) & (u < cfg.p_mask + cfg.p_replace)
    out[masked] = mask_id
    out[replaced] = rng.choice(vocab, size=int(replaced.sum()), p=weights)
    if cfg.p_neighbour > 0:
        if neighbours is None:
            raise ValueError("augment.p_neighbour > 0 needs a neighbour table")
        near = inner & (u >= cfg.p_mask + cfg.p_replace) & (u < cfg.p_mask + cfg.p_replace + cfg.p_neighbour)
        pick = neighbours[ids[near], rng.integers(0, neighbours.shape[1], int(near.sum()))]
        out[near] = np.where(pick >= 0, pick, ids[near])
    return out


def concatenate(
    ids: np.ndarray, lengths: np.ndarray, fraction: float, max_len: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Join a ``fraction`` of the rows of teacher ids [B, T] to a random partner row; returns (ids, lengths).

    A joined row is "[CLS] a b [SEP]": row a without its [SEP], then partner b
    without its [CLS], cut to ``max_len`` with [SEP] kept last. Other rows
    are unchanged; the width is the longest new row.
    """
    b = len(ids)
    partner = rng.permutation(b)
    joined = rng.random(b) < fraction
    sep = ids[np.arange(b), lengths - 1]
    new_len = np.where(joined, np.minimum(lengths + lengths[partner] - 2, max_len), lengths)
    out = np.zeros((b, int(new_len.max())), ids.dtype)
    for r in range(b):
        if joined[r]:
            row = np.concatenate([ids[r, : lengths[r] - 1], ids[partner[r], 1 : lengths[partner[r]]]])
            out[r, : new_len[r] - 1] = row[: new_len[r] - 1]
            out[r, new_len[r] - 1] = sep[r]
        else:
            out[r, : lengths[r]] = ids[r, : lengths[r]]
    return out, new_len


class TeacherLabeller:
    """Runs the teacher on perturbed batches and returns them in ``Batches.collate``'s format."""

    def __init__(self, teacher, tokenizer, cfg: AugmentConfig, corpus_ids: np.ndarray, id_map: np.ndarray,
                 need_attn: bool, max_len: int = 64, neighbours: np.ndarray | None = None) -> None:
        """``corpus_ids``: every teacher id of the training set; replacements follow their frequencies.

        ``max_len``: joined rows are cut to the student's positions.
        ``neighbours``: [teacher vocab, k] nearest words (``nearest_words`` in
        teacher ids), for ``cfg.p_neighbour``.

        ``tokenizer`` is the teacher's; replacements follow ``replacement_table``.
        ``teacher`` may be None where only ``copy`` is called (``train.copy_bank`` makes a bank).
        """
        self.teacher, self.cfg, self.id_map, self.need_attn, self.max_len = teacher, cfg, id_map, need_attn, max_len
        if cfg.p_neighbour > 0 and (neighbours is None or neighbours.shape[0] != len(id_map)):
            raise ValueError(f"augment.p_neighbour > 0 needs a neighbour table with one row per teacher id ({len(id_map)})")
        self.neighbours = neighbours
        self.mask_id = tokenizer.token_to_id("[MASK]")
        self.vocab, self.weights = replacement_table(tokenizer, corpus_ids, id_map)

    def copy(self, t_ids: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One perturbed (and partly joined) copy of teacher ids [B, T]: (ids [B, T'], lengths [B])."""
        if self.cfg.concat > 0:
            t_ids, lengths = concatenate(t_ids, lengths, self.cfg.concat, self.max_len, rng)
        return perturb(t_ids, lengths, self.cfg, self.mask_id, self.vocab, self.weights, rng, self.neighbours), lengths

    def label(self, batch: dict[str, torch.Tensor], rng: np.random.Generator, n: int) -> list[dict[str, torch.Tensor]]:
        """``n`` copies of ``batch``, each labelled by the teacher, in ``Batches.collate``'s format."""
        t_ids, lengths = batch["t_ids"].numpy(), batch["mask"].sum(1).numpy()
        return [self.outputs(*self.copy(t_ids, lengths, rng)) for _ in range(n)]

    @torch.no_grad()
    def outputs(self, ids: np.ndarray, lengths: np.ndarray, logits: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The teacher's outputs on teacher ids [B, T] as a training batch; ``logits`` [B, labels], when
        given, replace its logits (another teacher's, cached: ``train.copy_bank``)."""
        mask = torch.from_numpy(np.arange(ids.shape[1])[None, :] < lengths[:, None])  # [B, T]
        self.teacher.eval()
        res = self.teacher(input_ids=torch.from_numpy(ids), attention_mask=mask.long(),
                           output_hidden_states=True, output_attentions=self.need_attn)
        z = res.logits.float() if logits is None else torch.from_numpy(np.asarray(logits, np.float32))
        out = {
            "ids": torch.from_numpy(self.id_map[ids]), "mask": mask, "t_ids": torch.from_numpy(ids),
            "labels": z.argmax(-1), "t_logits": z,
            "t_hidden": torch.stack(res.hidden_states, 2).float(),  # [B, T, L+1, d_t]
        }
        if self.need_attn:
            out["t_attn"] = torch.stack([a.mean(1) for a in res.attentions], -1).float()  # [B, T, T, L]
        return out


def replacement_table(tokenizer, corpus_ids: np.ndarray, id_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The teacher ids a replacement may draw and their probabilities (their frequencies in ``corpus_ids``).

    Never a special token, nor a piece the student's vocabulary lacks (``id_map``
    sends those to its [UNK]).
    """
    counts = np.bincount(corpus_ids, minlength=len(id_map)).astype(np.float64)
    counts[[tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]] = 0
    counts[id_map == id_map[tokenizer.token_to_id("[UNK]")]] = 0
    vocab = np.flatnonzero(counts)
    if len(vocab) == 0:
        raise ValueError("augmentation: the corpus has no ordinary word pieces to draw replacements from")
    return vocab, counts[vocab] / counts[vocab].sum()
