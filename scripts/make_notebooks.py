"""Write the notebooks from their cell sources (outputs stay stripped in git).

Keeping the cell text here, not hand-edited JSON, keeps diffs readable;
`python scripts/make_notebooks.py` regenerates `notebooks/*.ipynb`.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01_approximation.ipynb"] = [
    ("md", """# 1. Polynomial approximations of |x|, ReLU and sign

Under CKKS the only non-linear operations are multiplications, so the
inhibitor's |x| and ReLU become polynomials on an interval [-B, B]. This
notebook shows, for the fits in `he_inhibitor.approx`, how the error falls
with degree and with multiplicative depth, and how the shipped student's
intervals B were calibrated on training data.

Set `HE_INHIBITOR_SMALL=1` for a quick run (the test suite does)."""),
    ("code", """import os
import numpy as np
import matplotlib.pyplot as plt
from he_inhibitor.approx import fit

SMALL = os.environ.get("HE_INHIBITOR_SMALL") == "1"
degrees = [4, 8, 16] if SMALL else [4, 6, 8, 10, 14, 16, 22, 32, 48, 64]"""),
    ("md", """## Error against degree

Remez minimax uses parity (|x| even, ReLU = (x + |x|)/2); Chebyshev
interpolation is the baseline. For |x| on [-1, 1] the minimax error at degree
2n approaches Bernstein's constant 0.2802/(2n) (dashed)."""),
    ("code", """rows = []
for fn in ["abs", "relu"]:
    for method in ["chebyshev", "remez"]:
        for d in degrees:
            f = fit(fn, d, (-1.0, 1.0), method)
            rows.append((fn, method, d, f.depth, f.mults, f.max_error))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, fn in zip(axes, ["abs", "relu"]):
    for method in ["chebyshev", "remez"]:
        pts = [(d, e) for f_, m, d, _, _, e in rows if f_ == fn and m == method]
        ax.loglog(*zip(*pts), "o-", label=method)
    ax.loglog(degrees, [0.2802 / d for d in degrees], "k--", label="0.28 / degree")
    ax.set(title=f"{fn} on [-1, 1]", xlabel="degree", ylabel="max |error|")
    ax.legend()
plt.tight_layout()
print("fn    method     degree depth mults max_error")
for r in rows:
    print(f"{r[0]:5} {r[1]:10} {r[2]:6} {r[3]:5} {r[4]:5} {r[5]:.5f}")"""),
    ("md", """## Error against depth

Depth is what costs levels of the modulus chain. A single minimax polynomial
of degree 2^k - 1 or 2^k - 2 uses k levels; composite polynomials (a chain of
low-degree odd stages for sign, |x| = x sign(x)) reach small errors at a
depth that grows with log(1/error) rather than with the degree."""),
    ("code", """fig, ax = plt.subplots(figsize=(6, 4))
by_depth = {}
for d in degrees:
    f = fit("abs", d, (-1.0, 1.0), "remez")
    by_depth[f.depth] = min(by_depth.get(f.depth, 1.0), f.max_error)
ax.semilogy(list(by_depth), list(by_depth.values()), "o-", label="|x| remez (best per depth)")
comp = {}
for d in ([10, 28] if SMALL else [10, 28, 82, 244]):
    f = fit("abs", d, (-1.0, 1.0), "composite")
    comp[f.depth] = f.max_error
ax.semilogy(list(comp), list(comp.values()), "s-", label="|x| composite")
ax.set(xlabel="multiplicative depth (levels)", ylabel="max |error|", title="|x| on [-1, 1]")
ax.legend();"""),
    ("md", """## Sign: a dead zone around 0

No polynomial approximates a jump uniformly, so a sign fit's error is measured
outside |x| < gap (default 0.05)."""),
    ("code", """x = np.linspace(-1, 1, 4001)
fig, ax = plt.subplots(figsize=(7, 3.5))
for d, method in [(15, "remez"), (27, "composite")]:
    f = fit("sign", d, (-1.0, 1.0), method)
    ax.plot(x, f(x), label=f"{method} degree {d}, depth {f.depth}, error {f.max_error:.3f}")
ax.plot(x, np.sign(x), "k:", lw=1)
ax.set(title="sign(x) approximations", xlabel="x")
ax.legend(fontsize=8);"""),
    ("md", """## Interval calibration of the shipped student

Each non-linearity's bound B was set to 1.1 x the largest input seen on
training batches (exact form), then the poly phase trained with a range
penalty that keeps inputs inside [-0.95 B, 0.95 B]. `max_ratio` is the largest
|input| / B seen since loading; the cell below runs SST-2 dev sentences through
the student to show how close real inputs come to the edge."""),
    ("code", """import torch
from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.evaluate import SHIPPED_STUDENT
from he_inhibitor.model.student import load_student
from he_inhibitor.vocab import encode, load_tokenizer

student = load_student(SHIPPED_STUDENT).set_form("poly")
tok = load_tokenizer(SHIPPED_STUDENT)
sentences, labels = load_sst2(default_data_dir(), "dev")
sentences = sentences[: 64 if SMALL else len(sentences)]
for _, m in student.nonlinearities():
    m.max_ratio.zero_()
with torch.no_grad():
    for b in range(0, len(sentences), 128):
        ids, mask = encode(tok, sentences[b : b + 128], student.cfg.max_len)
        student(torch.from_numpy(ids), torch.from_numpy(mask))
print(f"{'non-linearity':32} {'B':>8} {'max |x|/B on dev':>18}")
for name, m in student.nonlinearities():
    print(f"{name:32} {float(m.bound):8.3f} {float(m.max_ratio):18.3f}")"""),
]


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, out / name)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
