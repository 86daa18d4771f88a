"""`he-inhibitor approx`: fit a non-linearity and report degree, depth, mults, error."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .basis import cheb_to_monomial
from .fit import FNS, METHODS, Fit, FitError, fit


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("approx", help="fit |x|, ReLU or sign by a polynomial and report its cost",
                              description=__doc__)
    p.add_argument("--fn", required=True, choices=FNS)
    p.add_argument("--degree", required=True, type=int, help="total degree of the polynomial")
    p.add_argument("--interval", required=True, nargs=2, type=float, metavar=("LO", "HI"))
    p.add_argument("--method", default="remez", choices=METHODS)
    p.add_argument("--gap", type=float, default=None,
                   help="dead zone |x| < GAP*B excluded for sign (and used by composite chains)")
    p.add_argument("--basis", default="chebyshev", choices=("chebyshev", "monomial"),
                   help="basis of the coefficients printed by --json")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="draw the error curve")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        f = fit(args.fn, args.degree, tuple(args.interval), args.method, args.gap)
    except FitError as exc:
        print(f"he-inhibitor approx: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_report(f, args.basis)))
    else:
        p = f.plan()
        print(f"fn={f.fn} method={f.method} interval=[{f.interval[0]:g}, {f.interval[1]:g}]"
              + (f" gap={f.gap:g}" if f.gap else ""))
        print(f"degree={f.degree} depth={f.depth} mults={f.mults} const_mults={p.counts['const_mults']} "
              f"adds={p.counts['adds']} max_error={f.max_error:.6g}")
    if args.plot:
        _plot(f, args.plot)
    return 0


def _report(f: Fit, basis: str) -> dict:
    coeffs = list(f.coeffs) if basis == "chebyshev" else [float(c) for c in cheb_to_monomial(f.coeffs, f.interval)]
    return {"fn": f.fn, "method": f.method, "interval": list(f.interval), "degree": f.degree, "depth": f.depth,
            "mults": f.mults, "max_error": f.max_error, "basis": basis, "coeffs": coeffs}


def _plot(f: Fit, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.linspace(f.interval[0], f.interval[1], 20001)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(x, f.error(x), lw=0.8)
    ax.axhline(f.max_error, color="k", ls="--", lw=0.6)
    ax.set_xlabel("x")
    ax.set_ylabel(f"|p(x) - {f.fn}(x)|")
    ax.set_title(f"{f.fn}, {f.method}, degree {f.degree}, depth {f.depth}: max error {f.max_error:.3g} (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
