"""An exponential moving average of the weights (Polyak averaging), kept beside a training phase.

SGD at a useful learning rate ends each step a random distance from the
minimum it circles; averaging the recent iterates lands nearer its centre,
which tends to generalise better and varies less from seed to seed
(Polyak & Juditsky 1992; Izmailov et al. 2018, arXiv 1803.05407). The
average is a set of shadow tensors, one per trainable parameter, moved
each step by ``shadow += (1 - d) * (param - shadow)``; the decay ramps in as
``min(decay, (1 + t) / (10 + t))`` so that the random initial weights leave
the average within a few dozen steps. At the end of a phase the shadows
replace the weights, and the frozen norms' running statistics, which
tracked the raw weights, are measured again for the averaged ones
(``refresh_norm_statistics``): one student, nothing ensembled.
"""

from __future__ import annotations

import torch
from torch import nn

from he_inhibitor.model.student import Student
from he_inhibitor.train.batches import Batches


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


@torch.no_grad()
def refresh_norm_statistics(student: Student, batches: Batches, n_batches: int) -> None:
    """Run ``n_batches`` fixed training batches forward in training mode, so that every norm not yet
    frozen re-estimates its running mean and variance under the current weights.

    The statistics are running averages of momentum 0.05 (``FrozenNorm``), so after 100 batches
    less than 1% of those measured under the previous weights remains. Training mode, dropout
    included, is how they were measured during training.
    """
    student.train()
    for rows in batches.order(epoch=20_000)[:n_batches]:
        b = batches.collate(rows)
        student(b["ids"], b["mask"])
    student.eval()
