"""Where SEAL's error outgrows the simulator's noise model: one sentence at a time, checked at every refresh.

A refresh round trip is where the client decrypts anyway, so it is where the
encrypted values can be compared with the plain circuit's without changing
the circuit. Each sentence runs twice through the same traversal: simulated
(the plain circuit's float64 values with the noise model's estimate of
each slot's error, design §9) and encrypted with SEAL in one process. At every round
trip, per refreshed ciphertext, the measured |decrypted - plain| is set
against the predicted k-sigma bound slot by slot; the first round trip whose
error passes its bound says which stage the model underestimates. A
slot's bound is estimated from ``--draws`` joint draws: the default of the
simulator (32) leaves a slot's estimate within about 12% and the largest
ratio over thousands of slots inflated by that spread, so diagnoses use
more. The logits
are checked last, as the bench checks them. With ``--between R1 R2`` the same
check runs node by node from round trip R1 to R2 (the secret key decrypts
every ciphertext on the way: a diagnosis, not the protocol), summarised per
stage and op.

    python scripts/noise_by_refresh.py --circuit runs/ema2p-bundle --sentences 395 788 \\
        --json docs/bench/noise_by_refresh_ema2p.json
    python scripts/noise_by_refresh.py --sentences 788 --between 5 6
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from he_inhibitor.circuit.bundle import SHIPPED_BUNDLE, load_bundle
from he_inhibitor.circuit.client_bundle import ClientBundle
from he_inhibitor.circuit.encrypted import SealBackend
from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.circuit.interpret import RefreshPoint, answered, interpret
from he_inhibitor.circuit.ir import refresh_groups
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.data import default_data_dir, load_sst2


def _predicted(value, k: float) -> tuple[np.ndarray, np.ndarray]:
    """A simulated ciphertext's plain values and per-slot k-sigma bounds (kept instead of its draws)."""
    return value.v, value.e.bound(k)


def _miss(decrypted: list[np.ndarray], sim: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Over ciphertexts (SEAL's slots, the simulator's (values, bounds)): the largest |decrypted - plain|, the
    largest predicted bound (the one the bench checks), and the largest ratio of the two slot by slot."""
    err = [np.abs(d[: len(v)] - v) for d, (v, _) in zip(decrypted, sim)]
    bound = [b for _, b in sim]
    return {"max_error": max(float(e.max()) for e in err), "max_bound": max(float(b.max()) for b in bound),
            "max_error_over_slot_bound": max(float((e / np.maximum(b, 1e-30)).max()) for e, b in zip(err, bound))}


def points(bundle: Path, text: str, seed: int, between: tuple[int, int] | None = None, draws: int = 256) -> dict:
    """Per round trip: its stage, and over its ciphertexts the largest error, bound and error / bound;
    with ``between``, also per node from that round trip to the other."""
    prep = ClientBundle.load(bundle).prepare(text)
    plan = load_bundle(bundle, prep.T, prep.n_tokens)
    comp, params = plan.compiled, plan.params
    circuit, public = comp.circuit, comp.public_plaintexts(prep.m)
    lo, hi = -1, -1
    if between is not None:
        starts = sorted(min(nodes) for nodes in refresh_groups(circuit).values())
        if not 1 <= between[0] < between[1] <= len(starts):
            raise ValueError(f"--between takes two round trips from 1 to {len(starts)}, not {list(between)}")
        lo, hi = starts[between[0] - 1], starts[between[1] - 1]

    noise = replace(NoiseModel.of(params), draws=draws)
    sim_points: list[list] = []
    sim_nodes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def sim_node(i: int, node, value) -> None:
        if lo <= i <= hi and hasattr(value, "e"):  # ciphertexts only, not the constants
            sim_nodes[i] = _predicted(value, noise.k)

    sim = simulate(comp, noise, prep.x0, prep.m, chain=params.depth, strict=False,
                   on_refresh=lambda p: sim_points.append([_predicted(v, noise.k) for v in p.values]), on_node=sim_node)

    ex = make_executor(Mode.ENCRYPTED, comp, params, seed=seed)
    dec_points: list[list[np.ndarray]] = []
    dec_nodes: dict[int, np.ndarray] = {}
    stages: list[str] = []

    class Watched(SealBackend):
        def leave(self, i: int, node, value) -> None:
            super().leave(i, node, value)
            if i in sim_nodes:
                dec_nodes[i] = np.asarray(ex.keys.decrypt(value))

    def refresh(point: RefreshPoint):
        dec_points.append([np.asarray(ex.keys.decrypt(ct)) for ct in point.values])
        stages.append(" ".join(sorted({circuit.nodes[i].stage for i in point.nodes})))
        return ex.refresh(point, public)[0]

    inputs = {k: ex.keys.encrypt(v, params.depth) for k, v in comp.pack_input(prep.x0, prep.m).items()}
    out = answered(interpret(circuit, Watched(ex, public), inputs), refresh)
    logits = comp.read_logits(np.asarray(ex.keys.decrypt(out["logits"])))
    error = float(np.abs(logits - sim.logits).max())
    rows = [{"round_trip": k + 1, "after": stages[k], "ciphertexts": len(dec), **_miss(dec, sv)}
            for k, (dec, sv) in enumerate(zip(dec_points, sim_points))]
    nodes = [{"node": i, "stage": circuit.nodes[i].stage, "op": circuit.nodes[i].op.value,
              **_miss([dec_nodes[i]], [sim_nodes[i]])} for i in sorted(dec_nodes)]
    return {"tokens": prep.n_tokens, "T": prep.T, "round_trips": rows, "logit_error": error,
            "logit_bound": sim.noise_bound, "logit_error_over_bound": error / sim.noise_bound, "nodes": nodes}


def by_op(nodes: list[dict]) -> list[dict]:
    """Per (stage, op), in circuit order, the spread of the nodes' largest error / slot bound: whether single
    products (mul_plain) or the sums over them (add) are where the model's variance falls short."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in nodes:
        groups.setdefault((row["stage"], row["op"]), []).append(row["max_error_over_slot_bound"])
    return [{"stage": stage, "op": op, "nodes": len(v), "median": float(np.median(v)),
             "p90": float(np.quantile(v, 0.9)), "max": float(np.max(v))} for (stage, op), v in groups.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--circuit", type=Path, default=SHIPPED_BUNDLE, help="circuit bundle (default: the shipped one)")
    ap.add_argument("--sentences", type=int, nargs="+", required=True, help="SST-2 dev indices (bench's `index`)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the in-process refresh masks")
    ap.add_argument("--between", type=int, nargs=2, metavar=("R1", "R2"),
                    help="also check every node from round trip R1 to R2 (1-based)")
    ap.add_argument("--draws", type=int, default=256, help="joint draws of the noise estimate (default 256)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    if not (args.circuit / "client").is_dir():
        ap.error(f"{args.circuit} is not a circuit bundle (he-inhibitor compile --out DIR writes one)")
    data = default_data_dir()
    if data is None:
        ap.error("SST-2 not found (../shared/data/sst2 or $HE_INHIBITOR_DATA)")
    texts, _ = load_sst2(data, "dev")
    bad = [i for i in args.sentences if not 0 <= i < len(texts)]
    if bad:
        ap.error(f"dev has sentences 0 to {len(texts) - 1}, not {bad}")
    out = {"circuit": str(args.circuit), "sentences": {}}
    for i in tqdm(args.sentences, desc="sentences", unit="sentence"):
        try:
            r = points(args.circuit, texts[i], args.seed, args.between, args.draws)
        except ValueError as err:
            ap.error(str(err))
        r["nodes_by_op"] = by_op(r.pop("nodes"))
        out["sentences"][str(i)] = r
        lines = [f"sentence {i} ({r['tokens']} tokens, T = {r['T']}): logits {r['logit_error']:.2e} against a "
                 f"bound of {r['logit_bound']:.2e} ({r['logit_error_over_bound']:.2f})"]
        lines += [f"  round trip {row['round_trip']:2d} ({row['after']}): {row['ciphertexts']:2d} ciphertexts, "
                  f"largest error {row['max_error']:.2e}, largest bound {row['max_bound']:.2e}, largest error / "
                  f"its slot's bound {row['max_error_over_slot_bound']:.2f}" for row in r["round_trips"]]
        lines += [f"  {row['stage']} {row['op']}: {row['nodes']} nodes, error / slot bound median "
                  f"{row['median']:.2f}, p90 {row['p90']:.2f}, max {row['max']:.2f}" for row in r["nodes_by_op"]]
        tqdm.write("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
