"""`he-inhibitor bench`: benchmark a circuit (and optionally a second one side by side).

(Registered in he_inhibitor/cli.py as "bench": "he_inhibitor.bench.cli".)

The per-primitive cost table is measured once per ring degree in the same
run, over the longest chain among the targets, so both circuits of a
comparison are priced by the same table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from he_inhibitor.bench.corpus import embed_corpus
from he_inhibitor.bench.measure import bench_target
from he_inhibitor.bench.report import plot_stages, stage_lines, summary_lines
from he_inhibitor.bench.target import load_target
from he_inhibitor.circuit.costs import measure
from he_inhibitor.circuit.params import ROUND_TRIP_SECONDS, Precision
from he_inhibitor.circuit.ray_lanes import default_lanes
from he_inhibitor.data import default_data_dir, load_sst2, load_sst2_tsv
from he_inhibitor.service.artifacts import SHIPPED_CIRCUIT
from he_inhibitor.service.console import Progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="depth, op counts, latency vs floor, bytes, accuracy of a circuit")
    p.add_argument("--circuit", type=Path, default=None,
                   help="circuit bundle or student directory (default: the shipped bundle)")
    p.add_argument("--compare", type=Path, default=None,
                   help="a second bundle or student directory (e.g. the dot-product student), benched alongside")
    p.add_argument("--client", type=Path, default=None, help="client bundle for circuit bundles (default: the bundle's own client/, else the shipped one)")
    p.add_argument("--data", type=Path, default=None, help="sentence<TAB>label TSV (default: SST-2 dev)")
    p.add_argument("--sentences", type=int, default=None, help="N sentences for plain accuracy (default: all)")
    p.add_argument("--encrypted-sentences", type=int, default=None,
                   help="K of the N, in a seeded random order, run encrypted: latency, encrypted accuracy, "
                        "agreement (default: all N; about 30 s each at N = 16384)")
    p.add_argument("--log", type=Path, default=None,
                   help="directory for per-sentence run logs (<name>.jsonl); a rerun resumes from them")
    p.add_argument("--buckets", type=int, nargs="+", default=None,
                   help="token buckets (default: a bundle's own; 32 64 for a student directory)")
    p.add_argument("--n", type=int, default=16384, help="ring degree when compiling a student directory")
    p.add_argument("--scale-bits", type=int, default=30, help="scale when compiling a student directory")
    p.add_argument("--lanes", type=int, default=None,
                   help="lanes per encrypted evaluation (default 2 where ray is installed, else 1): the work split "
                        "K ways (design §3.4), lanes 1..K-1 on Ray "
                        "actors (a bundle is recompiled for K > 2)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the lanes on the Ray cluster at ADDRESS (default: Ray embedded, 2 CPUs)")
    p.add_argument("--rtt-ms", type=float, default=ROUND_TRIP_SECONDS * 1000,
                   help="network round-trip time added per round trip (query + refreshes) in the *_with_rtt figures")
    p.add_argument("--reps", type=int, default=3, help="repetitions per primitive in the cost table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--plot", type=Path, default=None, help="directory for latency_per_stage.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if args.encrypted_sentences is not None and args.encrypted_sentences < 1:
        raise SystemExit("error: --encrypted-sentences must be at least 1")
    if args.lanes is not None and args.lanes < 1:
        raise SystemExit("error: --lanes must be at least 1")
    args.lanes = args.lanes or default_lanes()
    progress = Progress()
    try:
        sentences, labels = load_sst2_tsv(args.data) if args.data else load_sst2(default_data_dir(), "dev")
        sentences, labels = sentences[:args.sentences], labels[:args.sentences]
        paths = [args.circuit or SHIPPED_CIRCUIT] + ([args.compare] if args.compare else [])
        progress("compiling / loading " + ", ".join(str(p) for p in paths))
        targets = [load_target(p, args.client, args.buckets, args.n, Precision(scale_bits=args.scale_bits), args.lanes)
                   for p in paths]
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    chains: dict[int, list] = {}
    for t in targets:
        chains.setdefault(t.params.poly_modulus_degree, []).append(t.params)
    costs = {}
    for n, ps in chains.items():
        progress(f"measuring per-primitive costs at N = {n}")
        costs[n] = measure(n, max(p.depth for p in ps), ps[0].scale_bits, args.reps)
    if len({t.name for t in targets}) < len(targets) and args.log:
        raise SystemExit("error: the two targets share a name; their run logs would collide")
    if args.log:
        args.log.mkdir(parents=True, exist_ok=True)
    results = []
    for t in targets:
        progress(f"{t.name}: plain accuracy on {len(sentences)} sentences, "
                 f"encrypted runs on {args.encrypted_sentences or len(sentences)}")
        corpus = embed_corpus(t, sentences, labels)
        progress.clear()
        try:
            results.append(bench_target(t, corpus, costs[t.params.poly_modulus_degree],
                                        args.encrypted_sentences, args.seed, lanes=args.lanes, ray=args.ray,
                                        log=args.log / f"{t.name}.jsonl" if args.log else None,
                                        rtt_ms=args.rtt_ms))
        except ValueError as err:  # a run log that does not belong to this circuit
            raise SystemExit(f"error: {err}")
    for r in results:
        for T, b in r["buckets"].items():
            print(f"== {r['name']} (N = {r['poly_modulus_degree']}, T = {T}: {b['sentences']} sentences, "
                  f"{b['encrypted_sentences']} run encrypted)")
            print(stage_lines(b))
            print()
    print(summary_lines(results))
    if args.json:
        out = dict(results[0])
        if len(results) > 1:
            out["compare"] = results[1]
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.plot:
        print(f"plot: {plot_stages(results, args.plot)}")
    return 0
