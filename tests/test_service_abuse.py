"""Load and abuse: honest clients are all served correctly while attackers run every known attack.

A real uvicorn server (LocalServer, the settings of `he-inhibitor serve`) on
127.0.0.1 with the toy circuit of test_service_errors (one refresh, so every
honest evaluation pauses in the job table among abandoned ones) and small
limits, so that each bound is reached: a 48 MB memory budget, 2 SEAL
threads, 2 evaluations per key set, 1 s body and head timeouts, 3 s for a
paused evaluation. Attacker threads loop over service.abuse.ATTACKS the
whole time. Nothing may answer 5xx other than 503 (which says: retry), no
honest sentence may be lost or wrong, health must answer within 1 s
throughout, and the server's accounted memory must stay within its budget.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from he_inhibitor.service.abuse import ATTACKS, prepare, run_mix
from he_inhibitor.service.client import Client, ServerError
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.protocol import H_KEY_ID, H_TOKENS, Limits, pack_frames
from he_inhibitor.service.server import create_app
from test_service_errors import PARAMS, T, plain_logits, sentence, toy_circuit

LIMITS = Limits(memory_budget=48 << 20, max_keys=8, max_jobs=16, max_jobs_per_key=2, job_ttl_s=3.0,
                max_concurrent=2, max_queue=8, max_uploads=4, header_timeout_s=1.0, body_idle_timeout_s=1.0,
                body_timeout_s=5.0, evaluations_per_minute=600)
HONEST, SENTENCES, ATTACKERS = 4, 3, 6
WORKING_SET = 32 << 20


@pytest.fixture()
def toy_server():
    compiled = toy_circuit()
    app = create_app(compiled, PARAMS, limits=LIMITS)
    with LocalServer(app) as server:
        yield compiled, app, server


_SERVE = """
import sys
sys.path.insert(0, {tests!r})
import uvicorn
from he_inhibitor.service.server import create_app, server_config
from test_service_abuse import LIMITS
from test_service_errors import PARAMS, toy_circuit
app = create_app(toy_circuit(), PARAMS, limits=LIMITS)
uvicorn.Server(server_config(app, host="127.0.0.1", port={port}, log_level="warning")).run()
"""


@pytest.fixture()
def toy_process():
    """The toy server in its own process, as deployed: its GIL, its RSS, nothing of the clients'."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code = _SERVE.format(tests=str(Path(__file__).parent), port=port)
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_honest_clients_are_served_through_the_abuse_mix(toy_process):
    url, pid = toy_process
    compiled = toy_circuit()

    def honest(i: int) -> float:
        t0 = time.perf_counter()
        with Client(url, retry_s=120) as client:
            client.generate_keys()
            for j in range(SENTENCES):
                x0, n = sentence(1000 * i + j, n_tokens=1 + (i + j) % T)
                got = client.classify_embedded(x0, n).logits
                np.testing.assert_allclose(got, plain_logits(compiled, x0, n), atol=1e-3)
        return time.perf_counter() - t0

    with Client(url) as attacker:
        ammo = prepare(attacker, lambda c: sentence(5), None)
    report = run_mix(url, honest, HONEST, ammo, ATTACKERS, server_pid=pid, health_timeout_s=5.0)
    out = report.to_json()
    assert report.honest_failures == [] and len(report.honest_seconds) == HONEST, out
    assert report.server_errors == 0, out
    assert report.health_failures == 0 and max(report.health_seconds) < 1.0, out
    assert 0 < report.memory_used_max <= LIMITS.memory_budget, out
    # RSS: the budget bounds client-driven state; the process's own working set (two SEAL threads' malloc
    # arenas, per-operation plaintexts, uvicorn buffers) comes on top, WORKING_SET at most
    assert report.peak_rss_bytes - report.start_rss_bytes < LIMITS.memory_budget + WORKING_SET, out
    ran = {name for name, outcomes in report.attacks.items() if outcomes}
    assert ran == set(ATTACKS), out  # every attack was tried at least once while honest clients worked
    for name in ("oversized", "streamed", "many_parts", "non_canonical"):
        assert set(report.attacks[name]) <= {"400", "413", "422", "503"}, (name, out)
    assert set(report.attacks["stalled"]) <= {"408", "503"}, out
    assert set(report.attacks["slow_head"]) == {"closed"}, out
    # once the mix is over, abandoned and hung-up evaluations are gone: expired or cancelled
    deadline = time.monotonic() + LIMITS.job_ttl_s + 5
    while time.monotonic() < deadline:
        health = httpx.get(url + "/v1/health").json()
        if health["active_jobs"] == 0:
            break
        time.sleep(0.2)
    assert health["active_jobs"] == 0 and health["paused_jobs"] == 0, health


def test_reregistering_the_same_keys_differently_gives_one_id(toy_server):
    _, app, server = toy_server
    with Client(server.url) as client:
        client.generate_keys()
        kid = client.register_keys()
        blob = client.keys.public_blob
        again = httpx.post(server.url + "/v1/keys", content=blob, headers={"content-type": "application/octet-stream"})
        assert again.status_code == 201 and again.json()["key_id"] == kid
        assert app.state.registry.ids().count(kid) == 1 and len(app.state.registry) == 1


def test_a_hung_up_evaluation_is_cancelled_and_its_job_dropped(toy_server):
    _, app, server = toy_server
    with Client(server.url) as client:
        ammo = prepare(client, lambda c: sentence(6), None)
    for _ in range(3):
        ATTACKS["hangup"](ammo)
    deadline = time.monotonic() + 10
    while (app.state.jobs.active or app.state.pool.pending) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.jobs.active == 0 and len(app.state.jobs) == 0  # no orphan job, long before the 3 s TTL


def test_a_bad_refresh_keeps_the_original_deadline(toy_server):
    _, app, server = toy_server
    with Client(server.url) as client:
        client.generate_keys()
        client.register_keys()
        x0, n = sentence(8)
        r = httpx.post(server.url + "/v1/evaluate", content=pack_frames(client.encrypt(x0)),
                       headers={"content-type": "application/octet-stream", H_KEY_ID: client.key_id,
                                H_TOKENS: str(n)})
        job = r.headers["X-Job"]
        t_end = time.monotonic() + LIMITS.job_ttl_s
        while time.monotonic() < t_end + 0.5:  # keep posting bad bodies past the original deadline
            bad = httpx.post(server.url + f"/v1/jobs/{job}", content=b"garbage",
                             headers={"content-type": "application/octet-stream"})
            if bad.status_code == 404:
                break
            time.sleep(0.2)
        assert bad.status_code == 404 and time.monotonic() < t_end + 1.0  # expired on time, not re-armed


def test_refreshes_beyond_the_signature_are_refused_by_the_client(toy_server):
    """A server that always answers 'refresh' gets no more round trips than the circuit has."""
    _, app, server = toy_server
    with Client(server.url) as client:
        client.generate_keys()
        client.register_keys()
        x0, n = sentence(9)
        calls = []
        real_post = client._post

        def always_refresh(path, body, headers, traffic):
            r = real_post(path, body, headers, traffic) if not calls else calls[0]
            calls.append(r)
            return httpx.Response(200, headers={"X-Status": "refresh", "X-Job": r.headers.get("X-Job", "x")},
                                  content=r.content if r.headers.get("X-Status") == "refresh" else calls[0].content)

        client._post = always_refresh
        with pytest.raises(ServerError, match="refresh 2"):
            client.classify_embedded(x0, n)
        assert len(calls) == 2  # the evaluation and the circuit's one refresh, then it stopped


def test_the_secret_key_never_goes_through_a_temporary_file(toy_server, tmp_path, monkeypatch):
    """Saving, loading and using keys: the secret key is serialized in memory only.

    he_inhibitor.ckks.serial goes through named temporary files (fine for
    public keys and ciphertexts); every object it handles is recorded, and
    none may be a secret key. The only file written with it is the key file.
    """
    import tempfile

    import tenseal.sealapi as seal

    from he_inhibitor.ckks import serial

    _, _, server = toy_server
    through_files: list[type] = []
    real_to_bytes, real_load, real_mkstemp = serial.to_bytes, serial.load, tempfile.mkstemp
    monkeypatch.setattr(serial, "to_bytes", lambda obj: through_files.append(type(obj)) or real_to_bytes(obj))
    monkeypatch.setattr(serial, "load", lambda obj, *a: through_files.append(type(obj)) or real_load(obj, *a))
    beside: list[str] = []

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        beside.append(path)
        return fd, path

    with Client(server.url) as first, Client(server.url) as second:
        first.generate_keys()
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        first.save_keys(tmp_path / "keys")
        monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
        second.load_keys(tmp_path / "keys")
        x0, n = sentence(11)
        second.classify_embedded(x0, n)
    assert through_files and seal.SecretKey not in through_files, through_files
    assert len(beside) == 1 and beside[0].startswith(str(tmp_path))  # the key file's atomic write


def test_the_refresh_mask_is_as_wide_as_the_last_level_allows(toy_server):
    """What the client decrypts at a refresh: activation + r, r uniform in [-R, R], R = q_0 / (4 scale).

    With the toy chain (q_0 a 40-bit prime, scale 2^30) R is about 256; the
    activations here are below 2, so the decrypted slots spread over about
    [-R, R] and no wider.
    """
    from he_inhibitor.ckks import sealio
    from he_inhibitor.service.protocol import unpack_frames

    _, app, server = toy_server
    with Client(server.url) as client:
        client.generate_keys()
        client.register_keys()
        x0, n = sentence(12)
        r = httpx.post(server.url + "/v1/evaluate", content=pack_frames(client.encrypt(x0)),
                       headers={"content-type": "application/octet-stream", H_KEY_ID: client.key_id,
                                H_TOKENS: str(n)})
        assert r.headers["X-Status"] == "refresh"
        (masked,) = unpack_frames(r.content, 1)
        ct = sealio.ciphertext(masked, client.keys.context)
        values = client.keys.decrypt(ct)
    q0 = client.keys.context.last_context_data().parms().coeff_modulus()[0].value()
    R = q0 / (4 * ct.scale)
    assert 200 < R < 300
    assert 0.95 * R < np.abs(values).max() < R + 2
    assert abs(values.mean()) < 0.05 * R and 0.5 < values.std() / (R / np.sqrt(3)) < 1.5
