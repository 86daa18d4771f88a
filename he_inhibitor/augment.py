"""Teacher-labelled data augmentation for distillation (Tang et al., arXiv 1903.12136).

The student over-fits SST-2's 67k training phrases (train accuracy ~0.95,
dev ~0.80) long before the teacher's knowledge is exhausted. Perturbed
copies of each batch -- some word pieces masked, some replaced by words
drawn from the corpus' unigram distribution -- carry no gold label, but the
teacher labels them: its logits and hidden states on the perturbed input
are computed on the fly and the student imitates those. Every perturbed
sentence is a new point of the teacher's function, so the student sees far
more of it than the training phrases show.
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

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ValueError(f"augment.copies must be >= 0, not {self.copies}")
        if not (0 <= self.p_mask and 0 <= self.p_replace and self.p_mask + self.p_replace <= 1):
            raise ValueError(f"augment probabilities must be >= 0 and sum to <= 1, not {self.p_mask}, {self.p_replace}")


def perturb(
    ids: np.ndarray, lengths: np.ndarray, cfg: AugmentConfig, mask_id: int,
    vocab: np.ndarray, weights: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """A perturbed copy of teacher ids [B, T]: inner pieces masked or replaced, [CLS]/[SEP]/padding kept.

    Positions 0 and ``lengths - 1`` ([CLS], [SEP]) and the padding beyond
    never change, so the copy has the same shape and mask as the original.
    """
    out = ids.copy()
    pos = np.arange(ids.shape[1])[None, :]
    inner = (pos > 0) & (pos < lengths[:, None] - 1)  # [B, T]
    u = rng.random(ids.shape)
    masked = inner & (u < cfg.p_mask)
    replaced = inner & (u >= cfg.p_mask) & (u < cfg.p_mask + cfg.p_replace)
    out[masked] = mask_id
    out[replaced] = rng.choice(vocab, size=int(replaced.sum()), p=weights)
    return out


class TeacherLabeller:
    """Runs the teacher on perturbed batches and returns them in ``Batches.collate``'s format."""

    def __init__(self, teacher, tokenizer, cfg: AugmentConfig, corpus_ids: np.ndarray, id_map: np.ndarray,
                 need_attn: bool) -> None:
        """``corpus_ids``: every teacher id of the training set; replacements follow their frequencies.

        ``tokenizer`` is the teacher's. Never a special token is drawn, nor a piece
        the student's vocabulary lacks (``id_map`` sends those to its [UNK]).
        """
        self.teacher, self.cfg, self.id_map, self.need_attn = teacher, cfg, id_map, need_attn
        self.mask_id = tokenizer.token_to_id("[MASK]")
        counts = np.bincount(corpus_ids, minlength=len(id_map)).astype(np.float64)
        counts[[tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]] = 0
        counts[id_map == id_map[tokenizer.token_to_id("[UNK]")]] = 0
        self.vocab = np.flatnonzero(counts)
        if len(self.vocab) == 0:
            raise ValueError("augmentation: the corpus has no ordinary word pieces to draw replacements from")
        self.weights = counts[self.vocab] / counts[self.vocab].sum()

    @torch.no_grad()
    def label(self, batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        t_ids = batch["t_ids"].numpy()
        mask = batch["mask"]
        lengths = mask.sum(1).numpy()
        new = perturb(t_ids, lengths, self.cfg, self.mask_id, self.vocab, self.weights, rng)
        self.teacher.eval()
        res = self.teacher(input_ids=torch.from_numpy(new), attention_mask=mask.long(),
                           output_hidden_states=True, output_attentions=self.need_attn)
        out = {
            "ids": torch.from_numpy(self.id_map[new]), "mask": mask, "t_ids": torch.from_numpy(new),
            "labels": res.logits.argmax(-1), "t_logits": res.logits.float(),
            "t_hidden": torch.stack(res.hidden_states, 2).float(),  # [B, T, L+1, d_t]
        }
        if self.need_attn:
            out["t_attn"] = torch.stack([a.mean(1) for a in res.attentions], -1).float()  # [B, T, T, L]
        return out
