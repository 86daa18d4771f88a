"""`he-inhibitor query --url URL [--json] TEXT...`: classify sentences through a running server.

Prints per sentence the label, its confidence, the latency split (client /
network / server) and bytes up and down. With --keys FILE the keys are
generated once, saved owner-only, and reused: a later query then skips key
generation and, if the server still holds them, the upload too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from he_inhibitor.service.artifacts import SHIPPED_CLIENT
from he_inhibitor.service.client import Client, Prediction, ServerError
from he_inhibitor.service.console import Progress, megabytes
from he_inhibitor.embed import Embedder


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("query", help="classify sentences through a running he-inhibitor server", description=__doc__)
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--client", type=Path, default=SHIPPED_CLIENT,
                   help="client bundle: tokenizer.json + model.safetensors (default: the shipped student)")
    p.add_argument("--keys", type=Path, default=None, help="key file to load, or to create (mode 0600) if missing")
    p.add_argument("--token", default=None, help="bearer token, for servers started with --tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("text", nargs="+", help="sentences to classify")
    p.set_defaults(func=run)
    return p


def prepare(client: Client, keys: Path | None) -> None:
    """Load the key file, or generate keys (and save them when a path was given)."""
    if keys is not None and keys.exists():
        client.load_keys(keys)
        return
    client.generate_keys()
    if keys is not None:
        client.save_keys(keys)


def describe(text: str, p: Prediction) -> str:
    t = p.traffic
    return (f"{text!r}\n"
            f"  label    {p.label} (confidence {p.confidence:.3f}, {p.n_tokens} tokens"
            f"{', truncated to the largest bucket' if p.truncated else ''})\n"
            f"  latency  {t.total_s:.2f} s = client {t.client_s:.2f} + network {t.network_s:.2f}"
            f" + server {t.server_s:.2f}\n"
            f"  bytes    up {megabytes(t.bytes_up)}, down {megabytes(t.bytes_down)} ({t.round_trips} round trips)")


def run(args: argparse.Namespace) -> int:
    progress = Progress()
    try:
        embedder = Embedder.load(args.client)
        with Client(args.url, progress=progress, token=args.token) as client:
            prepare(client, args.keys)
            results = []
            for text in args.text:
                results.append((text, client.classify(text, embedder)))
            key_bytes = client.context_bytes
    except (OSError, ValueError, ServerError, httpx.HTTPError) as err:
        progress.clear()
        print(f"he-inhibitor query: error: {err}", file=sys.stderr)
        return 2
    progress.clear()
    if args.json:
        print(json.dumps({"url": args.url, "key_bytes_sent": key_bytes,
                          "results": [{"text": t, **p.to_json()} for t, p in results]}))
    else:
        if key_bytes:
            print(f"evaluation keys sent once: {megabytes(key_bytes)}")
        print("\n".join(describe(t, p) for t, p in results))
    return 0
