"""Where the shipped artifacts live, and loading a compiled bundle for the server.

The circuit bundle (a directory written by `he-inhibitor compile`) is
the server's; its `client/` directory (tokenizer.json, model.safetensors with
only the word/position tables, signature.json) is all the client reads, so
neither side opens the torch model at run time.
"""

from __future__ import annotations

from pathlib import Path

from he_inhibitor.ckks import CkksParams
from he_inhibitor.paths import SHIPPED_BUNDLE, SHIPPED_CLIENT  # noqa: F401  (SHIPPED_CLIENT re-exported)
from he_inhibitor.circuit.compile import Compiled

SHIPPED_CIRCUIT = SHIPPED_BUNDLE


def load_circuit(path: Path | None = None) -> tuple[Compiled, CkksParams]:
    """A compiled bundle (default: the shipped one), recompiled and hash-checked by the circuit package."""
    from he_inhibitor.circuit.bundle import load_bundle

    plan = load_bundle(SHIPPED_CIRCUIT if path is None else path)
    return plan.compiled, plan.params
