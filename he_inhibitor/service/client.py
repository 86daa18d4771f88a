"""The client: it alone holds the secret key; the server gets public keys and ciphertexts.

The pipeline, one method each:
    fetch_signature -> generate_keys | load_keys -> register_keys
    embed (Embedder) -> encrypt -> evaluate (HTTP, incl. refresh round trips) -> decrypt
`classify` runs the whole pipeline and returns the label with its latency
split (client / network / server) and bytes up and down. A sentence runs in
the smallest token bucket that holds it; one longer than the largest bucket
is cut to it (its first T-1 word pieces and [SEP]) and flagged `truncated`.

The client trusts the server no further than the signature: it answers at
most the bucket's number of refresh round trips, and waits out 503/429
answers only as long as `retry_s`.

Key files hold the secret key, so they are written owner-only (0600)
atomically and refused on load when anyone else may read them; the secret
key is serialized in memory only (sealio: an anonymous memory file), never
through a temporary file.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from he_inhibitor.ckks import CkksParams, ClientKeys, SecretKey, keygen, make_context, sealio
from he_inhibitor.embed import Embedder
from he_inhibitor.service.protocol import (
    CONTENT_TYPE, H_JOB, H_KEY_ID, H_MAP, H_OUTPUTS, H_SERVER_SECONDS, H_STATUS, H_TOKENS, KEY_FILE_MAGIC,
    STATUS_DONE, STATUS_REFRESH, ProtocolError, ServiceSignature, Signature, container_parts, key_id_of, pack_frames,
    unpack_frames,
)


class ServerError(RuntimeError):
    """A 4xx/5xx answer, with the server's machine-readable code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


@dataclass
class Traffic:
    """What one pipeline run cost: seconds per party and bytes per direction."""

    client_s: float = 0.0
    network_s: float = 0.0
    server_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    round_trips: int = 0

    @property
    def total_s(self) -> float:
        return self.client_s + self.network_s + self.server_s


@dataclass
class Prediction:
    label: str
    confidence: float
    logits: np.ndarray
    n_tokens: int
    traffic: Traffic = field(default_factory=Traffic)
    truncated: bool = False  # the sentence was longer than the largest bucket and cut to it
    bucket: int = 0

    def to_json(self) -> dict:
        t = self.traffic
        return {"label": self.label, "confidence": self.confidence, "logits": self.logits.tolist(),
                "tokens": self.n_tokens, "truncated": self.truncated, "bucket": self.bucket, "seconds": {"client": t.client_s, "network": t.network_s,
                                                     "server": t.server_s, "total": t.total_s},
                "bytes_up": t.bytes_up, "bytes_down": t.bytes_down, "round_trips": t.round_trips}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class Client:
    """One client of one server. `token`: bearer token for servers started with --tokens; `retry_s`: how
    long in all to wait out 503/429 answers (Retry-After) per request before giving up."""

    def __init__(self, url: str, timeout_s: float = 600.0, progress: Callable[[str], None] | None = None,
                 token: str | None = None, retry_s: float = 120.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, timeout=timeout_s, headers=headers)
        self.progress = progress or (lambda msg: None)
        self.retry_s = retry_s
        self.keys: ClientKeys | None = None
        self.key_id: str | None = None
        self.context_bytes = 0
        self._signature: ServiceSignature | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------
    def _post(self, path: str, body: bytes, headers: dict[str, str], traffic: Traffic | None) -> httpx.Response:
        """POST, waiting out 503/429 (as Retry-After says) for at most retry_s; ServerError on an error answer."""
        give_up = time.monotonic() + self.retry_s
        while True:
            t0 = time.perf_counter()
            r = self.http.post(path, content=body, headers={"content-type": CONTENT_TYPE, **headers})
            wall = time.perf_counter() - t0
            wait = _retry_after(r)
            if wait is None or time.monotonic() + wait > give_up:
                break
            self.progress(f"server busy ({r.status_code}): retrying in {wait:.0f} s")
            time.sleep(wait)
        if r.status_code >= 400:
            try:
                err = r.json()
                raise ServerError(r.status_code, err["error"], err["detail"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ServerError(r.status_code, "http_error", r.text[:200]) from None
        if traffic is not None:
            server = float(r.headers.get(H_SERVER_SECONDS, 0.0))
            traffic.server_s += server
            traffic.network_s += max(wall - server, 0.0)
            traffic.bytes_up += len(body)
            traffic.bytes_down += len(r.content)
            traffic.round_trips += 1
        return r

    @property
    def signature(self) -> ServiceSignature:
        """The server's signature (every bucket), fetched once; its parameters are re-checked for 128-bit security."""
        if self._signature is None:
            r = self.http.get("/v1/signature")
            r.raise_for_status()
            self._signature = ServiceSignature.from_json(r.json())
            _ = self._signature.params  # constructing CkksParams raises InsecureParametersError on a weak set
        return self._signature

    # -- keys ---------------------------------------------------------------------------
    def generate_keys(self) -> ClientKeys:
        """Fresh keys for the circuit's parameters; Galois keys only for its rotation steps."""
        sig = self.signature
        self.progress(f"generating keys: N={sig.poly_modulus_degree}, {len(sig.coeff_bits)} primes, "
                      f"{len(sig.rotation_steps)} Galois steps")
        t0 = time.perf_counter()
        self.keys = keygen(sig.params, sig.rotation_steps)
        self.key_id = None
        self.progress(f"keys ready in {time.perf_counter() - t0:.1f} s "
                      f"({len(self.keys.public_blob) / 1e6:.1f} MB of evaluation keys)")
        return self.keys

    def save_keys(self, path: str | Path) -> Path:
        """Write secret + public keys to `path`, owner read/write only, atomically."""
        keys = self._require_keys()
        header = json.dumps({"poly_modulus_degree": keys.params.poly_modulus_degree,
                             "coeff_bits": list(keys.params.coeff_bits), "scale_bits": keys.params.scale_bits})
        data = KEY_FILE_MAGIC + pack_frames([header.encode(), sealio.to_bytes(keys.secret.key), keys.public_blob])
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)  # mkstemp creates it 0600
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path

    def load_keys(self, path: str | Path) -> ClientKeys:
        """Keys saved by save_keys; refused when the file is readable by group or others."""
        path = Path(path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path} is accessible by others (mode {oct(mode & 0o777)}); chmod 600 it")
        data = path.read_bytes()
        if not data.startswith(KEY_FILE_MAGIC):
            raise ValueError(f"{path} is not a he-inhibitor key file")
        header, sk, public = unpack_frames(data[len(KEY_FILE_MAGIC):], 3)
        h = json.loads(header)
        params = CkksParams(h["poly_modulus_degree"], tuple(h["coeff_bits"]), h["scale_bits"])
        if params != self.signature.params:
            raise ValueError(f"{path} holds keys for {params}, the server's circuit needs {self.signature.params}")
        context = make_context(params)
        self.keys = ClientKeys(params, SecretKey(sealio.secret_key(sk, context)), public, context)
        self.key_id = key_id_of(container_parts(public)[1:])  # evaluate() registers only if the server lost it
        return self.keys

    def register_keys(self) -> str:
        """Send the public context (relin + Galois keys, no secret key) once; remember the key id."""
        keys = self._require_keys()
        blob = keys.public_blob
        self.progress(f"registering {len(blob) / 1e6:.1f} MB of evaluation keys")
        r = self._post("/v1/keys", blob, {}, None)
        self.key_id, self.context_bytes = r.json()["key_id"], len(blob)
        return self.key_id

    def _require_keys(self) -> ClientKeys:
        if self.keys is None:
            raise RuntimeError("no keys: call generate_keys() or load_keys() first")
        return self.keys

    # -- the pipeline -------------------------------------------------------------------
    def bucket(self, n_tokens: int) -> Signature:
        """The bucket a sentence of n_tokens (1..the largest bucket) runs in."""
        return self.signature.bucket(n_tokens)

    def encrypt(self, x0: np.ndarray, n_tokens: int | None = None) -> list[bytes]:
        """x0 [T, d] (T: a bucket's) of n_tokens packed as that bucket's circuit for n_tokens takes it
        (x and, for the inhibitor, its arranged queries and keys), one seeded ciphertext per input.

        n_tokens defaults to the rows of x0 up to its last non-zero one (x0 is zero at padding)."""
        keys = self._require_keys()
        if n_tokens is None:
            rows = np.flatnonzero(np.abs(np.asarray(x0)).sum(axis=1))
            n_tokens = int(rows[-1]) + 1 if rows.size else 1
        b = self._bucket_of_width(x0.shape[0])
        packed = b.pack(x0, n_tokens)
        return [keys.encrypt_bytes(packed[name], b.input_level) for name in b.input_names(n_tokens)]

    def _bucket_of_width(self, T: int) -> Signature:
        for b in self.signature.buckets:
            if b.T == T:
                return b
        raise ValueError(f"the server has buckets {[b.T for b in self.signature.buckets]}, not T={T}")

    def evaluate(self, inputs: list[bytes], n_tokens: int, traffic: Traffic) -> list[bytes]:
        """Send the ciphertexts; answer at most the bucket's refresh round trips; return the output ciphertexts."""
        if self.key_id is None:
            self.register_keys()
        b = self.bucket(n_tokens)
        body = pack_frames(inputs)
        try:
            r = self._post("/v1/evaluate", body, {H_KEY_ID: self.key_id, H_TOKENS: str(n_tokens)}, traffic)
        except ServerError as err:
            if err.code != "unknown_key_id":
                raise
            self.register_keys()  # evicted from the server's bounded registry: register once more
            r = self._post("/v1/evaluate", body, {H_KEY_ID: self.key_id, H_TOKENS: str(n_tokens)}, traffic)
        refreshes = 0
        while r.headers.get(H_STATUS) == STATUS_REFRESH:
            refreshes += 1
            if refreshes > b.refreshes_for(n_tokens):
                raise ServerError(r.status_code, "protocol", f"the server asked for refresh {refreshes}; "
                                  f"the T={b.T} circuit for {n_tokens} tokens has {b.refreshes_for(n_tokens)}")
            self.progress(f"evaluating: refresh round trip {refreshes}/{b.refreshes_for(n_tokens)}")
            t0 = time.perf_counter()
            fresh = self._refresh(r, b, n_tokens)
            traffic.client_s += time.perf_counter() - t0
            r = self._post(f"/v1/jobs/{r.headers[H_JOB]}", pack_frames(fresh), {}, traffic)
        if r.headers.get(H_STATUS) != STATUS_DONE:
            raise ServerError(r.status_code, "protocol", f"unexpected status {r.headers.get(H_STATUS)!r}")
        if refreshes != b.refreshes_for(n_tokens):
            raise ServerError(r.status_code, "protocol", f"done after {refreshes} refreshes; the T={b.T} circuit "
                              f"for {n_tokens} tokens has {b.refreshes_for(n_tokens)}")
        return unpack_frames(r.content, len(b.outputs))

    def _refresh(self, r: Any, b: Signature, n_tokens: int) -> list[bytes]:
        """Decrypt the masked ciphertexts, apply each public map the server names (only this sentence's,
        arrange.py; "" for the ciphertexts themselves), encrypt the results afresh. Anything else
        is a protocol error."""
        maps = b.client_maps(n_tokens)
        try:
            names = r.headers.get(H_MAP, "").split(",")
            outputs = [int(k) for k in r.headers.get(H_OUTPUTS, "1").split(",")]
            if len(names) != len(outputs) or len(names) > len(maps) + 1:
                raise ValueError(f"{len(names)} maps and {len(outputs)} output counts")
            unknown = [name for name in names if name and name not in maps]
            if unknown:
                raise ValueError(f"maps {unknown}; this circuit has {sorted(maps) or 'none'}")
            n_in = {maps[name].n_in if name else outputs[k] for k, name in enumerate(names)}
            if len(n_in) != 1:
                raise ValueError("maps of different inputs in one refresh")
            blobs = unpack_frames(r.content, n_in.pop())
        except (ValueError, ProtocolError) as err:
            raise ServerError(r.status_code, "protocol", f"a malformed refresh request: {err}") from err
        values = [np.asarray(self.keys.decrypt(sealio.ciphertext(blob, self.keys.context))) for blob in blobs]
        fresh: list[bytes] = []
        for name, count in zip(names, outputs):
            out = maps[name].apply(values) if name else values
            if count != len(out):
                raise ServerError(r.status_code, "protocol", f"map {name or 'none'!r} gives {len(out)} "
                                  f"ciphertexts, the server asked for {count}")
            fresh += [self.keys.encrypt_bytes(v, b.input_level) for v in out]
        return fresh

    def decrypt(self, outputs: list[bytes], T: int) -> np.ndarray:
        """The logits from the decrypted output slots bucket T's signature names."""
        keys = self._require_keys()
        (out,) = outputs
        vec = keys.decrypt(sealio.ciphertext(out, keys.context))
        return vec[list(self._bucket_of_width(T).logit_slots)]

    def classify_embedded(self, x0: np.ndarray, n_tokens: int, client_s: float = 0.0,
                          truncated: bool = False) -> Prediction:
        """Encrypt -> evaluate -> decrypt for a sentence embedded at its bucket's width (x0 [T, d])."""
        traffic = Traffic(client_s=client_s)
        t0 = time.perf_counter()
        inputs = self.encrypt(x0, n_tokens)
        traffic.client_s += time.perf_counter() - t0
        outputs = self.evaluate(inputs, n_tokens, traffic)
        t0 = time.perf_counter()
        logits = self.decrypt(outputs, x0.shape[0])
        traffic.client_s += time.perf_counter() - t0
        p = _softmax(logits)
        k = int(np.argmax(p))
        return Prediction(self.signature.labels[k], float(p[k]), logits, n_tokens, traffic, truncated, x0.shape[0])

    def embed(self, text: str, embedder: Embedder) -> tuple[np.ndarray, int, bool]:
        """x0 at its bucket's width, the token count, and whether it was cut to the largest bucket."""
        longest = self.signature.max_tokens
        truncated = embedder.n_tokens(text) > longest
        T = longest if truncated else self.bucket(max(embedder.n_tokens(text), 1)).T
        x0, n = embedder.embed(text, T, truncate=truncated)
        return x0, n, truncated

    def classify(self, text: str, embedder: Embedder) -> Prediction:
        """Tokenize and embed in the clear (cut to the largest bucket if longer), then the encrypted pipeline."""
        t0 = time.perf_counter()
        x0, n, truncated = self.embed(text, embedder)
        return self.classify_embedded(x0, n, time.perf_counter() - t0, truncated)


def _retry_after(r: httpx.Response) -> float | None:
    """Seconds to wait before sending the request again (503 / 429 with Retry-After), else None."""
    if r.status_code not in (429, 503):
        return None
    try:
        return max(0.0, float(r.headers.get("retry-after", "")))
    except ValueError:
        return None
