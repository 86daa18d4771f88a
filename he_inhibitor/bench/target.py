"""What a benchmark runs: one compiled plan per token bucket plus the client's embedder.

Either a circuit bundle (a directory written by `he-inhibitor
compile`; the embedder then comes from a client bundle) or a saved student
directory, compiled here in poly form: that is how the dot-product student,
which has no bundle, is benched with the same compiler and parameter choice.
A sentence runs in the smallest bucket that holds it, as the client routes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from he_inhibitor.circuit.bundle import BUCKETS
from he_inhibitor.circuit.params import Plan, Precision, plan_student
from he_inhibitor.service.embed import Embedder


@dataclass(frozen=True)
class Target:
    name: str
    plans: dict[int, Plan]  # by bucket T
    embedder: Embedder

    @property
    def buckets(self) -> list[int]:
        return sorted(self.plans)

    @property
    def plan(self) -> Plan:
        """The smallest bucket's plan: the one most sentences run."""
        return self.plans[self.buckets[0]]

    def bucket(self, n_tokens: int) -> int | None:
        """The smallest bucket holding ``n_tokens``; None beyond the largest (the sentence is truncated)."""
        return next((T for T in self.buckets if n_tokens <= T), None)


def load_target(path: str | Path, client: str | Path | None = None, buckets: Sequence[int] | None = None,
                n: int = 16384, precision: Precision = Precision()) -> Target:
    """A bundle directory (has circuit-t<T>.json) or a student directory (has config.json).

    client: the client bundle for a circuit bundle (default: the shipped one);
    buckets: which token buckets (default: a bundle's own, or BUCKETS up to the student's max_len);
    n, precision: how a student directory is compiled (a bundle fixes its own).
    """
    d = Path(path)
    if any(d.glob("circuit-t*.json")):
        from he_inhibitor.circuit.bundle import buckets_of, load_bundle
        from he_inhibitor.service.artifacts import SHIPPED_CLIENT

        have = buckets_of(d)
        missing = sorted(set(buckets or ()) - set(have))
        if missing:
            raise ValueError(f"{d} has buckets {have}, not {missing}")
        embedder = Embedder.load(SHIPPED_CLIENT if client is None else client)
        return Target(d.name, {T: load_bundle(d, T) for T in (buckets or have)}, embedder)
    if (d / "config.json").is_file():
        import torch

        from he_inhibitor.circuit.weights import from_torch
        from he_inhibitor.model.student import load_student

        model = load_student(d, dtype=torch.float64).set_form("poly")
        Ts = sorted(buckets or [T for T in BUCKETS if T <= model.cfg.max_len])
        if not Ts or Ts[-1] > model.cfg.max_len:
            raise ValueError(f"buckets {Ts} do not fit the student's max_len {model.cfg.max_len}")
        sw = from_torch(model)
        return Target(d.name, {T: plan_student(sw, T, n, precision) for T in Ts}, Embedder.load(d))
    raise FileNotFoundError(f"{d}: neither a circuit bundle (circuit-t<T>.json) nor a student directory (config.json)")
