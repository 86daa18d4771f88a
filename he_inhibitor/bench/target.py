"""What a benchmark runs: one compiled plan per token bucket plus the client's embedder.

Either a circuit bundle (a directory written by `he-inhibitor
compile`; the embedder then comes from a client bundle) or a saved student
directory, compiled here in poly form: that is how the dot-product student,
which has no bundle, is benched with the same compiler and parameter choice.
A sentence runs in the smallest bucket that holds it, as the client routes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from he_inhibitor.ckks import CkksParams
from he_inhibitor.circuit.arrange import ShiftPlan
from he_inhibitor.circuit.bundle import BUCKETS, Bucket, buckets_of, load_bucket, plan_bucket
from he_inhibitor.circuit.params import Plan, Precision
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.embed import Embedder
from he_inhibitor.paths import CLIENT_DIR, SHIPPED_CLIENT


@dataclass(frozen=True)
class Target:
    """A bundle's (or a compiled student's) buckets; each sentence's circuit follows its length.

    `circuits` holds the plans compiled so far: a circuit is (re)compiled when
    a sentence first needs it, from the bundle or the student's weights.
    A circuit bundled for other lanes than `lanes` is recompiled for them
    (bundle.Bucket.lanes; from the bundle's weights).
    """

    name: str
    buckets_by_T: dict[int, Bucket]
    embedder: Embedder
    circuits: dict[tuple[int, ShiftPlan | None], Plan] = field(default_factory=dict)
    lanes: int = 1

    @property
    def buckets(self) -> list[int]:
        return sorted(self.buckets_by_T)

    @property
    def params(self) -> CkksParams:
        """The smallest bucket's parameters (every shipped bucket shares them)."""
        return self.buckets_by_T[self.buckets[0]].params

    def bucket(self, n_tokens: int) -> int | None:
        """The smallest bucket holding ``n_tokens``; None beyond the largest (the sentence is truncated)."""
        return next((T for T in self.buckets if n_tokens <= T), None)

    def shift_plan(self, T: int, n_tokens: int) -> ShiftPlan | None:
        return self.buckets_by_T[T].plans[n_tokens]

    def plan_for(self, T: int, n_tokens: int) -> Plan:
        """The circuit a sentence of n_tokens runs in bucket T (compiled once, kept)."""
        key = (T, self.shift_plan(T, n_tokens))
        if key not in self.circuits:
            bucket = self.buckets_by_T[T]
            if bucket.lanes != self.lanes and (bucket.source is not None or bucket.weights is not None):
                bucket = replace(bucket, lanes=self.lanes)  # recompiled for them (one lane: no duplicated work)
            plan = bucket.plan_for(n_tokens)
            self.circuits[key] = plan
        return self.circuits[key]

    def release(self, T: int, shifts: ShiftPlan | None) -> None:
        """Forget a compiled circuit (~100 MB of diagonals) once its sentences are done."""
        self.circuits.pop((T, shifts), None)


def load_target(path: str | Path, client: str | Path | None = None, buckets: Sequence[int] | None = None,
                n: int = 16384, precision: Precision = Precision(), lanes: int = 1) -> Target:
    """A bundle directory (has circuit-t<T>.json) or a student directory (has config.json).

    client: the client bundle for a circuit bundle (default: the bundle's own `client/`, which
    `he-inhibitor compile` writes beside the circuits, else the shipped one);
    buckets: which token buckets (default: a bundle's own, or BUCKETS up to the student's max_len);
    n, precision: how a student directory is compiled (a bundle fixes its own).
    """
    if lanes < 1:
        raise ValueError("--lanes must be at least 1")
    d = Path(path)
    if any(d.glob("circuit-t*.json")):
        have = buckets_of(d)
        missing = sorted(set(buckets or ()) - set(have))
        if missing:
            raise ValueError(f"{d} has buckets {have}, not {missing}")
        own = d / CLIENT_DIR
        embedder = Embedder.load(client if client is not None else own if own.is_dir() else SHIPPED_CLIENT)
        return Target(d.name, {T: load_bucket(d, T) for T in (buckets or have)}, embedder, lanes=lanes)
    if (d / "config.json").is_file():
        import torch

        from he_inhibitor.model.student import load_student  # lazy: torch, which a student directory needs

        model = load_student(d, dtype=torch.float64).set_form("poly")
        Ts = sorted(buckets or [T for T in BUCKETS if T <= model.cfg.max_len])
        if not Ts or Ts[-1] > model.cfg.max_len:
            raise ValueError(f"buckets {Ts} do not fit the student's max_len {model.cfg.max_len}")
        sw = from_torch(model)
        by_T = {T: plan_bucket(sw, T, range(lo + 1, T + 1), n, precision)[0] for lo, T in zip([0] + Ts, Ts)}
        return Target(d.name, by_T, Embedder.load(d), lanes=lanes)
    raise FileNotFoundError(f"{d}: neither a circuit bundle (circuit-t<T>.json) nor a student directory (config.json)")
