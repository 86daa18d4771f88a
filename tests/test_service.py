"""Round trips through a real uvicorn server on 127.0.0.1 with a compiled (random-weight) student.

Text -> tokenizer -> numpy embeddings -> encryption -> HTTP (with the
circuit's refresh round trips) -> decryption agrees with the plain executor;
key files are owner-only; nothing the server receives or stores holds the
secret key.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import torch

import httpx
import tenseal.sealapi as seal
from safetensors.numpy import save_file

from he_inhibitor.ckks import serial
from he_inhibitor.circuit.bundle import save_bundle
from he_inhibitor.circuit.executors import PlainExecutor
from he_inhibitor.circuit.bundle import plan_bucket
from he_inhibitor.circuit.params import Precision
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig
from he_inhibitor.service.client import Client
from he_inhibitor.service.console import Progress
from he_inhibitor.service.demo import run_demo
from he_inhibitor.embed import Embedder
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.server import create_app
from he_inhibitor.vocab import make_tokenizer

T = 8
WORDS = ["a", "good", "bad", "movie", "film", "great", "awful", "not", "very", "fun", "dull", "plot"]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A 1-layer random student with degree-2 fits, compiled for N = 8192 (a bucket: one circuit per
    attention plan, compiled as sentences need them), and its client bundle."""
    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS
    cfg = StudentConfig(vocab_size=len(vocab), max_len=16, d_model=16, n_heads=4, d_ff=32, n_layers=1,
                        dropout=0.0, abs_poly=PolySpec(2), relu_poly=PolySpec(2))
    model = Student(cfg).double().eval().set_form("poly")
    plan, _, _ = plan_bucket(from_torch(model), T, range(1, T + 1), n=8192, precision=Precision(30, 40, 60))
    bundle = tmp_path_factory.mktemp("client")
    make_tokenizer(vocab).save(str(bundle / "tokenizer.json"))
    save_file({"word.weight": model.word.weight.detach().numpy(), "pos.weight": model.pos.weight.detach().numpy()},
              str(bundle / "model.safetensors"))
    return model, plan, Embedder.load(bundle), bundle


@pytest.fixture(scope="module")
def served(student):
    _, plan, _, _ = student
    app = create_app(plan, plan.params)
    with LocalServer(app) as server:
        yield app, server


def test_embedder_equals_the_student(student):
    model, _, embedder, _ = student
    x0, n = embedder.embed("a very good film", T)
    ids = embedder.tokenizer.encode("a very good film").ids
    tok = torch.tensor([ids + [0] * (T - len(ids))])
    m = (torch.arange(T) < len(ids)).double()[None]
    with torch.no_grad():
        want = model.embed(tok, m)[0].numpy()
    assert n == len(ids) == 6
    np.testing.assert_allclose(x0, want, rtol=0, atol=0)


def test_text_round_trip_matches_plain_and_nothing_secret_travels(student, served, tmp_path):
    _, plan, embedder, _ = student
    app, server = served
    bodies: list[bytes] = []
    with Client(server.url) as client:
        client.http.event_hooks["request"] = [lambda req: bodies.append(req.read())]
        client.generate_keys()
        sk = client.keys.secret.to_bytes()
        for text in ("a very good film", "not fun , dull plot"):
            pred = client.classify(text, embedder)
            x0, n = embedder.embed(text, T)
            plain = PlainExecutor(plan.plan_for(n).compiled).run(x0, (np.arange(T) < n).astype(float)).logits
            np.testing.assert_allclose(pred.logits, plain, atol=1e-2)
            assert pred.label == ("negative", "positive")[int(np.argmax(plain))]
            t = pred.traffic
            assert t.round_trips == 1 + app.state.signature.bucket(n).refreshes_for(n)
            assert min(t.client_s, t.network_s, t.server_s) > 0 and t.bytes_up > 0 and t.bytes_down > 0
    # nothing the server received contains the secret key, in any form
    assert bodies and not any(sk in b for b in bodies)
    assert not any(_holds_secret_key(b, plan) for b in bodies)
    # nothing it stores does either: the loaded relin and Galois keys only, not even the wire bytes
    for public in app.state.registry.stored():
        assert public.blob == b""  # to_bytes() rebuilds them from the keys, for Ray workers only
        assert type(public.relin_keys) is seal.RelinKeys and type(public.galois_keys) is seal.GaloisKeys
        assert {type(v) for v in vars(public).values()} & {seal.SecretKey} == set()


@pytest.mark.parametrize("weight_cache", [3 << 30, 0])
def test_two_clients_share_the_servers_weight_plaintexts(student, weight_cache):
    """The weights and key masks a server encodes for one client serve the next client's keys: the
    second sentence encodes nothing (health shows no new miss), and both agree with plain. With
    `weight_cache` 0 nothing is kept and the answers are the same."""
    from he_inhibitor.service.protocol import Limits

    _, plan, embedder, _ = student
    app = create_app(plan, plan.params, limits=Limits(weight_cache=weight_cache))
    text = "not fun , dull plot"
    x0, n = embedder.embed(text, T)
    plain = PlainExecutor(plan.plan_for(n).compiled).run(x0, (np.arange(T) < n).astype(float)).logits
    stats = []
    with LocalServer(app) as server:
        for _ in range(2):
            with Client(server.url) as client:
                client.generate_keys()
                np.testing.assert_allclose(client.classify(text, embedder).logits, plain, atol=1e-2)
            stats.append(httpx.get(server.url + "/v1/health").json()["weight_cache"])
    if not weight_cache:
        assert stats == [None, None]
        return
    first, second = stats
    assert first["plaintexts"] > 0 and first["bytes"] <= weight_cache
    assert (second["plaintexts"], second["misses"], second["bytes"]) == (first["plaintexts"], first["misses"],
                                                                         first["bytes"])
    assert second["hits"] >= first["plaintexts"]


def _holds_secret_key(body: bytes, plan) -> bool:
    """Does any SEAL object inside the body (context parts or frames) load as a secret key?"""
    from he_inhibitor.ckks import make_context

    context = make_context(plan.params)
    blobs, pos = [], 0
    while (i := body.find(b"\x5e\xa1", pos)) >= 0:
        size = struct.unpack_from("<Q", body, i + 8)[0] if i + 16 <= len(body) else 0
        blobs.append(body[i : i + size] if 16 <= size <= len(body) - i else b"")
        pos = i + 2
    for blob in blobs:
        try:
            serial.load(seal.SecretKey(), blob, context)
            return True
        except (RuntimeError, ValueError):
            continue
    return False


def test_key_files_are_owner_only_and_reload(student, served, tmp_path):
    _, plan, embedder, _ = student
    app, server = served
    with Client(server.url) as first, Client(server.url) as second:
        first.generate_keys()
        path = first.save_keys(tmp_path / "client.keys")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        second.load_keys(path)
        assert second.keys.public_blob == first.keys.public_blob
        assert second.register_keys() == first.register_keys()  # same context, same id: idempotent
        ct = first.encrypt(np.ones((T, 16)))[0]
        got = second.keys.decrypt(serial.ciphertext_from_bytes(ct, second.keys.context))
        assert abs(got[0] - 1.0) < 1e-4
    os.chmod(path, 0o644)
    with Client(server.url) as third, pytest.raises(PermissionError):
        third.load_keys(path)


def test_health_signature_and_openapi(served):
    app, server = served
    import httpx

    assert httpx.get(server.url + "/v1/health").json()["status"] == "ok"
    sig = httpx.get(server.url + "/v1/signature").json()
    assert [b["T"] for b in sig["buckets"]] == [T] and sig["labels"] == ["negative", "positive"]
    assert sig["buckets"][0]["refreshes"] >= 1 and sig["rotation_steps"] == sig["buckets"][0]["rotation_steps"]
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/health", "/v1/signature", "/v1/keys", "/v1/evaluate", "/v1/jobs/{job_id}"} <= set(spec["paths"])
    body = spec["paths"]["/v1/evaluate"]["post"]["requestBody"]["content"]
    assert body["application/octet-stream"]["schema"]["format"] == "binary"


def test_demo_prints_agreeing_table(student):
    _, plan, embedder, _ = student
    out, log = io.StringIO(), io.StringIO()
    rows = run_demo(plan, plan.params, embedder, ["a very good film", "a " * 20], Progress(log), out)
    for row in rows:
        assert row["label"] == row["plain_label"] and row["max_abs_error"] < 1e-2
    assert not rows[0]["truncated"] and rows[0]["tokens"] == 6
    assert rows[1]["truncated"] and rows[1]["tokens"] == T  # 22 word pieces: cut to the largest bucket, answered
    text = out.getvalue()
    assert "agree" in text and "yes" in text and "8 (truncated)" in text
    assert "generating keys" in log.getvalue() and "refresh round trip" in log.getvalue()


def test_client_modules_do_not_import_torch():
    code = ("import sys, he_inhibitor.service.client, he_inhibitor.service.query, he_inhibitor.embed; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_serve_and_query_commands(student, tmp_path):
    """`serve` loads every bucket of a bundle: a sentence per bucket, and one beyond the largest, truncated."""
    model, _, embedder, client_dir = student
    plans = save_bundle(from_torch(model), (T, 2 * T), tmp_path / "bundle", n=8192, precision=Precision(30, 40, 60))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "he_inhibitor.cli"]
    server = subprocess.Popen([*cli, "serve", "--circuit", str(tmp_path / "bundle"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        query = [*cli, "query", "--url", url, "--client", str(client_dir), "--keys", str(tmp_path / "k"),
                 "--json", "a very good film", "a very very good film , not a dull plot", "a " * 20]
        first = json.loads(subprocess.run(query, capture_output=True, check=True, timeout=180).stdout)
        second = json.loads(subprocess.run(query, capture_output=True, check=True, timeout=180).stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert first["key_bytes_sent"] > 0 and second["key_bytes_sent"] == 0  # the server still held the keys
    assert [(r["bucket"], r["truncated"]) for r in first["results"]] == [(T, False), (2 * T, False), (2 * T, True)]
    for res in first["results"] + second["results"]:
        Tb = res["bucket"]
        x0, n = embedder.embed(res["text"], Tb, truncate=res["truncated"])
        want = PlainExecutor(plans[Tb].plan_for(n).compiled).run(x0, (np.arange(Tb) < n).astype(float)).logits
        np.testing.assert_allclose(res["logits"], want, atol=1e-2)
        assert set(res["seconds"]) == {"client", "network", "server", "total"} and res["bytes_up"] > 0


def test_bench_served_times_each_server_configuration(student, tmp_path):
    """`bench-served` through real server processes: every sentence to every configuration, labels as
    plain, and the store only where the flags keep one (its second pass over a sentence encodes nothing)."""
    model, _, _, client_dir = student
    save_bundle(from_torch(model), (T, 2 * T), tmp_path / "bundle", n=8192, precision=Precision(30, 40, 60))
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na very good film\t1\nnot fun , dull plot\t0\n"
                    "a very very good film , not a dull plot at all\t1\n")
    out = tmp_path / "served.json"
    cli = [sys.executable, "-m", "he_inhibitor.cli", "bench-served", "--circuit", str(tmp_path / "bundle"),
           "--client", str(client_dir), "--data", str(data), "--sentences", "3", "--json", str(out),
           "--config", "per request=--weight-cache 0", "--config", "kept="]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "| per request (`--weight-cache 0`) |" in done.stdout
    per_request, kept = result["configs"]["per request"], result["configs"]["kept"]
    for c in (per_request, kept):
        assert len(c["runs"]) == 3 and c["agreement"] == 1.0 and c["median_seconds"] > 0
        assert {r["T"] for r in c["runs"]} == {T, 2 * T} and set(c["warmup_seconds"]) == {str(T), str(2 * T)}
    assert per_request["weight_cache"] is None
    w = kept["weight_cache"]
    assert w["plaintexts"] == w["misses"] > 0 and w["hits"] > 0 and w["bytes"] <= w["max_bytes"]

