"""`he-inhibitor compile`: a saved student -> a circuit bundle under circuits/NAME.

(Registered in he_inhibitor/cli.py as "compile": "he_inhibitor.circuit.cli".)
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a student into a CKKS circuit bundle")
    p.add_argument("--model", required=True, help="student directory (config.json + model.safetensors)")
    p.add_argument("--out", required=True, help="bundle directory, e.g. circuits/student-t32")
    p.add_argument("--T", type=int, default=32, help="token bucket (power of two)")
    p.add_argument("--n", type=int, default=16384, help="CKKS ring degree")
    p.add_argument("--scale-bits", type=int, default=30)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from he_inhibitor.circuit.bundle import report, save_bundle
    from he_inhibitor.circuit.params import Precision
    from he_inhibitor.circuit.weights import from_torch
    from he_inhibitor.model.student import load_student

    model = load_student(args.model, dtype=torch.float64)
    prec = Precision(scale_bits=args.scale_bits)
    plan = save_bundle(from_torch(model), args.T, args.out, args.n, prec)
    rep = report(plan)
    print(json.dumps({k: v for k, v in rep.items() if k != "stages"}))
    for stage, counts in rep["stages"].items():
        print(f"{stage:12s} levels {counts['levels']:3d}  rotations {counts.get('rotate', 0):4d}  "
              f"relins {counts.get('relinearize', 0):4d}  mul_plain {counts.get('mul_plain', 0):4d}")
    return 0
