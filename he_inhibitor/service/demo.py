"""`he-inhibitor demo [TEXT...]`: the whole encrypted pipeline on this machine, over real HTTP.

Starts the server on 127.0.0.1 and a free port (uvicorn in a thread), runs
the client against it (key generation, registration, then per sentence:
embed, encrypt, evaluate with its refresh round trips, decrypt), and prints
a table per sentence: label, confidence, agreement with the plain circuit
run in the clear, levels used, latency split and bytes. Every bucket of the
bundle is served; a sentence longer than the largest is cut to it and its
row says so. Without TEXT it uses a few built-in sentences.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import httpx
import numpy as np

from he_inhibitor.ckks import CkksParams
from he_inhibitor.circuit.bundle import Bucket
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.service.artifacts import SHIPPED_CLIENT
from he_inhibitor.service.client import Client, ServerError
from he_inhibitor.service.console import Progress, megabytes, table
from he_inhibitor.embed import Embedder
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.server import create_app, load_buckets

BUILTIN = (
    "a gripping , beautifully acted film .",
    "the plot is dull and the jokes fall flat .",
    "not bad at all .",
    "an utterly forgettable sequel .",
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="run client and a local server end to end on a few sentences",
                       description=__doc__)
    p.add_argument("--circuit", type=Path, default=None, help="compiled bundle directory (default: the shipped one)")
    p.add_argument("--client", type=Path, default=SHIPPED_CLIENT,
                   help="client bundle: tokenizer.json + model.safetensors (default: the shipped student)")
    p.add_argument("text", nargs="*", help="sentences (default: built-in examples)")
    p.set_defaults(func=run)
    return p


def run_demo(circuits: Compiled | Bucket | Mapping[int, Compiled | Bucket], params: CkksParams, embedder: Embedder,
             sentences: list[str], progress: Progress, out: TextIO = sys.stdout) -> list[dict]:
    """Serve the circuits (one, or one bucket per T) locally, classify every sentence; print and return one row each."""
    given = dict(circuits) if isinstance(circuits, Mapping) else {circuits.T: circuits}
    by_T = {T: Bucket.of(c, params) if isinstance(c, Compiled) else c for T, c in given.items()}
    rows: list[dict] = []
    with LocalServer(create_app(by_T, params)) as server, Client(server.url, progress=progress) as client:
        progress(f"server listening on {server.url}")
        t0 = time.perf_counter()
        client.generate_keys()
        keygen_s = time.perf_counter() - t0
        client.register_keys()
        sig = client.signature
        for i, text in enumerate(sentences, 1):
            progress(f"sentence {i}/{len(sentences)}: encrypting")
            pred = client.classify(text, embedder)
            x0, n, _ = client.embed(text, embedder)
            plain = make_executor(Mode.PLAIN, by_T[pred.bucket].plan_for(n).compiled)  # the circuit of this sentence's plan
            want = plain.run(x0, (np.arange(pred.bucket) < n).astype(np.float64)).logits
            rows.append({"text": text, **pred.to_json(), "plain_logits": want.tolist(),
                         "plain_label": sig.labels[int(np.argmax(want))],
                         "max_abs_error": float(np.abs(pred.logits - want).max())})
    progress.clear()
    buckets = ", ".join(f"T={b.T}: depth {b.depth}, {b.refreshes} refreshes" for b in sig.buckets)
    print(f"CKKS N={sig.poly_modulus_degree}, chain {list(sig.coeff_bits)} ({len(sig.coeff_bits) - 2} levels); "
          f"{buckets}; keys generated in {keygen_s:.1f} s, {megabytes(client.context_bytes)} sent once", file=out)
    depth = {b.T: (b.depth, b.refreshes) for b in sig.buckets}
    print(table(["sentence", "tokens", "label", "conf", "plain", "agree", "max|err|", "levels",
                 "latency s (client/net/server)", "up", "down"], [_cells(r, *depth[r["bucket"]]) for r in rows]),
          file=out)
    return rows


def _cells(r: dict, depth: int, refreshes: int) -> list[str]:
    text = r["text"] if len(r["text"]) <= 40 else r["text"][:37] + "..."
    s = r["seconds"]
    agree = "yes" if r["label"] == r["plain_label"] else "NO"
    tokens = f"{r['tokens']} (truncated)" if r["truncated"] else str(r["tokens"])
    return [text, tokens, r["label"], f"{r['confidence']:.3f}", r["plain_label"], agree,
            f"{r['max_abs_error']:.1e}", f"{depth} ({refreshes} refr.)",
            f"{s['total']:.2f} ({s['client']:.2f}/{s['network']:.2f}/{s['server']:.2f})",
            megabytes(r["bytes_up"]), megabytes(r["bytes_down"])]


def run(args: argparse.Namespace) -> int:
    progress = Progress()
    try:
        progress("loading the compiled circuits")
        circuits, params = load_buckets(args.circuit)
        embedder = Embedder.load(args.client)
        run_demo(circuits, params, embedder, args.text or list(BUILTIN), progress)
    except (OSError, ValueError, ServerError, httpx.HTTPError) as err:
        progress.clear()
        print(f"he-inhibitor demo: error: {err}", file=sys.stderr)
        return 2
    return 0
