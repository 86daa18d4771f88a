"""`he-inhibitor bench-served`: latency as a client of a real server sees it, per server configuration.

`bench` times the circuit in one process (both parties, no HTTP); this
command times what a user of `he-inhibitor serve` waits for, and compares
server configurations in one run:

* each configuration is a set of `serve` flags, run as its own server
  process on 127.0.0.1 (service/process.py), all started before anything is
  timed;
* each server first answers one warm-up sentence per bucket (a bucket's first
  sentence is where a server that keeps its weight plaintexts encodes them;
  reported as warm-up seconds);
* then K SST-2 dev sentences in the bench's seeded order (the same first K as
  `bench --seed S`) go round-robin: sentence i to every server before
  sentence i + 1, so a noisy machine slows every configuration alike;
* one client per server, with its own keys registered once; each latency is
  the client's wall clock from text to label (embed, encrypt, HTTP with every
  refresh round trip, decrypt), split into client / network / server seconds;
* every encrypted label is checked against the plain circuit;
* per configuration: median and p95 latency, the split's medians, warm-up
  seconds, and the server process's peak RSS (Ray workers, where a
  configuration has them, are processes of their own and not included).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from he_inhibitor.bench.report import save_figure
from he_inhibitor.circuit.executors import PlainExecutor
from he_inhibitor.data import default_data_dir, load_sst2, load_sst2_tsv
from he_inhibitor.embed import Embedder
from he_inhibitor.service.artifacts import SHIPPED_CLIENT
from he_inhibitor.service.client import Client, ServerError
from he_inhibitor.service.process import ServeProcess, status_bytes
from he_inhibitor.service.server import load_buckets

DEFAULT_CONFIGS = (
    "weights encoded per request=--weight-cache 0",
    "weights kept, shared by key sets=",
    "weights kept, 2 lanes=--lanes 2",
)


def parse_config(text: str) -> tuple[str, list[str]]:
    """'NAME=FLAGS' -> (NAME, the flags split as a shell would)."""
    name, sep, flags = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a configuration is NAME=SERVE_FLAGS, not {text!r}")
    return name.strip(), shlex.split(flags)


def _run(client: Client, embedder: Embedder, text: str, buckets: dict) -> dict:
    t0 = time.perf_counter()
    pred = client.classify(text, embedder)
    seconds = time.perf_counter() - t0
    x0, n, _ = client.embed(text, embedder)
    plain = PlainExecutor(buckets[pred.bucket].plan_for(n).compiled).run(x0, (np.arange(pred.bucket) < n).astype(float))
    t = pred.traffic
    return {"n_tokens": n, "T": pred.bucket, "truncated": pred.truncated, "seconds": seconds,
            "client_seconds": t.client_s, "network_seconds": t.network_s, "server_seconds": t.server_s,
            "round_trips": t.round_trips, "bytes_up": t.bytes_up, "bytes_down": t.bytes_down,
            "agrees": bool(np.argmax(pred.logits) == np.argmax(plain.logits)),
            "max_abs_error_vs_plain": float(np.abs(pred.logits - plain.logits).max())}


def summary(runs: list[dict]) -> dict:
    s = np.array([r["seconds"] for r in runs])
    return {"median_seconds": float(np.median(s)), "p95_seconds": float(np.percentile(s, 95)),
            **{f"median_{part}_seconds": float(np.median([r[f"{part}_seconds"] for r in runs]))
               for part in ("client", "network", "server")},
            **{f"median_seconds_t{T}": float(np.median([r["seconds"] for r in runs if r["T"] == T]))
               for T in sorted({r["T"] for r in runs})},
            "agreement": float(np.mean([r["agrees"] for r in runs]))}


def measure(configs: list[tuple[str, list[str]]], texts: list[str], circuit: Path | None,
            client_dir: Path | None = None) -> dict:
    buckets, _ = load_buckets(circuit)
    embedder = Embedder.load(client_dir or (SHIPPED_CLIENT if circuit is None else circuit / "client"))
    extra = [] if circuit is None else ["--circuit", str(circuit)]
    out: dict = {name: {"flags": shlex.join(flags), "runs": []} for name, flags in configs}
    with ExitStack() as stack:
        servers, clients = [], []
        for name, flags in configs:
            tqdm.write(f"starting: {name} (serve {shlex.join(flags) or 'with its defaults'})")
            server = stack.enter_context(ServeProcess([*extra, *flags]))
            client = stack.enter_context(Client(server.url, retry_s=600))
            servers.append(server)
            clients.append(client)
            client.generate_keys()
            client.register_keys()
            warm = {}
            for T in sorted(buckets):  # the sample's first sentence in each bucket it reaches
                text = next((t for t in texts if client.embed(t, embedder)[0].shape[0] == T), None)
                if text is not None:
                    warm[str(T)] = _run(client, embedder, text, buckets)["seconds"]
            out[name]["warmup_seconds"] = warm
        for text in tqdm(texts, desc="sentences (every configuration)", unit="sentence"):
            for (name, _), client in zip(configs, clients):
                out[name]["runs"].append(_run(client, embedder, text, buckets))
        for (name, _), server in zip(configs, servers):
            out[name]["peak_rss_bytes"] = status_bytes(server.pid, "VmHWM")
            out[name]["weight_cache"] = httpx.get(server.url + "/v1/health").json().get("weight_cache")
            out[name].update(summary(out[name]["runs"]))
    return out


def table(result: dict) -> str:
    rows = ["| server | median | p95 | median T = 32 / 64 | client / network / server (medians) | warm-up | "
            "peak RSS | agree |", "|---|---|---|---|---|---|---|---|"]
    for name, c in result["configs"].items():
        by_T = " / ".join(f"{c[k]:.2f}" for k in sorted(k for k in c if k.startswith("median_seconds_t")))
        warm = " / ".join(f"{v:.1f}" for v in c["warmup_seconds"].values())
        rows.append(f"| {name} (`{c['flags'] or 'defaults'}`) | {c['median_seconds']:.2f} s | {c['p95_seconds']:.2f} s "
                    f"| {by_T} s | {c['median_client_seconds']:.2f} / {c['median_network_seconds']:.2f} / "
                    f"{c['median_server_seconds']:.2f} s | {warm} s | {c['peak_rss_bytes'] / 2**30:.1f} GiB "
                    f"| {sum(r['agrees'] for r in c['runs'])}/{len(c['runs'])} |")
    return "\n".join(rows)


def plot(result: dict, path: Path) -> Path:
    """Latency against the sentence's token count, one colour per server configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, c in result["configs"].items():
        ax.scatter([r["n_tokens"] for r in c["runs"]], [r["seconds"] for r in c["runs"]], s=14,
                   label=f"{name}: median {c['median_seconds']:.1f} s")
    ax.set_xlabel("word pieces")
    ax.set_ylabel("seconds, text to label over HTTP")
    ax.set_title(f"served latency, {result['sentences']} SST-2 dev sentences, loopback")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-served", help="latency through real HTTP servers, one per configuration, in one run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--circuit", type=Path, default=None, help="compiled bundle (default: the shipped one)")
    p.add_argument("--client", type=Path, default=None,
                   help="client bundle (default: the bundle's own client/, else the shipped one)")
    p.add_argument("--data", type=Path, default=None, help="sentence<TAB>label TSV (default: SST-2 dev)")
    p.add_argument("--sentences", type=int, default=30, help="K sentences, each sent to every server")
    p.add_argument("--seed", type=int, default=0, help="the order of the sentences (bench's: the same first K)")
    p.add_argument("--config", type=parse_config, action="append", default=None, metavar="NAME=FLAGS",
                   help="a server configuration: a name and its `serve` flags; repeat for each "
                        f"(default: {'; '.join(DEFAULT_CONFIGS)})")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--plot", type=Path, default=None, help="write latency against token count as a PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sentences < 1:
        raise SystemExit("error: --sentences must be at least 1")
    configs = args.config or [parse_config(c) for c in DEFAULT_CONFIGS]
    if len({name for name, _ in configs}) < len(configs):
        raise SystemExit("error: two configurations share a name")
    try:
        sentences, _ = load_sst2_tsv(args.data) if args.data else load_sst2(default_data_dir(), "dev")
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    order = np.random.default_rng(args.seed).permutation(len(sentences))[: args.sentences]
    texts = [sentences[int(i)] for i in order]
    try:
        measured = measure(configs, texts, args.circuit, args.client)
    except (OSError, RuntimeError, ServerError, httpx.HTTPError) as err:  # a server that would not start or answer
        raise SystemExit(f"error: {err}")
    result = {"command": shlex.join(["he-inhibitor", *sys.argv[1:]]),
              "sentences": len(texts), "seed": args.seed, "sentence_indices": [int(i) for i in order],
              "configs": measured}
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        print(f"plot: {plot(result, args.plot)}")
    return 0 if all(c["agreement"] == 1.0 for c in result["configs"].values()) else 1
