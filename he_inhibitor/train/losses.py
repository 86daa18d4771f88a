"""The distillation losses (TinyBERT-style, arXiv 2308.13958) and the teacher layer each student layer imitates.

Soft-label KD on logits with temperature (KL * tau^2, or the squared logit
error), hard-label CE, hidden-state MSE through learned projections with a
layer mapping, embedding MSE, an attention-level loss (teacher attention
maps against the student's normalised inhibition), and the range penalties
that keep every polynomial input inside its interval; each weighted in
``DistillConfig.loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from he_inhibitor.model.student import Student
from he_inhibitor.train.config import DistillConfig


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


class Distiller(nn.Module):
    """The student plus the projections only distillation needs (dropped when saving)."""

    def __init__(self, student: Student, d_teacher: int, t_layers: list[int]) -> None:
        super().__init__()
        self.student, self.t_layers = student, t_layers
        d = student.cfg.d_model
        self.proj = nn.ModuleList(nn.Linear(d, d_teacher) for _ in t_layers)
        self.proj_emb = nn.Linear(d, d_teacher)

    def losses(self, batch: dict[str, torch.Tensor], cfg: DistillConfig) -> dict[str, torch.Tensor]:
        """Each loss of ``batch`` whose weight is non-zero (kd and ce always), their weighted sum
        ``loss``, and the batch accuracy ``acc`` (logged, not trained on)."""
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
            out["range"] = s.range_penalty("mean")
        if w.range_max > 0:
            out["range_max"] = s.range_penalty("row_max")
        out["loss"] = sum(getattr(w, k) * v for k, v in out.items())
        out["acc"] = (logits.argmax(-1) == batch["labels"]).float().mean()
        return out
