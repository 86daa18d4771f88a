"""Checkpoints of a teacher fine-tune, so that a run of hours survives the end of a session.

A checkpoint holds everything the next step depends on: the float32 weights,
AdamW's moments, the learning-rate schedule's position, torch's global RNG
state (dropout masks come from it) and the position in the data order (the
order generator's state at the start of the current epoch, and the step).
Restored into a model built the same way, training continues exactly as an
uninterrupted run would have, bit for bit on the same thread count (a
different thread count changes the order of float sums, so the weights then
differ by rounding only). Python's ``random`` and NumPy's generators are not
saved: nothing in the training loop draws from them.

One file, ``state.pt``, written under a temporary name and renamed, so a
kill during the write leaves the previous checkpoint intact. It is read with
``torch.load(weights_only=True)``: tensors, numbers and strings only, no code.
For MPNet-base it is about 1.3 GB (weights plus two Adam moments).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

FILE = "state.pt"
FORMAT = 1
RUN_ONLY = ("threads",)
"""Recipe fields a resume may change: they change speed, and at most the rounding of float sums."""


@dataclass
class Position:
    """Where training stands after ``step`` optimizer steps."""

    step: int = 0
    order_state: torch.Tensor | None = None  # order generator state at the start of the epoch of the next step
    loss_sum: float = 0.0  # training loss summed over the current epoch's steps so far
    last_epoch_loss: float = float("nan")  # mean training loss of the last finished epoch
    dev: list[list[float]] = field(default_factory=list)  # [step, dev accuracy] of evaluations so far


def path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / FILE


def save(checkpoint_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler, position: Position, recipe: dict) -> Path:
    """Write the checkpoint atomically; returns its path."""
    out = path(checkpoint_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT, "recipe": recipe, "position": asdict(position),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = out.with_name(f".{FILE}.{os.getpid()}.partial")
    torch.save(state, tmp)
    os.replace(tmp, out)
    return out


def load(checkpoint_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler, recipe: dict) -> Position:
    """Restore a checkpoint into freshly built ``model``, ``optimizer`` and ``scheduler``; returns the position.

    Refuses (``ValueError``) a checkpoint whose recipe differs from ``recipe``
    in anything but :data:`RUN_ONLY`, naming the fields: resuming under another
    recipe would silently train a model neither recipe describes.
    """
    src = path(checkpoint_dir)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint to resume: {src} does not exist")
    state = torch.load(src, weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{src}: checkpoint format {state.get('format')} != {FORMAT}")
    diff = sorted(k for k in set(recipe) | set(state["recipe"])
                  if k not in RUN_ONLY and recipe.get(k) != state["recipe"].get(k))
    if diff:
        changes = ", ".join(f"{k}: {state['recipe'].get(k)!r} -> {recipe.get(k)!r}" for k in diff)
        raise ValueError(f"{src} was written by another recipe ({changes}); resume with the same flags")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return Position(**state["position"])
