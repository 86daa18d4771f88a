"""The client: it alone holds the secret key; the server gets public keys and ciphertexts.

The pipeline, one method each:
    fetch_signature -> generate_keys | load_keys -> register_keys
    embed (Embedder) -> encrypt -> evaluate (HTTP, incl. refresh round trips) -> decrypt
`classify` runs the whole pipeline and returns the label with its latency
split (client / network / server) and bytes up and down.

Key files hold the secret key, so they are written owner-only (0600)
atomically and refused on load when anyone else may read them.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from he_inhibitor.ckks import CkksParams, ClientKeys, SecretKey, keygen, make_context, serial
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.service.embed import Embedder
from he_inhibitor.service.protocol import (
    CONTENT_TYPE, H_JOB, H_KEY_ID, H_SERVER_SECONDS, H_STATUS, H_TOKENS, KEY_FILE_MAGIC, STATUS_DONE, STATUS_REFRESH,
    Signature, key_id_of, pack_frames, unpack_frames,
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

    def to_json(self) -> dict:
        t = self.traffic
        return {"label": self.label, "confidence": self.confidence, "logits": self.logits.tolist(),
                "tokens": self.n_tokens, "seconds": {"client": t.client_s, "network": t.network_s,
                                                     "server": t.server_s, "total": t.total_s},
                "bytes_up": t.bytes_up, "bytes_down": t.bytes_down, "round_trips": t.round_trips}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class Client:
    def __init__(self, url: str, timeout_s: float = 600.0, progress: Callable[[str], None] | None = None) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout_s)
        self.progress = progress or (lambda msg: None)
        self.keys: ClientKeys | None = None
        self.key_id: str | None = None
        self.context_bytes = 0
        self._signature: Signature | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------
    def _post(self, path: str, body: bytes, headers: dict[str, str], traffic: Traffic | None) -> httpx.Response:
        t0 = time.perf_counter()
        r = self.http.post(path, content=body, headers={"content-type": CONTENT_TYPE, **headers})
        wall = time.perf_counter() - t0
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
    def signature(self) -> Signature:
        """The circuit's signature, fetched once (its parameters are re-checked for 128-bit security)."""
        if self._signature is None:
            r = self.http.get("/v1/signature")
            r.raise_for_status()
            self._signature = Signature.from_json(r.json())
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
        data = KEY_FILE_MAGIC + pack_frames([header.encode(), keys.secret.to_bytes(), keys.public_blob])
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
        self.keys = ClientKeys(params, SecretKey.from_bytes(sk, context), public, context)
        self.key_id = key_id_of(public)  # evaluate() registers only if the server no longer has it
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
    def encrypt(self, x0: np.ndarray) -> list[bytes]:
        """x0 [T, d] packed into the circuit's layout, one seeded ciphertext per input."""
        sig, keys = self.signature, self._require_keys()
        layout = Layout(sig.T, sig.n_slots, sig.block_of)
        return [keys.encrypt_bytes(row, sig.input_level) for row in layout.pack(x0)]

    def evaluate(self, inputs: list[bytes], n_tokens: int, traffic: Traffic) -> list[bytes]:
        """Send the ciphertexts; answer each refresh round trip; return the output ciphertexts."""
        if self.key_id is None:
            self.register_keys()
        body = pack_frames(inputs)
        try:
            r = self._post("/v1/evaluate", body, {H_KEY_ID: self.key_id, H_TOKENS: str(n_tokens)}, traffic)
        except ServerError as err:
            if err.code != "unknown_key_id":
                raise
            self.register_keys()  # evicted from the server's bounded registry: register once more
            r = self._post("/v1/evaluate", body, {H_KEY_ID: self.key_id, H_TOKENS: str(n_tokens)}, traffic)
        sig = self.signature
        while r.headers[H_STATUS] == STATUS_REFRESH:
            self.progress(f"evaluating: refresh round trip {traffic.round_trips}/{sig.refreshes}")
            t0 = time.perf_counter()
            (masked,) = unpack_frames(r.content, 1)
            fresh = self.keys.encrypt_bytes(self.keys.decrypt(serial.ciphertext_from_bytes(masked, self.keys.context)),
                                            sig.input_level)
            traffic.client_s += time.perf_counter() - t0
            r = self._post(f"/v1/jobs/{r.headers[H_JOB]}", pack_frames([fresh]), {}, traffic)
        if r.headers[H_STATUS] != STATUS_DONE:
            raise ServerError(r.status_code, "protocol", f"unexpected status {r.headers[H_STATUS]!r}")
        return unpack_frames(r.content, len(sig.outputs))

    def decrypt(self, outputs: list[bytes]) -> np.ndarray:
        """The logits from the decrypted output slots the signature names."""
        keys = self._require_keys()
        (out,) = outputs
        vec = keys.decrypt(serial.ciphertext_from_bytes(out, keys.context))
        return vec[list(self.signature.logit_slots)]

    def classify_embedded(self, x0: np.ndarray, n_tokens: int, client_s: float = 0.0) -> Prediction:
        """Encrypt -> evaluate -> decrypt for an embedded sentence."""
        traffic = Traffic(client_s=client_s)
        t0 = time.perf_counter()
        inputs = self.encrypt(x0)
        traffic.client_s += time.perf_counter() - t0
        outputs = self.evaluate(inputs, n_tokens, traffic)
        t0 = time.perf_counter()
        logits = self.decrypt(outputs)
        traffic.client_s += time.perf_counter() - t0
        p = _softmax(logits)
        k = int(np.argmax(p))
        return Prediction(self.signature.labels[k], float(p[k]), logits, n_tokens, traffic)

    def classify(self, text: str, embedder: Embedder) -> Prediction:
        """Tokenize and embed in the clear, then the encrypted pipeline."""
        t0 = time.perf_counter()
        x0, n = embedder.embed(text, self.signature.T)
        return self.classify_embedded(x0, n, time.perf_counter() - t0)
