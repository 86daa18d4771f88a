"""The training loop of one phase: AdamW with warm-up and linear decay, teacher-labelled copies, checkpoints.

A phase is resumable: its checkpoint holds the model, the optimiser and the
step, and both the batch order (seeded per epoch) and the augmented copies
(seeded per step) are functions of the step, so a resumed run trains on
exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from he_inhibitor.train.augment import TeacherLabeller
from he_inhibitor.train.averaging import WeightAverage
from he_inhibitor.train.batches import Batches
from he_inhibitor.train.config import DistillConfig
from he_inhibitor.train.losses import Distiller


def _schedule(step: int, total: int, warmup: float) -> float:
    """The learning-rate factor at ``step``: linear warm-up over the first ``warmup`` of ``total``, then linear decay to 0."""
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
    out: Path, log: TextIO, state: dict, dev_accuracy: Callable[[], float], labeller: TeacherLabeller | None = None,
) -> None:
    """One training phase with warm-up/decay, a progress bar and resumable checkpoints.

    Logs losses every 50 steps and ``dev_accuracy()`` after every epoch into
    ``log``; the phase's final dev accuracy goes into ``state["dev_<name>"]``.

    With a ``labeller``, every step also trains on ``cfg.augment.copies``
    teacher-labelled perturbed copies of its batch (seeded by step, so a
    resumed run draws the same copies).

    With ``cfg.ema`` > 0 the phase also keeps an average of its weights
    (``averaging.WeightAverage``, checkpointed with them); at its end the
    raw weights' dev accuracy goes into ``state["dev_<name>_raw"]`` and the
    average replaces them.
    """
    if epochs <= 0:
        return
    params = [p for p in dist.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(dist, cfg.rel_bias_lr), lr=lr, weight_decay=cfg.weight_decay)
    total = max(1, round(epochs * len(batches)))
    average = WeightAverage(params, cfg.ema) if cfg.ema > 0 else None
    ckpt = out / f"checkpoint-{name}.pt"
    step = 0
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=True)
        dist.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        step = int(saved["step"])
        if average is not None:
            if "average" not in saved:
                raise ValueError(f"{ckpt} was saved without a weight average (ema 0); it cannot resume a run with ema {cfg.ema}")
            average.load_state_dict(saved["average"])
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
                aug = [dist.losses(b, cfg)["loss"] for b in labeller.label(batch, rng, cfg.augment.copies)]
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
            if average is not None:
                average.update(step)
            step += 1
            bar.update(1)
            if step % 50 == 0:
                rec = {"phase": name, "step": step, "lr": opt.param_groups[0]["lr"], **{k: round(float(v.detach()), 5) for k, v in parts.items()}}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.3f}")
            if step % cfg.checkpoint_every == 0 or step == total:
                saved = {"model": dist.state_dict(), "opt": opt.state_dict(), "step": step}
                torch.save(saved if average is None else {**saved, "average": average.state_dict()}, ckpt)
        acc = dev_accuracy()
        log.write(json.dumps({"phase": name, "epoch": epoch + 1, "dev_accuracy": acc}) + "\n")
        log.flush()
        bar.write(f"[{name}] epoch {epoch + 1} of {epochs:g}: dev accuracy {acc:.4f}")
    bar.close()
    if average is not None:
        state[f"dev_{name}_raw"] = dev_accuracy()
        average.copy_to_params()
    state[f"dev_{name}"] = dev_accuracy()
