"""The load-and-abuse mix: honest clients served while others attack, and `he-inhibitor abuse-bench`.

Honest clients register keys and classify sentences (waiting out 503/429 as
told). At the same time attacker threads loop over the attacks the issue
measured against the server, each over its own loopback socket so that it can
lie about lengths, stall, or hang up:

  oversized    Content-Length of 200 MB on /v1/keys (refused before reading)
  streamed     a chunked body of zeros with no length (refused on its magic)
  stalled      a valid context start, then silence (timed out, upload slot freed)
  slow_head    a request head that never ends (connection closed)
  many_parts   a valid context followed by 200,000 empty parts (refused at the 4th)
  non_canonical reordered/duplicated steps, a float ring degree, a 50,000-deep header
  reregister   the attacker's own keys again (same id: nothing new is held)
  abandoned    an evaluation whose refresh is never answered (expires; per-key cap)
  hangup       an evaluation whose client disconnects before the answer (cancelled)

Meanwhile a poller times GET /v1/health. The report: honest latencies and
failures, each attack's answers by status, any 5xx, the slowest health
answer, and (for a server in another process) its peak RSS. The pytest
(tests/test_service_abuse.py) runs it on a toy circuit; the command runs it
against the shipped circuit on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.synchronize
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.embed import Embedder
from he_inhibitor.service.artifacts import SHIPPED_CLIENT
from he_inhibitor.service.client import Client
from he_inhibitor.service.process import ServeProcess, status_bytes
from he_inhibitor.service.protocol import CONTENT_TYPE, H_KEY_ID, H_TOKENS, pack_frames
from he_inhibitor.service.server import load_buckets


@dataclass
class Ammunition:
    """What attackers send: a real registered context and real encrypted inputs under their own keys."""

    host: str
    port: int
    context: bytes
    key_id: str
    inputs: bytes  # a frame list for the smallest bucket
    n_tokens: int
    token: str | None = None

    def auth(self) -> bytes:
        return f"Authorization: Bearer {self.token}\r\n".encode() if self.token else b""


def _head(a: Ammunition, path: str, length: int | None, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {a.host}:{a.port}", f"Content-Type: {CONTENT_TYPE}",
             "Content-Length: %d" % length if length is not None else "Transfer-Encoding: chunked",
             *(f"{k}: {v}" for k, v in (extra or {}).items())]
    return ("\r\n".join(lines) + "\r\n").encode() + a.auth() + b"\r\n"


def _status(sock: socket.socket, timeout_s: float) -> str:
    """The answer's status code, or 'closed' / 'timeout' when none came."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed"
            data += chunk
    except TimeoutError:
        return "timeout"
    except OSError:
        return "closed"
    parts = data.split(b"\r\n", 1)[0].split()
    return parts[1].decode() if len(parts) > 1 else "closed"


def _send(a: Ammunition, payload: bytes, wait_s: float = 30.0) -> str:
    with socket.create_connection((a.host, a.port), timeout=10) as s:
        try:
            s.sendall(payload)
        except OSError:
            pass  # the server may answer and close before it has read everything: read what it said
        return _status(s, wait_s)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def oversized(a: Ammunition) -> str:
    return _send(a, _head(a, "/v1/keys", 200 << 20) + b"\0" * (64 << 10))


def streamed(a: Ammunition) -> str:
    return _send(a, _head(a, "/v1/keys", None) + b"".join(_chunk(b"\0" * (64 << 10)) for _ in range(16)))


def stalled(a: Ammunition) -> str:
    with socket.create_connection((a.host, a.port), timeout=10) as s:
        s.sendall(_head(a, "/v1/keys", len(a.context)) + a.context[: len(a.context) // 2])
        return _status(s, 60.0)  # the server must give up on us (408) or close


def slow_head(a: Ammunition) -> str:
    with socket.create_connection((a.host, a.port), timeout=10) as s:
        s.sendall(b"POST /v1/keys HTTP/1.1\r\nHost: x\r\n")
        return _status(s, 60.0)


def many_parts(a: Ammunition) -> str:
    body = a.context + struct.pack("<Q", 0) * 200_000
    return _send(a, _head(a, "/v1/keys", len(body)) + body)


def non_canonical(a: Ammunition) -> str:
    """One of four lies about the header, chosen by the clock; every one must be a 4xx."""
    n = struct.unpack_from("<Q", a.context, 8)[0]
    header = json.loads(a.context[16 : 16 + n])
    variants = [
        {**header, "rotation_steps": list(reversed(header["rotation_steps"])) + header["rotation_steps"][:1]},
        {**header, "poly_modulus_degree": header["poly_modulus_degree"] + 0.9},
        {**header, "rotation_steps": header["rotation_steps"] + [3]},
    ]
    text = json.dumps(variants[int(time.monotonic() * 10) % 3]).encode()
    if int(time.monotonic() * 10) % 4 == 0:
        text = b"[" * 50_000 + b"]" * 50_000
    body = a.context[:8] + struct.pack("<Q", len(text)) + text + a.context[16 + n :]
    return _send(a, _head(a, "/v1/keys", len(body)) + body)


def reregister(a: Ammunition) -> str:
    return _send(a, _head(a, "/v1/keys", len(a.context)) + a.context, 120.0)


def abandoned(a: Ammunition) -> str:
    extra = {H_KEY_ID: a.key_id, H_TOKENS: str(a.n_tokens)}
    return _send(a, _head(a, "/v1/evaluate", len(a.inputs), extra) + a.inputs, 120.0)


def hangup(a: Ammunition) -> str:
    extra = {H_KEY_ID: a.key_id, H_TOKENS: str(a.n_tokens)}
    with socket.create_connection((a.host, a.port), timeout=10) as s:
        s.sendall(_head(a, "/v1/evaluate", len(a.inputs), extra) + a.inputs)
    return "hung up"


ATTACKS: dict[str, Callable[[Ammunition], str]] = {f.__name__: f for f in (
    oversized, streamed, stalled, slow_head, many_parts, non_canonical, reregister, abandoned, hangup)}


@dataclass
class Report:
    honest_seconds: list[float] = field(default_factory=list)
    honest_failures: list[str] = field(default_factory=list)
    attacks: dict[str, Counter] = field(default_factory=dict)
    health_seconds: list[float] = field(default_factory=list)
    health_failures: int = 0
    peak_rss_bytes: int | None = None
    start_rss_bytes: int | None = None
    memory_used_max: int = 0  # the server's own account (detailed health), bytes
    memory_budget: int | None = None

    @property
    def server_errors(self) -> int:
        """5xx answers other than 503 (which is the server saying 'retry', with Retry-After)."""
        return sum(n for c in self.attacks.values() for s, n in c.items() if s.startswith("5") and s != "503")

    def to_json(self) -> dict:
        h = np.array(self.honest_seconds) if self.honest_seconds else np.zeros(1)
        return {"honest": {"served": len(self.honest_seconds), "failed": self.honest_failures,
                           "median_s": float(np.median(h)), "p95_s": float(np.percentile(h, 95)),
                           "max_s": float(h.max())},
                "attacks": {k: dict(v) for k, v in self.attacks.items()},
                "server_errors_5xx": self.server_errors,
                "health": {"answers": len(self.health_seconds), "failures": self.health_failures,
                           "max_s": max(self.health_seconds, default=0.0),
                           "p99_s": float(np.percentile(self.health_seconds, 99)) if self.health_seconds else 0.0},
                "memory": {"budget": self.memory_budget, "accounted_max": self.memory_used_max,
                           "rss_at_start": self.start_rss_bytes, "rss_peak": self.peak_rss_bytes}}


def prepare(client: Client, embed: Callable[[Client], tuple[np.ndarray, int]], token: str | None) -> Ammunition:
    """Keys and one encrypted sentence for the attackers (their own key set, registered once)."""
    client.generate_keys()
    client.register_keys()
    x0, n = embed(client)
    u = urlparse(str(client.http.base_url))
    return Ammunition(u.hostname or "127.0.0.1", u.port or 80, client.keys.public_blob, client.key_id,
                      pack_frames(client.encrypt(x0)), n, token)


def run_mix(url: str, honest: Callable[[int], float], n_honest: int, ammo: Ammunition, n_attackers: int,
            server_pid: int | None = None, health_timeout_s: float = 5.0) -> Report:
    """Honest workers `honest(i) -> seconds` (raising on a wrong or failed answer) against n_attackers
    threads cycling through ATTACKS until every honest worker is done; health polled throughout
    (poll_health, in a process of its own)."""
    report = Report(attacks={k: Counter() for k in ATTACKS})
    done = threading.Event()
    lock = threading.Lock()
    headers = {"authorization": f"Bearer {ammo.token}"} if ammo.token else {}

    def honest_worker(i: int) -> None:
        try:
            seconds = honest(i)
            with lock:
                report.honest_seconds.append(seconds)
        except Exception as err:  # noqa: BLE001 - every failure is reported, none may happen
            with lock:
                report.honest_failures.append(f"{type(err).__name__}: {err}")

    def attacker(j: int) -> None:
        names = list(ATTACKS)
        k = j
        while not done.is_set():
            name = names[k % len(names)]
            k += 1
            try:
                outcome = ATTACKS[name](ammo)
            except OSError as err:
                outcome = f"refused connection ({type(err).__name__})"
            with lock:
                report.attacks[name][outcome] += 1

    if server_pid is not None:
        report.start_rss_bytes = _rss(server_pid)
    # health is polled from a process of its own: in this one, the clients' SEAL work holds the GIL for
    # hundreds of milliseconds at a time and would be timed instead of the server
    spawn = multiprocessing.get_context("spawn")
    samples, stop = spawn.Queue(), spawn.Event()
    poller = spawn.Process(target=poll_health, args=(url, headers, health_timeout_s, server_pid, samples, stop))
    poller.start()
    if not samples.get(timeout=120):  # the poller's first answer: the server is up and polled
        raise RuntimeError("the health poller could not reach the server")
    side = [threading.Thread(target=attacker, args=(j,), daemon=True) for j in range(n_attackers)]
    for t in side:
        t.start()
    workers = [threading.Thread(target=honest_worker, args=(i,)) for i in range(n_honest)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    for t in side:
        t.join(timeout=120)
    stop.set()
    result = samples.get(timeout=60)
    poller.join(timeout=30)
    report.health_seconds, report.health_failures = result["seconds"], result["failures"]
    report.memory_used_max, report.memory_budget = result["memory_used_max"], result["memory_budget"]
    if server_pid is not None:
        report.peak_rss_bytes = max(result["peak_rss"], _hwm(server_pid))
    return report


def poll_health(url: str, headers: dict[str, str], timeout_s: float, server_pid: int | None,
                out: "multiprocessing.Queue", stop: "multiprocessing.synchronize.Event") -> None:
    """GET /v1/health every 0.1 s until `stop`: put True after the first answer, then the timings,
    failures, the server's largest accounted memory and (given its pid) its largest RSS."""
    seconds: list[float] = []
    failures = used_max = peak_rss = 0
    budget = None
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            r = httpx.get(url + "/v1/health", timeout=timeout_s, headers=headers)
            ok, state = r.status_code == 200, r.json()
        except (httpx.HTTPError, ValueError):
            ok, state = False, {}
        if not seconds:
            out.put(ok)
        seconds.append(time.perf_counter() - t0)
        failures += not ok
        used_max = max(used_max, state.get("memory_used", 0))
        budget = state.get("memory_budget", budget)
        if server_pid is not None:
            peak_rss = max(peak_rss, _rss(server_pid))
        time.sleep(0.1)
    out.put({"seconds": seconds, "failures": failures, "memory_used_max": used_max, "memory_budget": budget,
             "peak_rss": peak_rss})


def _rss(pid: int) -> int:
    return status_bytes(pid, "VmRSS")


def _hwm(pid: int) -> int:
    """Peak resident memory of a process since it started."""
    return status_bytes(pid, "VmHWM")


# -- the command ---------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("abuse-bench", help="honest clients against the shipped circuit while attackers run the "
                                           "abuse mix (loopback only)", description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--circuit", type=Path, default=None, help="compiled bundle (default: the shipped one)")
    p.add_argument("--honest", type=int, default=3, help="honest clients, one sentence each (9, 40, 71 tokens, ...)")
    p.add_argument("--attackers", type=int, default=6, help="attacker threads")
    p.add_argument("--memory-budget", default="3G", help="the server's --memory-budget")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.set_defaults(func=run)


SENTENCES = (  # 9, 40 and 71 word pieces: the T = 32 bucket, the T = 64 bucket, and truncated to 64
    "a gripping , beautifully acted film .",
    "the plot is dull and the jokes fall flat , and even the usually reliable lead seems bored by a script that "
    "never decides whether it wants to be a comedy , a thriller or a romance .",
    "for all its lavish costumes and the occasional flash of wit , this overlong period drama never finds a pulse : "
    "the performances are stiff , the dialogue is stilted , the pacing is glacial , and by the time the inevitable "
    "tragedy arrives you will have stopped caring about any of these people and their endless , joyless intrigues "
    "at court .",
)


def run(args: argparse.Namespace) -> int:
    """Start `he-inhibitor serve` on 127.0.0.1 in a subprocess, run the mix, print and write the report.

    Each honest answer is also checked against the plain circuit (numpy, in
    the clear) of its bucket: the label must agree.
    """
    circuits, _ = load_buckets(args.circuit)
    flags = ["--memory-budget", args.memory_budget, *(["--circuit", str(args.circuit)] if args.circuit else [])]
    details: list[dict] = []
    with ServeProcess(flags) as server:
        url = server.url
        embedder = Embedder.load(SHIPPED_CLIENT)
        with Client(url, retry_s=600) as attacker_client:
            ammo = prepare(attacker_client, lambda c: c.embed(SENTENCES[0], embedder)[:2], None)

        def honest(i: int) -> float:
            text = SENTENCES[i % len(SENTENCES)]
            with Client(url, retry_s=1200) as c:
                c.generate_keys()
                t0 = time.perf_counter()
                pred = c.classify(text, embedder)
                seconds = time.perf_counter() - t0
                x0, n, _ = c.embed(text, embedder)
            want = make_executor(Mode.PLAIN, circuits[pred.bucket]).run(x0, (np.arange(pred.bucket) < n).astype(float)).logits
            details.append({"tokens": embedder.n_tokens(text), "bucket": pred.bucket, "truncated": pred.truncated,
                            "label": pred.label, "seconds": seconds, "round_trips": pred.traffic.round_trips,
                            "max_abs_error_vs_plain": float(np.abs(pred.logits - want).max())})
            if pred.label != c.signature.labels[int(np.argmax(want))]:
                raise AssertionError(f"encrypted label {pred.label} disagrees with the plain circuit on {text!r}")
            return seconds

        report = run_mix(url, honest, args.honest, ammo, args.attackers, server_pid=server.pid)
    out = {**report.to_json(), "honest_sentences": details}
    print(json.dumps(out, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if not report.honest_failures and not report.server_errors else 1
