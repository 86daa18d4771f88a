"""Results tables of README.md and docs/*.md, generated from the committed JSON they summarise.

    python scripts/readme_tables.py           # rewrite every marked block in place
    python scripts/readme_tables.py --check   # exit 1 (naming the blocks) if any is stale

A block is the text between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``;
NAME picks a generator below, which reads only files under ``docs/`` and the
shipped student's ``metrics.json``. No figure in a table is typed by hand, so a
new bench or distillation run changes the tables by rewriting its JSON and
rerunning this script; tests/test_readme_tables.py fails while they disagree.
"""

from __future__ import annotations

import argparse
from functools import partial
import json
import re
import sys
from pathlib import Path

import numpy as np
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from results_table import markdown as results_markdown  # noqa: E402  (a sibling script, not a package)

DOCS = ("README.md", "docs/design.md", "docs/log.md")
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)

SHIPPED_METRICS = "he_inhibitor/assets/student/metrics.json"
BENCH = "docs/bench/shipped.json"
PREVIOUS = "docs/bench/previous_circuit.json"  # the circuit the latency issue started from (0403a8d), same window
PREVIOUS_RUNS = "docs/bench/previous_circuit_runs.jsonl"  # its per-sentence run log (bench --log)
TEACHER_BY_LENGTH = "docs/distillation/by_length_teacher.json"
# the circuit before each stage ran on the chain's last levels: the same bench run from a worktree of b55e8c0
BEFORE = "docs/bench/before_levels.json"


def _load(root: Path, rel: str) -> dict | list:
    return json.loads((root / rel).read_text())


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _median_of(b: dict, previous: dict) -> float:
    """This circuit's median over the sentences the previous circuit's run encrypted (same seeded order)."""
    first = {r["index"] for r in b["runs"][:previous["encrypted_sentences"]]}
    return float(np.median([r["seconds"] for r in b["runs"] if r["index"] in first]))


def _ratio(b: dict, other: dict) -> float:
    """Median over the sentences both runs encrypted of this circuit's seconds over the other's."""
    theirs = {r["index"]: r["seconds"] for r in other["runs"]}
    return float(np.median([r["seconds"] / theirs[r["index"]] for r in b["runs"] if r["index"] in theirs]))


def headline(root: Path) -> str:
    """The README's one results table: accuracy from eval and bench, then the encrypted run's costs."""
    teacher, m, b = _load(root, TEACHER_BY_LENGTH), _load(root, SHIPPED_METRICS), _load(root, BENCH)
    p, c = _load(root, PREVIOUS), _load(root, BEFORE)
    p_runs = {"runs": [json.loads(line) for line in (root / PREVIOUS_RUNS).read_text().splitlines()]}
    enc, b32, b64 = b["encrypted_sentences"], b["buckets"]["32"], b["buckets"]["64"]
    seeds, _ = _seed_accuracies(root, SEED_GROUPS[0])
    rows = [
        ["SST-2 dev accuracy, teachers: MiniLM-L6 (hidden states) / MPNet-base (logits; fine-tuned in bfloat16 autocast)",
         f"{teacher['accuracy']:.4f} / {_load(root, TEACHER_MPNET_BF16)['accuracy']:.4f}",
         f"`{TEACHER_BY_LENGTH}`, `{TEACHER_MPNET_BF16}`"],
        ["SST-2 dev accuracy, student, exact \\|x\\| and ReLU", f"{m['dev_exact']:.4f}", f"`{SHIPPED_METRICS}`"],
        ["SST-2 dev accuracy, student as the circuit computes it (polynomials)", f"**{m['dev_poly']:.4f}**",
         f"`{SHIPPED_METRICS}`"],
        ["its recipe, mean over seeds 1 / 0 / 2 (polynomials)",
         f"{seeds.mean():.4f} ({' / '.join(f'{a:.4f}' for a in seeds)})", "`docs/distillation/results.json`"],
        [f"plain circuit, all {b['sentences']} dev sentences ({b['truncated']} truncated)", f"{b['accuracy']:.4f}",
         f"`{BENCH}`"],
        [f"encrypted: accuracy / agreement with plain ({enc} random dev sentences)",
         f"{b['encrypted_accuracy']:.2f} / {round(b['agreement'] * enc)}/{enc}", f"`{BENCH}`"],
        ["largest logit error / that sentence's predicted bound", f"{b['max_error_over_bound']:.2f}", f"`{BENCH}`"],
        ["levels SEAL consumed = predicted depth, every run", str(b["levels_as_predicted"]), f"`{BENCH}`"],
        [f"latency per sentence, median / p95 ({b['lanes']} lane(s), loopback)",
         f"{b['median_seconds']:.1f} s / {b['p95_seconds']:.1f} s", f"`{BENCH}`"],
        ["median latency, T = 32 / T = 64",
         f"{b32['median_seconds']:.1f} s / {b64['median_seconds']:.1f} s", f"`{BENCH}`"],
        [f"median / p95 with {b['rtt_ms']:.0f} ms per round trip ({b['round_trips_per_query']} round trips)",
         f"{b['median_seconds_with_rtt']:.1f} s / {b['p95_seconds_with_rtt']:.1f} s", f"`{BENCH}`"],
        ["the circuit before, Wo, W1 and \\|x\\| at the chain's top (b55e8c0), same sentences, "
         "its own run right after, median / p95",
         f"{c['median_seconds']:.1f} s / {c['p95_seconds']:.1f} s (this circuit / it per sentence: "
         f"{_ratio(b, c):.2f})", f"`{BEFORE}`"],
        [f"the circuit the latency work started from (0403a8d: all T shifts, 8 levels, {p['workers']} processes), "
         f"median on the first {p['encrypted_sentences']} of the same sentences, an earlier session's run",
         f"{p['median_seconds']:.1f} s (this circuit on those: {_median_of(b, p):.1f} s; per sentence: "
         f"{_ratio(b, p_runs):.2f})", f"`{PREVIOUS}`"],
        _served_headline(root),
        ["evaluation keys (both buckets), sent once", _mb(b["eval_key_bytes"]), f"`{BENCH}`"],
        ["query / reply / refresh traffic per sentence, T = 32",
         f"{_mb(b32['query_bytes'])} / {_mb(b32['reply_bytes'])} / {_mb(b32['refresh_bytes'])}", f"`{BENCH}`"],
    ]
    return _table(["quantity", "value", "from"], rows)


def _served_headline(root: Path) -> list[str]:
    d, configs = _served_rows(root, SERVED_NOW)
    (first, base), best = configs[0], configs[-1][1]
    return [f"over HTTP, text to label (`he-inhibitor serve {best['flags']}`), median / p95, "
            f"{d['sentences']} dev sentences",
            f"{best['median_seconds']:.1f} s / {best['p95_seconds']:.1f} s ({first}, the server before: "
            f"{base['median_seconds']:.1f} s / {base['p95_seconds']:.1f} s, same run)", f"`{SERVED_NOW}`"]


def bench_buckets(root: Path) -> str:
    b = _load(root, BENCH)
    rows = []
    for T, r in sorted(b["buckets"].items(), key=lambda kv: int(kv[0])):
        rows.append([str(r["T"]), str(r["sentences"]), str(r["encrypted_sentences"]), str(r["depth"]),
                     str(r["chain_levels"]), f"{r['refreshes']} ({r['refresh_round_trips']} round trips)",
                     " ".join(str(s) for s in r["rotation_steps"]), f"{r['floor_seconds']:.1f} s",
                     f"{r['median_seconds']:.1f} s", f"{r['measured_over_floor']:.2f}",
                     f"{r['predicted_error_bound']:.2e}", f"{r['max_poly_input_ratio']:.2f}",
                     f"{_mb(r['query_bytes'])} / {_mb(r['reply_bytes'])} / {_mb(r['refresh_bytes'])}"])
    return _table(["T", "dev sentences", "run encrypted", "depth", "chain levels", "refreshes", "rotation steps",
                   "floor, 1 process", "median", "median / floor", "predicted error bound",
                   "max poly input / B", "query / reply / refresh"], rows)


_STAGE_COLS = ("levels", "rotations", "relinearizations", "plaintext_multiplications", "rescales", "refreshes")


def bench_stages(root: Path) -> str:
    b = _load(root, BENCH)
    rows = []
    for name, s in list(b["stages"].items()) + [("total", b["totals"])]:
        rows.append([name] + [str(s[c]) for c in _STAGE_COLS]
                    + [f"{s['predicted_seconds']:.2f}", f"{s['measured_seconds']:.2f}"])
    return _table(["stage"] + [c.replace("_", " ") for c in _STAGE_COLS] + ["floor s", "measured s"], rows)


def bench_totals(root: Path) -> str:
    b = _load(root, BENCH)
    rows = [
        ["ring degree N / coefficient modulus bits", f"{b['poly_modulus_degree']} / {b['coeff_bits']} "
                                                     f"({sum(b['coeff_bits'])} bits)"],
        ["keygen (both buckets' steps)", f"{b['keygen_seconds']:.1f} s"],
        ["evaluation keys", _mb(b["eval_key_bytes"])],
        ["median / p95 latency, all encrypted runs", f"{b['median_seconds']:.1f} s / {b['p95_seconds']:.1f} s"],
        ["CPU seconds per sentence, all processes (median)", f"{b['cpu_median_seconds']:.1f} s"],
        ["max logit error / predicted bound (largest over runs)",
         f"{b['max_abs_error']:.2e} / {b['predicted_error_bound']:.2e}; ratio {b['max_error_over_bound']:.2f}"],
    ]
    return _table(["quantity", "value"], rows)


def levels_ab(root: Path) -> str:
    """The in-process bench of the circuit before Wo, W1 and |x| moved down the chain and after, same sentences."""
    before, after = _load(root, BEFORE), _load(root, BENCH)
    rows = []
    for name, path, d in [("before: Wo, W1 and \\|x\\| at the chain's top (b55e8c0)", BEFORE, before),
                          ("after: on the chain's last levels (this code)", BENCH, after)]:
        runs = d["runs"]
        rows.append([f"{name}, `{path}`", f"{d['median_seconds']:.2f} s / {d['p95_seconds']:.2f} s",
                     f"{d['buckets']['32']['median_seconds']:.2f} s / {d['buckets']['64']['median_seconds']:.2f} s",
                     f"{d['server_median_seconds']:.2f} s", f"{d['cpu_median_seconds']:.2f} s",
                     f"{d['buckets']['32']['floor_seconds']:.2f} s",
                     f"{round(d['agreement'] * len(runs))}/{len(runs)}", f"{d['max_error_over_bound']:.2f}",
                     str(d["levels_as_predicted"])])
    theirs = {r["index"]: r["seconds"] for r in before["runs"]}
    ratios = [r["seconds"] / theirs[r["index"]] for r in after["runs"] if r["index"] in theirs]
    rows.append([f"after / before, per sentence, median (p10 / p90) over {len(ratios)}",
                 f"{np.median(ratios):.2f} ({np.percentile(ratios, 10):.2f} / {np.percentile(ratios, 90):.2f})",
                 "", "", "", "", "", "", ""])
    return _table(["circuit (2 lanes, 100 dev sentences)", "median / p95", "median T = 32 / 64",
                   "server median", "CPU median (all processes)", "floor, typical T = 32 plan", "agree",
                   "largest error / bound", "levels as predicted"], rows)


# bench-served runs (real HTTP servers, its default configurations in their order), each with the in-process
# bench of the same circuit: before (the shipped bench of then, ship8) and after Wo, W1 and |x| moved down the chain
SERVED = ("docs/bench/served.json", "docs/bench/ship8.json")
SERVED_NOW = "docs/bench/served_levels.json"


def _served_rows(root: Path, path: str) -> tuple[dict, list[tuple[str, dict]]]:
    d = _load(root, path)
    return d, list(d["configs"].items())


def served(root: Path, path: str, bench_path: str) -> str:
    """Per server configuration of one bench-served run: latency through HTTP and what the server held;
    last, the in-process bench of the same circuit (`bench_path`) on the same sentences."""
    d, configs = _served_rows(root, path)
    rows = []
    for name, c in configs:
        w = c.get("weight_cache")
        rows.append([f"{name} (`{c['flags'] or 'the defaults'}`)",
                     f"{c['median_seconds']:.2f} s / {c['p95_seconds']:.2f} s",
                     f"{c['median_seconds_t32']:.2f} s / {c['median_seconds_t64']:.2f} s",
                     f"{c['median_client_seconds']:.2f} / {c['median_network_seconds']:.2f} / "
                     f"{c['median_server_seconds']:.2f} s",
                     " / ".join(f"{v:.1f} s" for v in c["warmup_seconds"].values()),
                     "none" if not w else f"{w['plaintexts']} ({w['bytes'] / 2**30:.1f} GiB)",
                     f"{c['peak_rss_bytes'] / 2**30:.1f} GiB",
                     f"{sum(r['agrees'] for r in c['runs'])}/{len(c['runs'])}"])
    bench = {r["index"]: r for r in _load(root, bench_path)["runs"]}
    same = [bench[i] for i in d["sentence_indices"] if i in bench]
    s = np.array([r["seconds"] for r in same])
    rows.append([f"for comparison: `bench`, in one process, no HTTP ({_load(root, bench_path)['lanes']} lanes; "
                 f"`{bench_path}`), the same {len(same)} sentences",
                 f"{np.median(s):.2f} s / {np.percentile(s, 95):.2f} s",
                 " / ".join(f"{np.median([r['seconds'] for r in same if r['T'] == T]):.2f} s" for T in (32, 64)),
                 "", "", "", "", ""])
    return _table([f"server ({d['sentences']} dev sentences, each to every server in turn)", "median / p95",
                   "median T = 32 / 64", "client / network / server (medians)", "warm-up (T = 32 / 64)",
                   "plaintexts kept", "server peak RSS", "agree with plain"], rows)


# the bench of both attentions rerun with each bundle's own embeddings and this code; the first run
# (docs/log.md, "the poly phase compiled") gave the inhibitor's circuit the shipped student's embeddings
INHIBITOR_VS_DOT = "docs/bench/inhibitor_vs_dot_rerun.json"
INHIBITOR_VS_DOT_FIRST = "docs/bench/inhibitor_vs_dot.json"
VS_DOT_RUNS = ("deg6h-seed1", "dot6h-seed1")  # the two students of that bench, rows of results.json


def inhibitor_vs_dot(root: Path, rel: str = INHIBITOR_VS_DOT) -> str:
    """Both attentions from one recipe and seed, compiled by one compiler, benched in one run."""
    d = _load(root, rel)
    runs = {r["run"]: r for r in _load(root, "docs/distillation/results.json")}
    sides = [{**d, "run": runs[VS_DOT_RUNS[0]]}, {**d["compare"], "run": runs[VS_DOT_RUNS[1]]}]
    t32 = [s["buckets"]["32"] for s in sides]
    fields = [("dev accuracy, torch student in poly form (`results.json`)", lambda r, b: f"{r['run']['dev_poly']:.4f}"),
              (f"plain circuit, all {d['sentences']} dev sentences", lambda r, b: f"{r['accuracy']:.4f}"),
              (f"encrypted agreement with plain ({d['encrypted_sentences']} random dev sentences)",
               lambda r, b: f"{round(r['agreement'] * r['encrypted_sentences'])}/{r['encrypted_sentences']}"),
              ("depth / chain levels / refresh round trips (T = 32)",
               lambda r, b: f"{b['depth']} / {b['chain_levels']} / {b['refresh_round_trips']}"),
              ("rotations / relinearizations / plaintext mults (T = 32, typical plan)",
               lambda r, b: " / ".join(str(r["totals"][c]) for c in
                                       ("rotations", "relinearizations", "plaintext_multiplications"))),
              ("median / p95 latency (2 lanes, loopback)",
               lambda r, b: f"{r['median_seconds']:.1f} s / {r['p95_seconds']:.1f} s"),
              ("median latency, T = 32 / T = 64",
               lambda r, b: f"{r['buckets']['32']['median_seconds']:.1f} s / {r['buckets']['64']['median_seconds']:.1f} s"),
              ("largest logit error / its bound", lambda r, b: f"{r['max_error_over_bound']:.2f}"),
              ("evaluation keys (both buckets)", lambda r, b: _mb(r["eval_key_bytes"]))]
    return _table([""] + [s["name"] for s in sides],
                  [[label] + [f(s, b) for s, b in zip(sides, t32)] for label, f in fields])


def shipped_fits(root: Path) -> str:
    """Per layer and non-linearity of the shipped bundle: the fit, its depth and cost, its worst error, its bound."""
    d = _load(root, "he_inhibitor/assets/sst2-inhibitor/student.json")
    rows = []
    for i, layer in enumerate(d["layers"]):
        for name in ("abs_fn", "attn_relu", "ffn_relu"):
            f = layer[name]["fit"]
            rows.append([f"layer {i}", name, f"{f['fn']}, {f['method']}", str(f["degree"]), str(f["depth"]),
                         str(f["mults"]), f"{f['max_error']:.4f}", f"{layer[name]['bound']:.2f}"])
    return _table(["layer", "non-linearity", "fit", "degree", "depth", "non-scalar mults", "max error / B", "bound B"],
                  rows)


def ablations(root: Path) -> str:
    return results_markdown(_load(root, "docs/distillation/results.json")) + "\n"


BY_LENGTH = [("teacher", "by_length_teacher.json"), ("session 2", "by_length_session2_student.json"),
             ("session 3", "by_length_session3_student.json"), ("weighted", "by_length_shipped.json"),
             ("h16_dir_seed1 (shipped)", "by_length_h16_dir_seed1.json")]


def by_length(root: Path) -> str:
    runs = [(label, _load(root, f"docs/distillation/{f}")) for label, f in BY_LENGTH]
    rows = []
    for i, bucket in enumerate(runs[-1][1]["by_length"]):
        rows.append([bucket["tokens"], f"{bucket['n']} / {runs[0][1]['by_length'][i]['n']}"]
                    + [f"{r['by_length'][i]['accuracy']:.3f}" for _, r in runs])
    rows.append(["all", str(runs[-1][1]["n"])] + [f"{r['accuracy']:.4f}" for _, r in runs])
    return _table(["word pieces", "sentences (student / teacher tokenizer)"] + [label for label, _ in runs], rows)


def degree_sweep(root: Path, rel: str = "docs/distillation/degree_sweep.json") -> str:
    d = _load(root, rel)
    rows = [[s["abs"], s["attn_relu"], s["ffn_relu"], f"{s['dev_poly']:.4f}"] for s in d["settings"]]
    rows.append(["exact", "exact", "exact", f"{d['dev_exact']:.4f}"])
    return _table(["abs", "attention ReLU", "FFN ReLU", f"dev accuracy ({d['run']})"], rows)


TEACHER_MPNET = "docs/distillation/teacher_mpnet.json"  # runs/teacher-mpnet/model/metrics.json (docs/teacher.md)
TEACHER_MPNET_BF16 = "docs/distillation/teacher_mpnet_bf16.json"  # the same, rebuilt with --bf16 (the recipe since)
SWEEP_MPNET = "docs/distillation/degree_sweep_mpnet6_seed{seed}.json"  # scripts/degree_sweep.py --run runs/mpnet6-seedK
# one recipe's three seeds, 1 / 0 / 2: (label, where each seed's poly-form dev accuracy is, runs, command).
# "results": the rows of results.json named runs[k]; "sweep": SWEEP_MPNET's first setting (14w fits on
# the run's exact-phase weights, no poly phase). command None: the one the first run recorded. The first
# group is the shipped recipe (the README's mean over seeds).
DISTILL = "he-inhibitor distill --teacher ../shared/models/minilm-l6-sst2 --data-dir ../shared/data/sst2"
SEED_GROUPS = [
    ("the shipped recipe (since 2026-12-06): two exact epochs ending on the weights' average, bounds from random "
     "rows and weighted fits from rows of at least 20 pieces, then half an epoch in poly form with a range penalty "
     "on each sentence's largest input", "results",
     ("ema2phr-seed1", "ema2phr-seed0", "ema2phr-seed2"),
     f"`{DISTILL} --out runs/ema2phr-seedK --set seed=K` (the defaults; run as `--config "
     "configs/ema_2ep_poly_half_rowmax.json`, the same settings, each resuming the exact phase of `runs/ema2p-seedK`)"),
    ("the same without the penalty on each sentence's largest input", "results",
     ("ema2ph-seed1", "ema2ph-seed0", "ema2ph-seed2"),
     f"`{DISTILL} --out runs/ema2ph-seedK --config configs/ema_2ep_poly_half.json --set seed=K` (each resuming the "
     "exact phase of `runs/ema2p-seedK`)"),
    ("the same without the poly phase (shipped 2026-12-06)", "results",
     ("ema2bf-fit20-seed1", "ema2bf-fit20-seed0", "ema2bf-fit20-seed2"),
     f"`{DISTILL} --out runs/ema2bf-fit20-seedK --config configs/ema_2ep.json --set calibration_fit_min_length=20 "
     "--set seed=K` (each resuming the exact phase of `runs/ema2bf-seedK`)"),
    ("MPNet logits, \\|x\\| of degree 6 and ReLUs of degree 14 (weighted), one exact epoch, no poly phase "
     "(shipped 2026-12-05 to -06)", "results", ("abs6-seed1", "abs6-seed0", "abs6-seed2"),
     f"`{DISTILL} --out runs/abs6-seedK --config configs/abs6.json --set seed=K` (each resumed the exact phase of "
     "`runs/mpnet6-seedK`, the same settings)"),
    ("that recipe with its augmented copies from a bank of two per training row labelled once by MPNet "
     "(cached, `he-inhibitor teacher-copies`), instead of live by MiniLM", "results",
     ("bank2-seed1", "bank2-seed0", "bank2-seed2"), None),
    ("that recipe ending on an average of its weights (ema 0.995)", "results",
     ("ema-seed1", "ema-seed0", "ema-seed2"), None),
    ("that recipe with two epochs in the exact phase, ending on an average of its weights (ema 0.995)",
     "results", ("ema2-seed1", "ema2-seed0", "ema2-seed2"), None),
    ("the same, from the MPNet teacher rebuilt in bfloat16", "results", ("ema2bf-seed1", "ema2bf-seed0", "ema2bf-seed2"),
     None),
    ("the same, calibrated on training rows of at least 20 word pieces", "results",
     ("ema2bf-len20-seed1", "ema2bf-len20-seed0", "ema2bf-len20-seed2"), None),
    ("the shipped recipe with a quarter epoch in poly form", "results", ("ema2p-seed1", "ema2p-seed0", "ema2p-seed2"),
     None),
    ("the same calibration after three epochs in the exact phase (ema 0.995)", "results",
     ("ema3bf-seed1", "ema3bf-seed0", "ema3bf-seed2"), None),
    ("the same with a quarter epoch in poly form", "results", ("ema3p-seed1", "ema3p-seed0", "ema3p-seed2"), None),
    ("MiniLM logits, fits of degree 14 (weighted), no poly phase (shipped before 2026-12-05)", "results",
     ("h16_dir_seed1", "h16_dir", "h16_dir_seed2"),
     f"`{DISTILL} --out runs/h16_dir_seedK --config configs/minilm14.json --set seed=K`"),
    ("MPNet logits, fits of degree 14 (weighted), no poly phase", "sweep", (1, 0, 2), None),
    ("MPNet logits, fits of degree 6 (weighted), a quarter epoch in poly form", "results",
     ("mpnet6-seed1", "mpnet6-seed0", "mpnet6-seed2"), None),
    ("MPNet logits, fits of degree 6 (weighted), half an epoch in poly form", "results",
     ("deg6h-seed1", "deg6h-seed0", "deg6h-seed2"), None),
]


def _seed_accuracies(root: Path, group: tuple) -> tuple[np.ndarray, str]:
    """(dev poly accuracy of each seed, the command or file behind them) of one SEED_GROUPS entry."""
    _, source, names, command = group
    if source == "sweep":
        files = [SWEEP_MPNET.format(seed=k) for k in names]
        return (np.array([_load(root, f)["settings"][0]["dev_poly"] for f in files]),
                f"`python scripts/degree_sweep.py --run runs/mpnet6-seedK --settings 14w,14w,14w 6w,6w,6w --json "
                f"{SWEEP_MPNET.format(seed='K')}`")
    runs = {r["run"]: r for r in _load(root, "docs/distillation/results.json")}
    return (np.array([runs[n]["dev_poly"] for n in names]),
            command or f"`{runs[names[0]]['command']}` (seeds 0 and 2: `--set seed=K`)")


def teachers_and_seeds(root: Path) -> str:
    """Each teacher's dev accuracy, then each recipe's students over three seeds: every seed, mean and spread.
    The augmented copies are labelled live by the MiniLM teacher in every row but the copy bank's."""
    mini, mpnet = _load(root, TEACHER_BY_LENGTH), _load(root, TEACHER_MPNET)
    rows = [["teacher: MiniLM-L6 fine-tuned (`../shared/models/minilm-l6-sst2`)", "-", f"{mini['accuracy']:.4f}", "-",
             f"`{TEACHER_BY_LENGTH}`"],
            ["teacher: MPNet-base fine-tuned (`he-inhibitor teacher --base mpnet`), float32: the abs6 to ema2 students'",
             "-", f"{mpnet['accuracy']:.4f}", "-", f"`{TEACHER_MPNET}`"],
            ["teacher: MPNet-base fine-tuned in bfloat16 autocast (the same command since `--bf16`): the shipped "
             "student's, and those of every run named ema2bf, ema2p, ema3bf or ema3p", "-",
             f"{_load(root, TEACHER_MPNET_BF16)['accuracy']:.4f}", "-", f"`{TEACHER_MPNET_BF16}`"]]
    for group in SEED_GROUPS:
        acc, source = _seed_accuracies(root, group)
        rows.append([f"student: {group[0]}", " / ".join(f"{a:.4f}" for a in acc), f"**{acc.mean():.4f}**",
                     f"{acc.max() - acc.min():.4f}", source])
    return _table(["model", "dev, poly form, seeds 1 / 0 / 2", "dev (students: mean of the seeds)", "spread",
                   "command"], rows)


# Weight averaging, by epochs of the exact phase: (label, the averaged runs (ema), the runs whose poly form
# was made from the same runs' last weights, and the degree sweep of each, a file pattern over the seed or
# None). Seeds 1 / 0 / 2. The averaged runs record their last weights' exact-form dev (exact_last); the
# last-weights runs resumed the same exact phase without the average (abs6-seedK: mpnet6-seedK's, whose
# sweep is SWEEP_MPNET). The other sweeps give every fit degree 14 (|x| too), no training in between:
# python scripts/degree_sweep.py --model runs/RUN --phrases --settings 14w,14w,14w --json <that file>
AVERAGING = [
    ("1 (the recipe)", ("ema-seed1", "ema-seed0", "ema-seed2"), ("abs6-seed1", "abs6-seed0", "abs6-seed2"),
     None, SWEEP_MPNET),
    ("2", ("ema2-seed1", "ema2-seed0", "ema2-seed2"), ("ema2last-seed1", "ema2last-seed0", "ema2last-seed2"),
     "docs/distillation/degree_sweep_ema2_seed{seed}.json", "docs/distillation/degree_sweep_ema2last_seed{seed}.json"),
]


def weight_averaging(root: Path) -> str:
    """Each seed's dev accuracy on the exact phase's last weights and on their average, in exact and poly
    form; refuses to pair runs whose last weights differ (their exact-form dev must agree)."""
    runs = {r["run"]: r for r in _load(root, "docs/distillation/results.json")}
    rows = []
    for epochs, averaged, last, averaged_sweep, last_sweep in AVERAGING:
        for a, b in zip(averaged, last):
            if runs[a]["exact_last"] != runs[b]["exact_phase"]:
                raise ValueError(f"{b} does not hold {a}'s last weights: exact dev {runs[b]['exact_phase']} "
                                 f"against {runs[a]['exact_last']}")
        for weights, exact, poly, names, sweep in (
                ("last", [runs[n]["exact_last"] for n in averaged], [runs[n]["dev_poly"] for n in last], last,
                 last_sweep),
                (f"average (ema {runs[averaged[0]]['ema']:g})", [runs[n]["exact_phase"] for n in averaged],
                 [runs[n]["dev_poly"] for n in averaged], averaged, averaged_sweep)):
            at14 = [] if sweep is None else [_load(root, sweep.format(seed=k))["settings"][0]["dev_poly"] for k in (1, 0, 2)]
            rows.append([epochs, weights, " / ".join(f"{x:.4f}" for x in exact), f"{np.mean(exact):.4f}",
                         " / ".join(f"{x:.4f}" for x in poly), f"**{np.mean(poly):.4f}**",
                         f"{max(poly) - min(poly):.4f}",
                         f"{' / '.join(f'{x:.4f}' for x in at14)} (mean {np.mean(at14):.4f})" if at14 else "-",
                         f"`{runs[names[0]]['command']}`"])
    return _table(["exact-phase epochs", "weights", "dev, exact form, seeds 1 / 0 / 2", "mean",
                   "dev, poly form (the circuit)", "mean", "spread", "poly form with \\|x\\| at degree 14 too",
                   "command (seed 1)"], rows)


# The two-epoch average distilled from the MPNet teacher rebuilt under bfloat16 autocast, by the training rows its
# bounds and weighted fits were calibrated on: (label, run name pattern over the seed). The len20 runs resumed
# the same exact phase (their checkpoint-exact.pt copied in), so their exact form is the same weights.
# (label, run pattern) rows of the calibration tables: the first's rows share their exact-phase weights
CALIBRATION_ROWS = [("random training rows (the recipe)", "ema2bf-seed{seed}"),
                    ("random rows of at least 20 word pieces (`calibration_min_length`)", "ema2bf-len20-seed{seed}")]
FIT_ROWS = [("2 epochs; bounds and fits from random rows", "ema2bf-seed{seed}"),
            ("2 epochs; bounds from random rows, weighted fits from rows of at least 20 pieces "
             "(`calibration_fit_min_length`)", "ema2bf-fit20-seed{seed}"),
            ("3 epochs (`configs/ema_3ep.json`); the same calibration", "ema3bf-seed{seed}")]
# he-inhibitor eval --model runs/RUN --data ../shared/data/sst2/dev.tsv --form poly --ranges --json
RANGES = "docs/distillation/ranges_{run}.json"
CONVERSION = "docs/distillation/conversion_ema2bf_seed{seed}.json"  # scripts/conversion_loss.py --model runs/ema2bf-seedK


def _beyond_bounds(root: Path, names: list[str], poly: list[float]) -> str:
    """Each run's dev sentences beyond a bound (largest |x| / B), from its ranges file; refuses a file whose
    accuracy is not the run's poly accuracy (it would be another student's)."""
    ranges = [_load(root, RANGES.format(run=n)) for n in names]
    if [r["accuracy"] for r in ranges] != poly:
        raise ValueError(f"{RANGES.format(run=names[0])}: not the poly form of {names}")
    return " / ".join(f"{r['beyond_bound']} ({r['max_input_ratio']:.3f})" for r in ranges)


def calibration_rows(root: Path, groups: list[tuple[str, str]] = CALIBRATION_ROWS, same_exact: bool = True,
                     head: str = "calibrated on") -> str:
    """Exact and poly form of each seed by calibration rows, with the dev inputs beyond a bound; with
    ``same_exact``, refuses rows whose exact form differs (the table then claims one set of weights)."""
    runs = {r["run"]: r for r in _load(root, "docs/distillation/results.json")}
    rows, exact_of = [], None
    for label, pattern in groups:
        names = [pattern.format(seed=k) for k in (1, 0, 2)]
        exact, poly = [runs[n]["dev_exact"] for n in names], [runs[n]["dev_poly"] for n in names]
        if same_exact and exact_of is not None and exact != exact_of:
            raise ValueError(f"{names} are not the same exact-phase weights: exact dev {exact} against {exact_of}")
        exact_of = exact
        rows.append([label, " / ".join(f"{x:.4f}" for x in exact), f"{np.mean(exact):.4f}",
                     " / ".join(f"{x:.4f}" for x in poly), f"**{np.mean(poly):.4f}**", f"{max(poly) - min(poly):.4f}",
                     _beyond_bounds(root, names, poly), f"`{runs[names[0]]['command']}`"])
    return _table([head, "dev, exact form, seeds 1 / 0 / 2", "mean", "dev, poly form (the circuit)",
                   "mean", "spread", "dev sentences beyond a bound (largest \\|x\\| / B)", "command (seed 1)"], rows)


# (label, run pattern, command or None: the one the seed-1 run recorded) rows of the poly-phase table: each
# poly-phase run resumed the exact phase of the row above (its checkpoint-exact.pt copied in)
POLY_ROWS = [("2 epochs; no poly phase (shipped that day)", "ema2bf-fit20-seed{seed}",
              f"`{DISTILL} --out runs/ema2bf-fit20-seed1 --config configs/ema_2ep.json --set "
              "calibration_fit_min_length=20 --set seed=1`"),
             ("2 epochs; a quarter epoch in poly form (`configs/ema_2ep_poly.json`)", "ema2p-seed{seed}", None),
             ("3 epochs; no poly phase", "ema3bf-seed{seed}", None),
             ("3 epochs; a quarter epoch in poly form (`configs/ema_3ep_poly.json`)", "ema3p-seed{seed}", None)]


# the two-epoch rows again, and half an epoch in poly form (the recipe since)
POLY_HALF_ROWS = POLY_ROWS[:2] + [("2 epochs; half an epoch in poly form (`configs/ema_2ep_poly_half.json`)",
                                   "ema2ph-seed{seed}", None)]
# the penalty on each sentence's largest input (docs/log.md, "each sentence's largest input")
ROW_MAX_ROWS = POLY_HALF_ROWS[2:] + [
    ("2 epochs; half an epoch in poly form, with `range_max` 10 (the recipe since; "
     "`configs/ema_2ep_poly_half_rowmax.json`)", "ema2phr-seed{seed}",
     f"`{DISTILL} --out runs/ema2phr-seed1 --set seed=1` (the defaults; run as "
     "`--config configs/ema_2ep_poly_half_rowmax.json`)"),
    POLY_ROWS[3],
    ("3 epochs; half an epoch in poly form, with `range_max` 10 (`configs/ema_3ep_poly_half_rowmax.json`)",
     "ema3phr-seed{seed}", None),
]

# the poly phase a quarter (no row penalty), half and three quarters of an epoch long, from one exact phase
# (docs/log.md, "three quarters of an epoch")
POLY_LENGTH_ROWS = [POLY_ROWS[1], ROW_MAX_ROWS[1],
                    ("2 epochs; three quarters of an epoch in poly form, with `range_max` 10 "
                     "(`configs/ema_2ep_poly_3q_rowmax.json`)", "ema2p3qr-seed{seed}", None)]


def poly_phase(root: Path, groups: list[tuple[str, str, str | None]] = POLY_ROWS) -> str:
    """Each seed's dev accuracy after the exact phase, in poly form once calibrated, after the poly phase, and the
    final weights in exact form; with the dev inputs beyond a bound of the final student."""
    runs = {r["run"]: r for r in _load(root, "docs/distillation/results.json")}
    rows = []
    for label, pattern, command in groups:
        names = [pattern.format(seed=k) for k in (1, 0, 2)]
        cells = []
        for key in ("exact_phase", "poly_start", "dev_poly", "dev_exact"):
            acc = [runs[n][key] for n in names]
            mean = f"{np.mean(acc):.4f}"
            cells.append(f"{' / '.join(f'{x:.4f}' for x in acc)} ({f'**{mean}**' if key == 'dev_poly' else mean})")
        rows.append([label, *cells, _beyond_bounds(root, names, [runs[n]["dev_poly"] for n in names]),
                     command or f"`{runs[names[0]]['command']}`"])
    return _table(["exact phase (average of the weights); then", "dev after the exact phase, seeds 1 / 0 / 2 (mean)",
                   "poly form, as calibrated (mean)", "poly form, the final student: the circuit (mean)",
                   "the final weights in exact form (mean)", "dev sentences beyond a bound (largest \\|x\\| / B)",
                   "command (seed 1)"], rows)


def conversion(root: Path) -> str:
    """Per non-linearity, over the seeds: what its polynomial alone costs, what making it alone exact wins back."""
    runs = [_load(root, CONVERSION.format(seed=k)) for k in (1, 0, 2)]
    rows = [["all (the circuit)", " / ".join(f"{r['dev_exact']:.4f} → {r['dev_poly']:.4f}" for r in runs),
             f"{np.mean([r['mean_abs_margin_change'] for r in runs]):.3f}", "-", "-"]]
    for name in runs[0]["alone_poly"]:
        rows.append([f"`{name}`",
                     " / ".join(f"{r['alone_poly'][name]['dev']:.4f}" for r in runs),
                     f"{np.mean([r['alone_poly'][name]['mean_abs_margin_change'] for r in runs]):.3f}",
                     " / ".join(f"{r['alone_exact'][name]['dev']:.4f}" for r in runs),
                     f"{max(r['max_dev_input_ratio_poly'][name] for r in runs):.3f}"])
    return _table(["polynomial", "dev with it alone in poly form, seeds 1 / 0 / 2 (first row: exact → poly)",
                   "mean \\|margin change\\| it alone causes", "dev with every other in poly form",
                   "largest dev \\|x\\| / B"], rows)


# (file, model as recorded) -> label, where the recorded path no longer says which student it was
WORD_ORDER = ("word_order.json", "word_order_h16_rel.json", "word_order_h16_dir.json")
_WORD_ORDER_LABELS = {("word_order.json", "../shared/models/minilm-l6-sst2"): "teacher",
                      ("word_order.json", "/work/main/he_inhibitor/assets/student"): "runs/weighted (shipped then)",
                      ("word_order_h16_dir.json", "he_inhibitor/assets/student"): "runs/h16_dir_seed1 (shipped)"}


def word_order(root: Path) -> str:
    rows = []
    for f in WORD_ORDER:
        for r in _load(root, f"docs/distillation/{f}")["rows"]:
            rows.append([_WORD_ORDER_LABELS.get((f, r["model"]), r["model"]), f"{r['accuracy']:.4f}",
                         " / ".join(f"{a:.4f}" for a in r["shuffled"]), f"{r['shuffled_mean']:.4f}",
                         f"{100 * r['drop']:.1f}", f"`docs/distillation/{f}`"])
    return _table(["model", "dev", "words shuffled (3 permutations)", "mean shuffled", "drop, points", "from"], rows)


TABLES: dict[str, Callable[[Path], str]] = {
    "headline": headline, "levels": levels_ab, "bench-buckets": bench_buckets, "bench-stages": bench_stages,
    "bench-totals": bench_totals, "inhibitor-vs-dot": inhibitor_vs_dot,
    "inhibitor-vs-dot-first": lambda root: inhibitor_vs_dot(root, INHIBITOR_VS_DOT_FIRST), "ablations": ablations, "by-length": by_length,
    "degree-sweep": degree_sweep,
    "degree-sweep-shipped": lambda root: degree_sweep(root, "docs/distillation/degree_sweep_shipped.json"),
    "word-order": word_order, "shipped-fits": shipped_fits, "teachers-and-seeds": teachers_and_seeds,
    "weight-averaging": weight_averaging, "calibration-rows": calibration_rows, "conversion": conversion,
    "fit-rows": partial(calibration_rows, groups=FIT_ROWS, same_exact=False,
                                  head="exact phase (average of the weights); calibration"),
    "poly-phase": poly_phase, "poly-half": partial(poly_phase, groups=POLY_HALF_ROWS),
    "row-max": partial(poly_phase, groups=ROW_MAX_ROWS), "served": partial(served, path=SERVED[0], bench_path=SERVED[1]),
    "served-levels": partial(served, path=SERVED_NOW, bench_path=BENCH),
    "poly-length": partial(poly_phase, groups=POLY_LENGTH_ROWS),
}


def render(text: str, root: Path = ROOT) -> str:
    """text with every marked block's body replaced by its generated table; unknown names raise KeyError."""
    return BLOCK.sub(lambda mt: mt.group(1) + TABLES[mt.group("name")](root) + mt.group(4), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = ap.parse_args()
    stale = []
    for rel in DOCS:
        path = ROOT / rel
        old = path.read_text()
        new = render(old)
        if new != old:
            stale.append(rel)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("stale tables in: " + ", ".join(stale) + " (run python scripts/readme_tables.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
