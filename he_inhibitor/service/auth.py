"""Optional bearer tokens with per-token quotas (`he-inhibitor serve --tokens FILE`).

The file is JSON, one entry per client:

    {"tokens": [{"token": "<secret>", "name": "alice", "key_sets": 2, "jobs": 2, "per_minute": 30}]}

`key_sets`: key sets registered by this token held at once; `jobs`:
evaluations running or paused at once; `per_minute`: evaluations started per
minute. With tokens, every endpoint except the basic `GET /v1/health` needs
`Authorization: Bearer <token>`, including /docs and /openapi.json (they
describe the attack surface) and the detailed health report. Tokens are kept
only as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path

from he_inhibitor.service.registry import RateLimit
from he_inhibitor.service.validate import RequestError


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


@dataclass
class Principal:
    """One token's identity and quotas."""

    name: str
    key_sets: int
    jobs: int
    rate: RateLimit = field(repr=False)


class Tokens:
    """Digest -> Principal; `check(header)` returns the caller or raises Unauthorized."""

    def __init__(self, principals: dict[bytes, Principal]) -> None:
        self._by_digest = principals

    @classmethod
    def load(cls, path: Path) -> "Tokens":
        """Parse the tokens file; ValueError on a malformed file, a short or repeated token or name."""
        data = json.loads(Path(path).read_text())
        entries = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: expected {{\"tokens\": [{{\"token\": ..., \"name\": ...}}, ...]}}")
        out: dict[bytes, Principal] = {}
        names: set[str] = set()
        for e in entries:
            token, name = e.get("token"), e.get("name")
            if not isinstance(token, str) or len(token) < 16 or not isinstance(name, str) or name in names:
                raise ValueError(f"{path}: each entry needs a token of at least 16 characters and a unique name")
            quotas = {k: e.get(k, d) for k, d in (("key_sets", 2), ("jobs", 2), ("per_minute", 30))}
            if not all(type(v) is int and v >= 1 for v in quotas.values()):
                raise ValueError(f"{path}: quotas for {name!r} must be positive integers, got {quotas}")
            names.add(name)
            out[_digest(token)] = Principal(name, quotas["key_sets"], quotas["jobs"], RateLimit(quotas["per_minute"]))
        return cls(out)

    def check(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send Authorization: Bearer <token>")
        digest = _digest(token.strip())
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthorized("unknown token")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
