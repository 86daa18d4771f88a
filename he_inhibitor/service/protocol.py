"""The wire format shared by client and server: binary frames, headers, limits, the signature.

Bodies are `application/octet-stream`. A list of SEAL objects travels as

    b"HEIF" | u32 count | (u64 length | bytes) * count        (little endian)

and a public context as the `he_inhibitor.ckks.PublicContext` container. JSON
is used only for small metadata (the signature, key ids, errors). Nothing is
ever pickled: every byte the server parses is either this framing, JSON, or a
SEAL serialization that SEAL itself validates against the circuit's context.

Endpoints (all under /v1):
    GET  /health                          liveness and registry occupancy
    GET  /signature                       what a client needs: parameters, layout, steps, labels
    POST /keys              body context  -> 201 {"key_id"}: register evaluation keys once
                                          (key id = key_id_of(context): idempotent, and a client
                                          that kept its keys can evaluate without re-uploading them)
    POST /evaluate          body frames   headers X-Key-Id, X-Tokens: one frame per circuit input
    POST /jobs/{job_id}     body frames   the re-encrypted ciphertexts of a refresh round trip
/evaluate and /jobs answer frames with X-Status `done` (output ciphertexts) or
`refresh` (masked ciphertexts to decrypt and re-encrypt at the top level, and
X-Job naming the evaluation to continue), plus X-Server-Seconds. Errors are
JSON {"error": code, "detail": message} with a 4xx status.

What each side learns (docs/design.md §8): the server sees the number of tokens
(X-Tokens; the key masks and pooling weights depend on it), the number and
timing of requests, and ciphertexts under a key it does not hold. The client
sees the embedding table (it embeds) and, at each refresh, an intermediate
activation plus a uniform mask in [-B, B] (B = 16 by default): bounded
statistical hiding of the server's intermediate values, not perfect hiding.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import asdict, dataclass

from he_inhibitor.ckks import CkksParams

CONTENT_TYPE = "application/octet-stream"
H_KEY_ID = "X-Key-Id"
H_TOKENS = "X-Tokens"
H_JOB = "X-Job"
H_STATUS = "X-Status"
H_SERVER_SECONDS = "X-Server-Seconds"
STATUS_DONE, STATUS_REFRESH = "done", "refresh"

_FRAMES_MAGIC = b"HEIF"
KEY_FILE_MAGIC = b"HEIKEY1\n"  # a client's key file (holds the secret key): never a request body
# SEAL's SEALHeader: magic u16, header size u8, version u8 u8, compression u8, reserved u16, size u64
SEAL_HEADER_BYTES = 16


class ProtocolError(ValueError):
    """Bytes that do not follow the wire format."""


def pack_frames(blobs: list[bytes]) -> bytes:
    parts = [_FRAMES_MAGIC, struct.pack("<I", len(blobs))]
    for b in blobs:
        parts += [struct.pack("<Q", len(b)), b]
    return b"".join(parts)


def unpack_frames(data: bytes, count: int) -> list[bytes]:
    """Exactly `count` frames and not one trailing byte, or ProtocolError."""
    if len(data) < 8 or not data.startswith(_FRAMES_MAGIC):
        raise ProtocolError("body is not a frame list (bad magic)")
    (n,) = struct.unpack_from("<I", data, 4)
    if n != count:
        raise ProtocolError(f"expected {count} ciphertexts, got {n}")
    pos, out = 8, []
    for _ in range(n):
        if pos + 8 > len(data):
            raise ProtocolError("frame list truncated")
        (size,) = struct.unpack_from("<Q", data, pos)
        if pos + 8 + size > len(data):
            raise ProtocolError("frame list truncated")
        out.append(data[pos + 8 : pos + 8 + size])
        pos += 8 + size
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} trailing bytes after the frames")
    return out


def key_id_of(context_bytes: bytes) -> str:
    """A context's key id: its content hash, so a client knows its id before (re)registering."""
    return hashlib.sha256(context_bytes).hexdigest()[:32]


def seal_declared_size(blob: bytes) -> int:
    """The total size a SEAL serialization declares in its header (0 if it has none)."""
    if len(blob) < SEAL_HEADER_BYTES or not blob.startswith(b"\x5e\xa1"):
        return 0
    return struct.unpack_from("<Q", blob, 8)[0]


@dataclass(frozen=True)
class Limits:
    """Request-size and state bounds of a server.

    max_context_bytes: a registered public context (the issue's key budget is
    150 MB). Ciphertext frames are bounded by the largest ciphertext the
    parameters allow (2 polynomials x N x (levels + 1) limbs x 8 bytes, plus
    headers), derived per server from the signature.
    max_keys / max_key_bytes: the registry evicts least recently used contexts
    beyond either bound. max_jobs / job_ttl_s: evaluations awaiting a refresh
    round trip; a full table answers 503, an expired job 404.
    max_concurrent: evaluations running at once (SEAL holds the GIL, so more
    only add memory).
    """

    max_context_bytes: int = 256 << 20
    max_keys: int = 16
    max_key_bytes: int = 2 << 30
    max_jobs: int = 64
    job_ttl_s: float = 120.0
    max_concurrent: int = 2


@dataclass(frozen=True)
class Signature:
    """Everything a client needs to talk to one compiled circuit, served as JSON.

    block_of / T / n_slots are the packing layout of the input (the client
    packs x0 with `he_inhibitor.circuit.layout.Layout`); logit_slots is where
    each label's logit sits in the decrypted output; inputs are encrypted at
    chain index input_level; refreshes is the number of refresh round trips
    one evaluation takes; depth the levels it needs on one unbroken chain.
    """

    poly_modulus_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int
    T: int
    n_slots: int
    block_of: tuple[int, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_level: int
    rotation_steps: tuple[int, ...]
    logit_slots: tuple[int, ...]
    labels: tuple[str, ...]
    depth: int
    refreshes: int

    @property
    def params(self) -> CkksParams:
        """The CKKS parameters (constructing them re-checks 128-bit security on the client)."""
        return CkksParams(self.poly_modulus_degree, self.coeff_bits, self.scale_bits)

    @property
    def max_ciphertext_bytes(self) -> int:
        limbs = len(self.coeff_bits) - 1
        return 2 * self.poly_modulus_degree * limbs * 8 + 4096

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Signature":
        tuples = {"coeff_bits", "block_of", "inputs", "outputs", "rotation_steps", "logit_slots", "labels"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})
