"""`he-inhibitor compile`: a saved student -> a circuit bundle directory (default: the shipped one).

(Registered in he_inhibitor/cli.py as "compile": "he_inhibitor.circuit.cli".)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from he_inhibitor.circuit.bundle import BUCKETS, ClientAssets, save_bundle
from he_inhibitor.circuit.costs import measure, shipped_path
from he_inhibitor.circuit.params import Precision
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.paths import SHIPPED_BUNDLE, SHIPPED_STUDENT
from he_inhibitor.vocab import TOKENIZER_FILE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a student into a CKKS circuit bundle")
    p.add_argument("--model", type=Path, default=SHIPPED_STUDENT,
                   help="student directory: config.json, model.safetensors, tokenizer.json "
                        f"(default {SHIPPED_STUDENT})")
    p.add_argument("--out", type=Path, default=SHIPPED_BUNDLE,
                   help=f"bundle directory (default {SHIPPED_BUNDLE}, the one predict, serve and demo load)")
    p.add_argument("--buckets", type=int, nargs="+", default=list(BUCKETS), help="token buckets T (powers of two)")
    p.add_argument("--n", type=int, default=16384, help="CKKS ring degree")
    p.add_argument("--scale-bits", type=int, default=30)
    p.add_argument("--levels", type=int, default=None,
                   help="the chain's levels (default: the one the cost table prices cheapest per sentence, "
                        "counting refresh round trips; design §6)")
    p.add_argument("--labels", nargs="+", default=["negative", "positive"])
    p.add_argument("--one-region", action="store_true",
                   help="a sentence of n tokens runs n shifts in one query region (no packing of the blocks' "
                        "free slots): a comparison target for bench --compare")
    p.add_argument("--measure-costs", action="store_true",
                   help="first time every SEAL primitive on this machine at every level and write the cost table "
                        "the chain and plan choices price with (circuit/data/costs_n<N>.json; about a minute)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from he_inhibitor.model.student import load_student  # lazy: torch, which compile alone needs

    if args.measure_costs:
        path = shipped_path(args.n)
        path.write_text(measure(args.n).to_json() + "\n")
        print(f"cost table: {path}")
    model = load_student(args.model, dtype=torch.float64)
    if max(args.buckets) > model.cfg.max_len:
        raise SystemExit(f"bucket {max(args.buckets)} exceeds the student's max_len {model.cfg.max_len}")
    assets = ClientAssets((args.model / TOKENIZER_FILE).read_text(), model.word.weight.detach().numpy(),
                          model.pos.weight.detach().numpy(), tuple(args.labels))
    precision = Precision(scale_bits=args.scale_bits, levels=args.levels)
    save_bundle(from_torch(model), args.buckets, args.out, args.n, precision, assets, args.one_region)
    rep = json.loads((args.out / "report.json").read_text())
    for T, r in rep["buckets"].items():
        print(json.dumps({"T": int(T), **{k: v for k, v in r.items() if k not in ("plans", "T")}}))
        for key, plan in r["plans"].items():
            toks = plan["tokens"]
            print(f"  plan {key:8s} tokens {toks[0]}-{toks[-1]}  depth {plan['depth']}  "
                  f"round trips {plan['round_trips']}  predicted {plan['predicted_seconds']:.1f} s")
            for stage, counts in plan["stages"].items():
                print(f"    {stage:12s} levels {counts['levels']:3d}  rotations {counts.get('rotate', 0):4d}  "
                      f"relins {counts.get('relinearize', 0):4d}  mul_plain {counts.get('mul_plain', 0):4d}")
    return 0
