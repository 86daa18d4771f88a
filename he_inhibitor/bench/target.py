"""What a benchmark runs: a compiled plan plus the client's embedder.

Either a circuit bundle (`circuits/<name>/`, written by `he-inhibitor
compile`; the embedder then comes from a client bundle) or a saved student
directory, compiled here in poly form: that is how the dot-product student,
which has no bundle, is benched with the same compiler and parameter choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from he_inhibitor.circuit.params import Plan, Precision, plan_student
from he_inhibitor.service.embed import Embedder


@dataclass(frozen=True)
class Target:
    name: str
    plan: Plan
    embedder: Embedder


def load_target(path: str | Path, client: str | Path | None = None, T: int = 32, n: int = 16384,
                precision: Precision = Precision()) -> Target:
    """A bundle directory (has circuit-t<T>.json) or a student directory (has config.json).

    client: the client bundle for a circuit bundle (default: the shipped one);
    T, n, precision: how a student directory is compiled (a bundle fixes its own).
    """
    d = Path(path)
    if (d / f"circuit-t{T}.json").is_file():
        from he_inhibitor.circuit.bundle import load_bundle
        from he_inhibitor.service.artifacts import SHIPPED_CLIENT

        return Target(d.name, load_bundle(d, T), Embedder.load(SHIPPED_CLIENT if client is None else client))
    if (d / "config.json").is_file():
        import torch

        from he_inhibitor.circuit.weights import from_torch
        from he_inhibitor.model.student import load_student

        model = load_student(d, dtype=torch.float64).set_form("poly")
        return Target(d.name, plan_student(from_torch(model), T, n, precision), Embedder.load(d))
    raise FileNotFoundError(f"{d}: neither a circuit bundle with bucket T={T} (circuit-t{T}.json) "
                            "nor a student directory (config.json)")
