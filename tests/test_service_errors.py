"""Every bad request gets its 4xx, nothing of it is kept, and the next good request still succeeds.

The circuit here is a small one built directly with the circuit IR (two
plaintext products with a client-aided refresh between them, a rotation, a
bias), so a good encrypted request costs milliseconds and can follow every
bad one through a real uvicorn server.
"""

from __future__ import annotations

import struct
import time

import httpx
import numpy as np
import pytest

from he_inhibitor.ckks import CkksParams, keygen, serial
from he_inhibitor.circuit.builder import Builder
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.executors import PlainExecutor
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.service.client import Client
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.protocol import CONTENT_TYPE, H_KEY_ID, H_TOKENS, Limits, pack_frames, unpack_frames
from he_inhibitor.service.server import create_app

T, D, N = 8, 4, 8192
PARAMS = CkksParams.for_depth(3, N, 30, 40, 60)


def toy_circuit(seed: int = 0) -> Compiled:
    """x -> (x * w1) -> refresh -> (. * w2) -> . + rot(., 1) -> + bias; logits at slots 0 and T."""
    rng = np.random.default_rng(seed)
    layout = Layout.natural(T, N // 2, D)
    b = Builder(N // 2, max_level=1)
    (x,) = [b.input("x0")]
    y = b.rescale(b.mul_plain(x, rng.uniform(-1, 1, N // 2)))
    z = b.rescale(b.mul_plain(y, rng.uniform(-1, 1, N // 2)))  # headroom: refreshes y first
    z = b.add(z, b.rotate(z, 1))
    b.output(b.add_plain(z, rng.uniform(-1, 1, N // 2)), "logits")
    return Compiled(b.circuit, layout, np.zeros((D, 2)), 1, 1)


def sentence(seed: int, n_tokens: int = 5) -> tuple[np.ndarray, int]:
    x0 = np.random.default_rng(seed).uniform(-1, 1, (T, D))
    x0[n_tokens:] = 0.0
    return x0, n_tokens


def plain_logits(compiled: Compiled, x0: np.ndarray, n: int) -> np.ndarray:
    return PlainExecutor(compiled).run(x0, (np.arange(T) < n).astype(float)).logits


@pytest.fixture(scope="module")
def toy():
    compiled = toy_circuit()
    app = create_app(compiled, PARAMS, limits=Limits(max_keys=4))
    with LocalServer(app) as server, Client(server.url) as client:
        client.generate_keys()
        client.register_keys()
        yield compiled, app, server, client


def good_request_succeeds(compiled: Compiled, client: Client, seed: int = 7) -> None:
    x0, n = sentence(seed)
    pred = client.classify_embedded(x0, n)
    np.testing.assert_allclose(pred.logits, plain_logits(compiled, x0, n), atol=1e-3)
    assert pred.traffic.round_trips == 2  # the evaluation and one refresh


def test_toy_circuit_has_a_refresh(toy):
    compiled, app, _, _ = toy
    (sig,) = app.state.signature.buckets
    assert sig.refreshes == 1 and sig.rotation_steps == (1,) and sig.logit_slots == (0, T)


def _post(url: str, path: str, body: bytes, headers: dict | None = None, content_type: str = CONTENT_TYPE):
    return httpx.post(url + path, content=body, headers={"content-type": content_type, **(headers or {})}, timeout=60)


def _bad_contexts(public_blob: bytes, secret: bytes) -> dict[str, tuple[bytes, int, str]]:
    other_chain = keygen(CkksParams.for_depth(2, N, 30, 40, 60), [1]).public_blob
    no_galois = keygen(PARAMS, []).public_blob
    extra_part = public_blob + struct.pack("<Q", len(secret)) + secret
    header_len = struct.unpack_from("<Q", public_blob, 8)[0]
    header = public_blob[16 : 16 + header_len].replace(b"}", b', "secret_key": "AAAA"}')
    header_secret = public_blob[:8] + struct.pack("<Q", len(header)) + header + public_blob[16 + header_len :]

    def with_header(text: bytes) -> bytes:
        return public_blob[:8] + struct.pack("<Q", len(text)) + text + public_blob[16 + header_len :]

    params = b'"poly_modulus_degree": 8192, "coeff_bits": [40, 30, 30, 30, 60], "scale_bits": 30'
    more_keys = keygen(PARAMS, [1, 2]).public_blob  # Galois keys for steps the header does not declare
    more_header = struct.unpack_from("<Q", more_keys, 8)[0]
    extra_galois_keys = public_blob[: 16 + header_len] + more_keys[16 + more_header :]
    relin_len = struct.unpack_from("<Q", public_blob, 16 + header_len)[0]
    secret_as_relin = (public_blob[: 16 + header_len] + struct.pack("<Q", len(secret)) + secret
                       + public_blob[16 + header_len + 8 + relin_len :])
    return {
        "garbage": (b"hello", 400, "malformed"),
        "truncated": (public_blob[: len(public_blob) // 2], 400, "malformed"),
        "trailing": (public_blob + b"\0" * 9, 400, "malformed"),
        "other chain": (other_chain, 422, "mismatch"),
        "missing Galois keys": (no_galois, 422, "mismatch"),
        "secret key as extra part": (extra_part, 400, "malformed"),  # refused from its length prefix, unread
        "duplicated steps": (with_header(b"{" + params + b', "rotation_steps": [1, 1]}'), 422, "mismatch"),
        "a step the circuit never uses": (with_header(b"{" + params + b', "rotation_steps": [1, 2]}'), 422,
                                          "mismatch"),
        "float ring degree": (with_header(b"{" + params.replace(b"8192", b"8192.9") + b', "rotation_steps": [1]}'),
                              400, "malformed"),
        "deep header": (with_header(b"{" + params + b', "rotation_steps": [[[1]]]}'), 400, "malformed"),
        "50,000-deep header": (with_header(b"[" * 50_000 + b"]" * 50_000), 400, "malformed"),
        # keys beyond the declared steps: here over the body cap; where compression lets them under it,
        # load_context counts the loaded keys (422)
        "Galois keys beyond the declared steps": (extra_galois_keys, 413, "too_large"),
        "header claims 1 GB": (public_blob[:8] + struct.pack("<Q", 1 << 30) + b"{", 400, "malformed"),
        "relin part claims 1 TB": (public_blob[: 16 + header_len] + struct.pack("<Q", 1 << 40), 400, "malformed"),
        "secret key in header": (header_secret, 403, "secret_key_refused"),
        "secret key instead of relin keys": (secret_as_relin, 403, "secret_key_refused"),
    }


def test_bad_contexts_are_refused_and_not_stored(toy, tmp_path):
    compiled, app, server, client = toy
    secret = client.keys.secret.to_bytes()
    cases = _bad_contexts(client.keys.public_blob, secret)
    cases["client key file"] = (client.save_keys(tmp_path / "keys").read_bytes(), 403, "secret_key_refused")
    cases["over the size limit"] = (b"\0" * (32 << 20), 413, "too_large")
    before = app.state.registry.ids()
    for name, (body, status, code) in cases.items():
        r = _post(server.url, "/v1/keys", body)
        assert (r.status_code, r.json()["error"]) == (status, code), name
        assert app.state.registry.ids() == before, name
        good_request_succeeds(compiled, client)
    r = _post(server.url, "/v1/keys", client.keys.public_blob, content_type="application/json")
    assert r.status_code == 415
    good_request_succeeds(compiled, client)


def test_bad_evaluations_get_4xx(toy):
    compiled, app, server, client = toy
    (sig,) = app.state.signature.buckets
    x0, n = sentence(3)
    good = client.encrypt(x0)
    keys = client.keys
    corrupt = bytearray(good[0])
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = bytes(64)
    other = keygen(CkksParams.for_depth(2, N, 30, 40, 60)).encrypt_bytes(np.zeros(4), 2)
    low = keys.encrypt_bytes(np.zeros(4), sig.input_level - 1)
    hdr = {H_KEY_ID: client.key_id, H_TOKENS: str(n)}
    cases = {
        "unknown key id": (pack_frames(good), {**hdr, H_KEY_ID: "0" * 32}, 404, "unknown_key_id"),
        "missing X-Tokens": (pack_frames(good), {H_KEY_ID: client.key_id}, 400, "malformed"),
        "too many tokens": (pack_frames(good), {**hdr, H_TOKENS: str(T + 1)}, 400, "malformed"),
        "not frames": (b"garbage", hdr, 400, "malformed"),
        "wrong frame count": (pack_frames(good * 2), hdr, 400, "malformed"),
        "not SEAL": (pack_frames([b"\x5e\xa1" + b"\0" * 30]), hdr, 400, "malformed"),
        "corrupted ciphertext": (pack_frames([bytes(corrupt)]), hdr, 400, "malformed"),
        "other parameters": (pack_frames([other]), hdr, 400, "malformed"),
        "wrong level": (pack_frames([low]), hdr, 422, "mismatch"),
        "too large": (b"\0" * (sig.max_ciphertext_bytes * 2), hdr, 413, "too_large"),
    }
    for name, (body, headers, status, code) in cases.items():
        r = _post(server.url, "/v1/evaluate", body, headers)
        assert (r.status_code, r.json()["error"]) == (status, code), name
        good_request_succeeds(compiled, client)
    assert len(app.state.jobs) == 0


def test_bad_refresh_keeps_the_evaluation(toy):
    compiled, app, server, client = toy
    x0, n = sentence(4)
    r = _post(server.url, "/v1/evaluate", pack_frames(client.encrypt(x0)), {H_KEY_ID: client.key_id, H_TOKENS: str(n)})
    assert r.status_code == 200 and r.headers["X-Status"] == "refresh"
    job = r.headers["X-Job"]
    assert _post(server.url, "/v1/jobs/nope", pack_frames([b""])).status_code == 404
    bad = _post(server.url, f"/v1/jobs/{job}", b"garbage")
    assert (bad.status_code, bad.json()["error"]) == (400, "malformed")
    good_request_succeeds(compiled, client)
    (masked,) = unpack_frames(r.content, 1)
    keys = client.keys
    values = keys.decrypt(serial.ciphertext_from_bytes(masked, keys.context))
    fresh = keys.encrypt_bytes(values, app.state.signature.buckets[0].input_level)
    done = _post(server.url, f"/v1/jobs/{job}", pack_frames([fresh]))
    assert done.headers["X-Status"] == "done"
    (out,) = unpack_frames(done.content, 1)
    got = keys.decrypt(serial.ciphertext_from_bytes(out, keys.context))[[0, T]]
    np.testing.assert_allclose(got, plain_logits(compiled, x0, n), atol=1e-3)
    assert _post(server.url, f"/v1/jobs/{job}", pack_frames([fresh])).status_code == 404  # finished


def test_registry_is_bounded_and_clients_reregister(toy):
    compiled, app, server, client = toy
    others = [Client(server.url) for _ in range(4)]  # max_keys=4: the first client's key is evicted
    for c in others:
        c.generate_keys()
        c.register_keys()
    assert len(app.state.registry) == 4
    x0, n = sentence(5)
    r = _post(server.url, "/v1/evaluate", pack_frames(client.encrypt(x0)), {H_KEY_ID: client.key_id, H_TOKENS: str(n)})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_key_id")
    good_request_succeeds(compiled, client)  # the client registers again on its own
    for c in others:
        c.close()


def test_paused_evaluations_are_bounded_and_expire():
    compiled = toy_circuit()
    app = create_app(compiled, PARAMS, limits=Limits(max_jobs=1, job_ttl_s=1.0))
    with LocalServer(app) as server, Client(server.url) as client:
        client.generate_keys()
        client.register_keys()
        x0, n = sentence(9)
        body, hdr = pack_frames(client.encrypt(x0)), {H_KEY_ID: client.key_id, H_TOKENS: str(n)}
        first = _post(server.url, "/v1/evaluate", body, hdr)
        assert first.headers["X-Status"] == "refresh"
        busy = _post(server.url, "/v1/evaluate", body, hdr)
        assert (busy.status_code, busy.json()["error"]) == (503, "busy")
        time.sleep(1.2)
        late = _post(server.url, f"/v1/jobs/{first.headers['X-Job']}", pack_frames(client.encrypt(x0)))
        assert (late.status_code, late.json()["error"]) == (404, "unknown_job")
        good_request_succeeds(compiled, client)


def test_serve_sizes_are_parsed_and_a_negative_one_is_refused(capsys):
    """`--memory-budget` and `--weight-cache` take 4G / 512M / bytes; anything else, or below zero,
    stops the command with a message naming the value."""
    from he_inhibitor.cli import build_parser

    def parse(*argv):
        return build_parser(["serve", *argv]).parse_args(["serve", *argv])

    a = parse("--weight-cache", "2G", "--memory-budget", "512M")
    assert (a.weight_cache, a.memory_budget) == (2 << 30, 512 << 20)
    assert parse("--weight-cache", "0").weight_cache == 0
    for bad in ("-1", "-2G", "lots"):
        with pytest.raises(SystemExit):
            parse(f"--weight-cache={bad}")
        assert f"not {bad!r}" in capsys.readouterr().err
