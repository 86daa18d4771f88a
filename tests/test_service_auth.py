"""`serve --tokens FILE`: bearer tokens, per-token quotas, and what stays open without one.

A real uvicorn server on 127.0.0.1 with the toy circuit of test_service_errors.
"""

from __future__ import annotations

import json

import httpx
import pytest

from he_inhibitor.service.auth import Tokens
from he_inhibitor.service.client import Client, ServerError
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.protocol import CONTENT_TYPE, H_KEY_ID, H_TOKENS, Limits, pack_frames
from he_inhibitor.service.server import create_app
from test_service_errors import PARAMS, plain_logits, sentence, toy_circuit

ALICE, BOB, CAROL = "alice-token-0123456789", "bob-token-0123456789ab", "carol-token-0123456789"


@pytest.fixture(scope="module")
def authed(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    path.write_text(json.dumps({"tokens": [
        {"token": ALICE, "name": "alice", "key_sets": 1, "jobs": 1, "per_minute": 3},
        {"token": BOB, "name": "bob", "key_sets": 2, "jobs": 2, "per_minute": 30},
        {"token": CAROL, "name": "carol", "key_sets": 1, "jobs": 2, "per_minute": 2}]}))
    compiled = toy_circuit()
    app = create_app(compiled, PARAMS, limits=Limits(evaluations_per_minute=100), tokens=Tokens.load(path))
    with LocalServer(app) as server:
        yield compiled, app, server


def test_without_a_token_only_basic_health_answers(authed):
    _, _, server = authed
    assert httpx.get(server.url + "/v1/health").json() == {"status": "ok"}
    for path in ("/v1/signature", "/openapi.json", "/docs"):
        r = httpx.get(server.url + path)
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized"), path
    r = httpx.post(server.url + "/v1/keys", content=b"x", headers={"content-type": CONTENT_TYPE,
                                                                    "authorization": "Bearer wrong-token-000000"})
    assert r.status_code == 401
    bob = {"authorization": f"Bearer {BOB}"}
    detailed = httpx.get(server.url + "/v1/health", headers=bob).json()
    # a key set is charged what SEAL holds: (relin + 1 Galois key) x 4 data primes x 2 x N x 5 primes x 8 bytes
    assert detailed["charge_per_key_set"] == 2 * 4 * 2 * 8192 * 5 * 8 and "memory_used" in detailed
    assert "/v1/evaluate" in httpx.get(server.url + "/openapi.json", headers=bob).json()["paths"]
    assert httpx.get(server.url + "/docs", headers=bob).status_code == 200


def test_quotas_per_token(authed):
    compiled, _, server = authed
    with Client(server.url, token=ALICE, retry_s=0) as alice, Client(server.url, token=ALICE, retry_s=0) as again:
        alice.generate_keys()
        x0, n = sentence(1)
        got = alice.classify_embedded(x0, n).logits
        assert abs(got - plain_logits(compiled, x0, n)).max() < 1e-3
        again.generate_keys()
        with pytest.raises(ServerError) as err:  # a second key set: over alice's key_sets = 1
            again.register_keys()
        assert (err.value.status, err.value.code) == (429, "over_quota")
        hdr = {"content-type": CONTENT_TYPE, "authorization": f"Bearer {ALICE}", H_KEY_ID: alice.key_id,
               H_TOKENS: str(n)}
        first = httpx.post(server.url + "/v1/evaluate", content=pack_frames(alice.encrypt(x0)), headers=hdr)
        assert first.headers["X-Status"] == "refresh"  # paused: alice's one job
        second = httpx.post(server.url + "/v1/evaluate", content=pack_frames(alice.encrypt(x0)), headers=hdr)
        assert (second.status_code, second.json()["error"]) == (429, "over_quota")  # jobs = 1
        # bob cannot continue alice's job, and it is still there for alice afterwards
        stolen = httpx.post(server.url + f"/v1/jobs/{first.headers['X-Job']}", content=pack_frames([b""]),
                            headers={"content-type": CONTENT_TYPE, "authorization": f"Bearer {BOB}"})
        assert stolen.status_code == 404
        bad = httpx.post(server.url + f"/v1/jobs/{first.headers['X-Job']}", content=b"garbage",
                         headers={"content-type": CONTENT_TYPE, "authorization": f"Bearer {ALICE}"})
        assert bad.status_code == 400  # reached alice's job: it was parked again after bob's attempt


def test_rate_per_token(authed):
    _, _, server = authed
    with Client(server.url, token=CAROL, retry_s=0) as carol:
        carol.generate_keys()
        x0, n = sentence(2)
        for _ in range(2):
            carol.classify_embedded(x0, n)
        hdr = {"content-type": CONTENT_TYPE, "authorization": f"Bearer {CAROL}", H_KEY_ID: carol.key_id,
               H_TOKENS: str(n)}
        third = httpx.post(server.url + "/v1/evaluate", content=pack_frames(carol.encrypt(x0)), headers=hdr)
        assert (third.status_code, third.json()["error"]) == (429, "over_quota")
        assert "2 evaluations a minute" in third.json()["detail"] and 1 <= int(third.headers["retry-after"]) <= 60


def test_tokens_file_is_checked(tmp_path):
    bad = tmp_path / "t.json"
    for content in ({"tokens": []}, {"tokens": [{"token": "short", "name": "a"}]},
                    {"tokens": [{"token": ALICE, "name": "a", "jobs": 0}]},
                    {"tokens": [{"token": ALICE, "name": "a"}, {"token": BOB, "name": "a"}]}):
        bad.write_text(json.dumps(content))
        with pytest.raises(ValueError):
            Tokens.load(bad)
