"""scripts/noise_by_refresh.py on the shipped bundle: SEAL's error against the simulator's bound at every
round trip and, between two of them, at every node, for a real sentence under real keys."""

import importlib.util
import math
from pathlib import Path

import pytest

from he_inhibitor.circuit.bundle import SHIPPED_BUNDLE, load_bundle
from he_inhibitor.circuit.client_bundle import ClientBundle
from he_inhibitor.circuit.ir import refresh_groups, refresh_round_trips

ROOT = Path(__file__).resolve().parents[1]
TEXT = "a gorgeous , witty , seductive movie ."


def _script():
    spec = importlib.util.spec_from_file_location("noise_by_refresh", ROOT / "scripts" / "noise_by_refresh.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_round_trip_and_the_nodes_between_two_are_checked():
    """One row per round trip of the sentence's circuit; node rows exactly from the first round trip's nodes
    to the second's; the logits inside their bound, as the bench requires of the shipped student."""
    script = _script()
    r = script.points(SHIPPED_BUNDLE, TEXT, seed=0, between=(1, 2), draws=32)
    prep = ClientBundle.load(SHIPPED_BUNDLE).prepare(TEXT)
    circuit = load_bundle(SHIPPED_BUNDLE, prep.T, prep.n_tokens).compiled.circuit
    assert [row["round_trip"] for row in r["round_trips"]] == list(range(1, refresh_round_trips(circuit) + 1))
    starts = sorted(min(nodes) for nodes in refresh_groups(circuit).values())
    assert r["nodes"] and all(starts[0] <= row["node"] <= starts[1] for row in r["nodes"])
    for row in r["round_trips"] + r["nodes"]:
        assert 0 <= row["max_error"] and 0 < row["max_bound"] and math.isfinite(row["max_error_over_slot_bound"])
    assert 0 < r["logit_error"] < r["logit_bound"]
    assert sum(g["nodes"] for g in script.by_op(r["nodes"])) == len(r["nodes"])


def test_round_trips_out_of_range_are_refused():
    with pytest.raises(ValueError, match="--between takes two round trips from 1 to"):
        _script().points(SHIPPED_BUNDLE, TEXT, seed=0, between=(2, 99))
