"""An exponential moving average of the weights (Polyak averaging), kept beside a training phase.

SGD at a useful learning rate ends each step a random distance from the
minimum it circles; averaging the recent iterates lands nearer its centre,
which tends to generalise better and varies less from seed to seed
(Polyak & Juditsky 1992; Izmailov et al. 2018, arXiv 1803.05407). The
average is a set of shadow tensors, one per trainable parameter, moved
each step by ``shadow += (1 - d) * (param - shadow)``; the decay ramps in as
``min(decay, (1 + t) / (10 + t))`` so that the random initial weights leave
the average within a few dozen steps. At the end of a phase the shadows
replace the weights: one student, nothing ensembled.

Only parameters are averaged. The norms' running statistics stay as
training tracked them over its last few dozen steps (``FrozenNorm``,
momentum 0.05), where the learning rate has decayed to almost nothing and
the weights barely move. They were tracked on what training feeds the
norms: the batch's rows and its augmented copies, three in four of those
joined to a partner to sentence length. Re-measuring them for the averaged
weights on plain training rows (short phrases) cost dev accuracy
(docs/log.md, "the weights' average").
"""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """Shadow copies of ``params`` moved towards them at every ``update``; ``decay`` in (0, 1)."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"an average's decay is in (0, 1), not {decay}")
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    def update(self, step: int) -> None:
        """Move the shadows after optimiser step ``step`` (0-based), with the ramped decay."""
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)

    def state_dict(self) -> list[torch.Tensor]:
        """The shadows, for a phase's checkpoint."""
        return self.shadow

    def load_state_dict(self, shadow: list[torch.Tensor]) -> None:
        """Shadows saved by ``state_dict``; their shapes must be the parameters'."""
        shapes = [tuple(t.shape) for t in shadow]
        if shapes != [tuple(p.shape) for p in self.params]:
            raise ValueError("the checkpoint's weight average does not match this model's parameters")
        self.shadow = [t.clone() for t in shadow]

    def copy_to_params(self) -> None:
        """Replace the weights by their average (the end of a phase)."""
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
