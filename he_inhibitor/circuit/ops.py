"""The slot-level operation set every layout algorithm is written against.

Linear layers, attention and pooling are written once, against `Ops`, and run
on several backends: `SlotOps` executes them on numpy slot vectors (the layout
model of docs/design.md §3), while the IR builder records the same calls as a
circuit graph. One algorithm, one source of truth for what the circuit does.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol, TypeVar

import numpy as np

from he_inhibitor.circuit.layout import rot
from he_inhibitor.circuit.poly import PolyFn

V = TypeVar("V")


class Ops(Protocol[V]):
    """Ciphertext-level primitives. Plaintexts are slot vectors or scalars."""

    def rotate(self, x: V, k: int) -> V: ...
    def add(self, x: V, y: V) -> V: ...
    def sub(self, x: V, y: V) -> V: ...
    def add_plain(self, x: V, p: np.ndarray | float) -> V: ...
    def mul_plain(self, x: V, p: np.ndarray | float) -> V: ...
    def mul(self, x: V, y: V) -> V: ...
    def rescale(self, x: V) -> V: ...
    def poly(self, x: V, fn: PolyFn, mask: np.ndarray | str | None = None) -> V:
        """fn(x), times a plaintext mask when given (folded into the polynomial where possible)."""
    def headroom(self, xs: list[V], k: int) -> list[V]:
        """xs, made ready for k more levels (refreshed together, where the backend has a chain)."""

    def align(self, x: V, like: V) -> V:
        """x at like's level, where the backend has levels: later ops on x run cheaper."""

    def set_lane(self, lane: int) -> None:
        """Later ops belong to lane `lane` (independent work; 0 = main), where the backend records lanes."""


class SlotOps:
    """`Ops` on float64 slot vectors; counts every primitive (rotations by step)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.steps: Counter[int] = Counter()

    def rotate(self, x: np.ndarray, k: int) -> np.ndarray:
        self.counts["rotate"] += 1
        self.steps[k] += 1
        return rot(x, k)

    def add(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self.counts["add"] += 1
        return x + y

    def sub(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self.counts["sub"] += 1
        return x - y

    def add_plain(self, x: np.ndarray, p: np.ndarray | float) -> np.ndarray:
        self.counts["add_plain"] += 1
        return x + p

    def mul_plain(self, x: np.ndarray, p: np.ndarray | float) -> np.ndarray:
        self.counts["mul_plain"] += 1
        return x * p

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self.counts["mul"] += 1
        return x * y

    def rescale(self, x: np.ndarray) -> np.ndarray:
        self.counts["rescale"] += 1
        return x

    def poly(self, x: np.ndarray, fn: PolyFn, mask: np.ndarray | None = None) -> np.ndarray:
        self.counts["poly"] += 1
        return fn(x) if mask is None else fn(x) * mask

    def headroom(self, xs: list[np.ndarray], k: int) -> list[np.ndarray]:
        return list(xs)

    def align(self, x: np.ndarray, like: np.ndarray) -> np.ndarray:
        return x

    def set_lane(self, lane: int) -> None:
        pass
