"""Where the shipped artifacts live, and loading a compiled bundle for the server.

The circuit bundle (`circuits/<name>/`, written by `he-inhibitor compile`) is
the server's; the client bundle is the shipped student's directory, whose
tokenizer.json and model.safetensors (word/position tables) are all the
client reads. Both constants are defined here rather than imported because
the modules that own them import torch, which the client must not.
"""

from __future__ import annotations

from pathlib import Path

from he_inhibitor.ckks import CkksParams
from he_inhibitor.circuit.compile import Compiled

SHIPPED_CIRCUIT = Path(__file__).resolve().parents[2] / "circuits" / "student"
SHIPPED_CLIENT = Path(__file__).resolve().parents[1] / "assets" / "student"


def load_circuit(path: Path | None = None) -> tuple[Compiled, CkksParams]:
    """A compiled bundle (default: the shipped one), recompiled and hash-checked by the circuit package."""
    from he_inhibitor.circuit.bundle import load_bundle

    plan = load_bundle(SHIPPED_CIRCUIT if path is None else path)
    return plan.compiled, plan.params
