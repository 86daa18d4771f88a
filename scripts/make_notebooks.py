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
|input| / B seen since loading; the cell below runs SST-2 dev sentences (or,
without a local copy of SST-2, a few sentences of its own) through the student
to show how close real inputs come to the edge."""),
    ("code", """import torch
from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.paths import SHIPPED_STUDENT
from he_inhibitor.model.student import load_student
from he_inhibitor.vocab import encode, load_tokenizer

student = load_student(SHIPPED_STUDENT).set_form("poly")
tok = load_tokenizer(SHIPPED_STUDENT)
if default_data_dir() is not None:
    sentences, labels = load_sst2(default_data_dir(), "dev")
    sentences = sentences[: 64 if SMALL else len(sentences)]
else:  # no local SST-2 copy: a few sentences of our own show the same report
    sentences = ["a charming and often affecting journey .", "unflinchingly bleak and desperate",
                 "it 's slow -- very , very slow .", "a gorgeous , witty , seductive movie ."]
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


NOTEBOOKS["02_distillation.ipynb"] = [
    ("md", """# 2. Distilling the teacher into the inhibitor student

The teacher is all-MiniLM-L6-v2 fine-tuned on SST-2. The student (inhibitor
attention, frozen norms) is distilled with exact |x| and ReLU first; then the
intervals are calibrated, the norms frozen, and the polynomials fitted where
their inputs are, optionally followed by a phase that trains with the
circuit's own polynomials. This notebook shows the results table (every row
names the command that produced it) and the loss curves of an earlier
student. Why each run was made and what was decided: `docs/log.md`.

Numbers come from `docs/distillation/`, written by
`scripts/results_table.py` from the run directories."""),
    ("code", """import json
from pathlib import Path
import matplotlib.pyplot as plt

DOCS = Path("..") / "docs" / "distillation"
rows = json.loads((DOCS / "results.json").read_text())
cols = ["run", "attention", "losses", "layer_map", "embedding_init", "augment", "poly_degree", "train_rows", "epochs", "dev_exact", "dev_poly"]
print(" | ".join(cols))
for r in rows:
    print(" | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
print()
for r in rows:
    print(f"{r['run']}: {r['command']}")"""),
    ("md", """## Loss curves of an earlier student

The last student whose training logs are committed was trained in two
commands: an exact phase then a poly phase (`main_log.jsonl`), then a poly
fine-tune on teacher-labelled joined phrases (`ft_concat_log.jsonl`). The
shipped student's recipe has no poly phase (docs/log.md). Each point is one
logged training batch (every 50 steps); dotted lines mark the phase
switches."""),
    ("code", """def read(name, rename=None):
    rows = [json.loads(l) for l in (DOCS / name).read_text().splitlines() if l.strip()]
    return [{**r, "phase": rename or r["phase"]} for r in rows]

log = read("main_log.jsonl") + read("ft_concat_log.jsonl", rename="joined fine-tune")
x, offset, switches, last = [], 0, [], None
for r in (r for r in log if "loss" in r):
    if r["phase"] != last and last is not None:
        offset = x[-1]
        switches.append(offset)
    last = r["phase"]
    x.append(offset + r["step"])
steps = [r for r in log if "loss" in r]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for key in ["loss", "kd", "ce", "hidden", "range", "aug"]:
    ys = [r.get(key) for r in steps]
    if any(y is not None for y in ys):
        axes[0].plot(x, [y if y is not None else float("nan") for y in ys], label=key, lw=1)
for sw in switches:
    axes[0].axvline(sw, color="k", ls=":")
axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
axes[0].legend()
evals = [r for r in log if "dev_accuracy" in r]
axes[1].plot(range(1, len(evals) + 1), [r["dev_accuracy"] for r in evals], "o-")
axes[1].set_xticks(range(1, len(evals) + 1), [r["phase"] for r in evals], rotation=30)
axes[1].set(ylabel="SST-2 dev accuracy", title="dev accuracy after each phase")
plt.tight_layout()"""),
]


NOTEBOOKS["03_encrypted_demo.ipynb"] = [
    ("md", """# 3. The encrypted demo: client, server, depth and latency

A real HTTP server (FastAPI + uvicorn on 127.0.0.1) holds the compiled circuit
and no secret key. The client tokenizes and embeds a sentence in the clear,
encrypts it, registers its public context (relinearization and the few Galois
keys the circuit uses) and asks for an evaluation; where the circuit is deeper
than the modulus chain, the server sends masked ciphertexts back for a
client-aided refresh. The client decrypts two logits.

With `HE_INHIBITOR_SMALL=1` (the test suite) a random toy student compiled at
N = 8192 stands in for the shipped circuit, so the notebook runs in seconds."""),
    ("code", """import os, tempfile
from pathlib import Path
import matplotlib.pyplot as plt
import numpy as np

from he_inhibitor.bench.target import load_target
from he_inhibitor.model.toy import toy_student
from he_inhibitor.service.artifacts import SHIPPED_CIRCUIT
from he_inhibitor.service.client import Client
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.server import create_app

SMALL = os.environ.get("HE_INHIBITOR_SMALL") == "1"
if SMALL:
    target = load_target(toy_student(Path(tempfile.mkdtemp()) / "toy"), buckets=[8], n=8192)
    sentences = ["a very good film", "not fun", "a dull plot"]
else:
    target = load_target(SHIPPED_CIRCUIT, buckets=[32])
    sentences = ["a charming and often affecting journey", "unflinchingly bleak and desperate"]
T = target.buckets[0]
bucket = target.buckets_by_T[T]
params = bucket.params
print(f"N = {params.poly_modulus_degree}, chain = {params.coeff_bits}, T = {T}, key steps {bucket.rotation_steps}")
for n in sorted(bucket.plans)[::4]:  # the attention's plan follows the sentence's length
    plan = bucket.plan_for(n)
    print(f"{n:2d} tokens: {plan.compiled.plan}, depth {plan.depth}, {plan.round_trips} round trips")"""),
    ("md", """## Client and server over HTTP"""),
    ("code", """with LocalServer(create_app(target.buckets_by_T, params)) as server, Client(server.url) as client:
    client.generate_keys()
    client.register_keys()
    for s in sentences:
        p = client.classify(s, target.embedder)
        print(s, "->", p.to_json())"""),
    ("md", """## Depth and latency per stage, predicted against measured

`bench_target` counts every primitive through the simulator, prices it with
per-primitive costs measured now on this machine (the floor), and runs the
encrypted circuit to measure each stage."""),
    ("code", """from he_inhibitor.bench.corpus import embed_corpus
from he_inhibitor.bench.measure import bench_target
from he_inhibitor.circuit.costs import measure

costs = measure(params.poly_modulus_degree, params.depth, params.scale_bits, 1)
corpus = embed_corpus(target, sentences, [1] * len(sentences))
r = bench_target(target, corpus, costs, k=1)
stages = list(r["stages"])
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
x = np.arange(len(stages))
axes[0].bar(x - 0.2, [r["stages"][s]["predicted_seconds"] for s in stages], 0.4, label="predicted (floor)")
axes[0].bar(x + 0.2, [r["stages"][s]["measured_seconds"] for s in stages], 0.4, label="measured")
axes[0].set_xticks(x, stages, rotation=30)
axes[0].set(ylabel="seconds", title="latency per stage")
axes[0].legend()
axes[1].bar(x, [r["stages"][s]["levels"] for s in stages])
axes[1].set_xticks(x, stages, rotation=30)
axes[1].set(ylabel="levels", title=f"depth per stage (total {r['depth']})")
plt.tight_layout()
print({k: r[k] for k in ["depth", "floor_seconds", "median_seconds", "eval_key_bytes", "query_bytes", "agreement"]})"""),
]


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src, id=f"c{i:02d}") if kind == "md" else new_code_cell(src, id=f"c{i:02d}")
                                 for i, (kind, src) in enumerate(cells)])  # fixed ids: regenerating changes nothing
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, out / name)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
