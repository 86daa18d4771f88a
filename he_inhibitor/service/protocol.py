"""The wire format shared by client and server: binary frames, headers, limits, the signature.

Bodies are `application/octet-stream`. A list of SEAL objects travels as

    b"HEIF" | u32 count | (u64 length | bytes) * count        (little endian)

and a public context as the `he_inhibitor.ckks.PublicContext` container. JSON
is used only for small metadata (the signature, key ids, errors). Nothing is
ever pickled: every byte the server parses is either this framing, JSON, or a
SEAL serialization that SEAL itself validates against the circuit's context.

Endpoints (all under /v1):
    GET  /health                          liveness; with a token (when the server has tokens) occupancy too
    GET  /signature                       what a client needs: parameters, the rotation steps a key set
                                          must carry, labels, and per token bucket T the layout
    POST /keys              body context  -> 201 {"key_id"}: register evaluation keys once (key id =
                                          key_id_of: a hash of the key material, so the same keys
                                          have one id however often they are sent)
    POST /evaluate          body frames   headers X-Key-Id, X-Tokens: one frame per input of the
                                          bucket X-Tokens falls in (the smallest T >= X-Tokens), in the
                                          order Signature.input_names(X-Tokens) gives
    POST /jobs/{job_id}     body frames   the X-Outputs fresh ciphertexts of a refresh round trip
/evaluate and /jobs answer frames with X-Status `done` (output ciphertexts) or
`refresh` (masked ciphertexts to decrypt; X-Map names the public map the client
applies to them, circuit/arrange.py, "" for none; X-Outputs how many ciphertexts
of the result it encrypts at the top level and sends back; X-Job names the
evaluation to continue), plus X-Server-Seconds. Errors are
JSON {"error": code, "detail": message} with a 4xx status, or 503 with
Retry-After when the server is full (the request did not start; send it again).

What each side learns (docs/design.md §8): the server sees the number of tokens
(X-Tokens; the key masks and pooling weights depend on it), the number and
timing of requests, and ciphertexts under a key it does not hold. The client
sees the embedding table (it embeds) and, at each refresh, an intermediate
activation plus a uniform mask as wide as the refresh level allows
(evaluate.py: bounded statistical hiding, not perfect hiding).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import asdict, dataclass, field

import numpy as np

from he_inhibitor.ckks import CkksParams
from he_inhibitor.circuit.arrange import ClientMap, ShiftPlan, StackedMap, maps
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.weight_store import DEFAULT_MAX_BYTES

CONTENT_TYPE = "application/octet-stream"
H_KEY_ID = "X-Key-Id"
H_TOKENS = "X-Tokens"
H_JOB = "X-Job"
H_STATUS = "X-Status"
H_SERVER_SECONDS = "X-Server-Seconds"
H_MAP = "X-Map"  # a refresh: the public map the client applies ("" for none)
H_OUTPUTS = "X-Outputs"  # a refresh: how many fresh ciphertexts the client returns
STATUS_DONE, STATUS_REFRESH = "done", "refresh"

_FRAMES_MAGIC = b"HEIF"
CONTEXT_MAGIC = b"HEIPUB1\n"  # he_inhibitor.ckks.keys writes this container
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


def key_id_of(material: list[bytes]) -> str:
    """A key set's id: the hash of its key material (the SEAL parts, not the JSON header).

    The header is checked to be exactly the circuit's parameters and steps, so
    it adds nothing; hashing only the keys means one key set has one id, and
    a client knows its id before (re)registering.
    """
    h = hashlib.sha256()
    for part in material:
        h.update(struct.pack("<Q", len(part)))
        h.update(part)
    return h.hexdigest()[:32]


def container_parts(blob: bytes) -> list[bytes]:
    """The length-prefixed parts of a public context after its 8-byte magic (the client's own blob)."""
    pos, parts = len(CONTEXT_MAGIC), []
    while pos + 8 <= len(blob):
        (n,) = struct.unpack_from("<Q", blob, pos)
        parts.append(blob[pos + 8 : pos + 8 + n])
        pos += 8 + n
    return parts


def seal_declared_size(blob: bytes) -> int:
    """The total size a SEAL serialization declares in its header (0 if it has none)."""
    if len(blob) < SEAL_HEADER_BYTES or not blob.startswith(b"\x5e\xa1"):
        return 0
    return struct.unpack_from("<Q", blob, 8)[0]


@dataclass(frozen=True)
class Limits:
    """Bounds on everything a client can make the server hold or do; a request beyond one is refused early.

    memory_budget: bytes of client-driven state: registered key sets (as SEAL
    holds them in memory, estimated from the parameters, not their wire size),
    evaluations running or paused at a refresh (their live ciphertexts), and
    request bodies being received. The process's own baseline (compiled
    circuits) comes on top. Least recently used key sets without a job are
    evicted to make room; when nothing can be evicted the answer is 503.
    max_keys: key sets held at once. max_jobs / max_jobs_per_key: evaluations
    running or paused, in all and per key set. job_ttl_s: how long a paused
    evaluation waits for its refresh (measured from the pause; a bad refresh
    body does not restart it).
    max_concurrent / max_queue: SEAL work runs in a pool of max_concurrent
    threads (SEAL holds the GIL during each operation, so more only add
    memory); at most max_queue more wait, beyond that 503 with Retry-After.
    max_uploads: request bodies received at once (beyond: 503). Bodies must
    keep arriving: body_idle_timeout_s between chunks and a total of
    body_timeout_s + size / min_upload_rate; header_timeout_s for a request
    head; slower clients get 408 or are disconnected.
    evaluations_per_minute: per key set (and per token without its own
    quota): each evaluation lets the client see masked activations once, so
    the rate bounds how fast repeated queries can narrow them down.
    max_connections: open connections (uvicorn answers 503 beyond).
    weight_cache: bytes of encoded weight and key-mask plaintexts the server
    keeps (circuit/weight_store.py): its own memory, shared by every key set
    and fixed here, not something a client can grow; 0 encodes them per
    request (a third of a sentence's server time).
    """

    memory_budget: int = 4 << 30
    max_keys: int = 16
    max_jobs: int = 32
    max_jobs_per_key: int = 4
    job_ttl_s: float = 120.0
    max_concurrent: int = 2
    max_queue: int = 16
    max_uploads: int = 4
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    min_upload_rate: float = 1e6
    evaluations_per_minute: int = 60
    retry_after_s: int = 2
    max_connections: int = 256
    weight_cache: int = DEFAULT_MAX_BYTES


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
    outputs: tuple[str, ...]
    input_level: int
    rotation_steps: tuple[int, ...]
    logit_slots: tuple[int, ...]
    labels: tuple[str, ...]
    depth: int
    refreshes: int
    n_heads: int = 1
    plans: dict[str, list[int] | None] = field(default_factory=dict)  # tokens -> [B, m] (circuit/arrange.py)
    round_trips: dict[str, int] = field(default_factory=dict)  # tokens -> refresh round trips of that circuit

    def refreshes_for(self, n_tokens: int) -> int:
        """The refresh round trips of a sentence of n_tokens: exactly these, on both sides."""
        return int(self.round_trips.get(str(n_tokens), self.refreshes))

    def layouts(self, n_tokens: int) -> tuple[Layout, Layout | None, ShiftPlan | None]:
        """The layout of x, and for an inhibitor circuit the arranged layout and plan of n_tokens."""
        if str(n_tokens) not in self.plans:
            raise ValueError(f"the T={self.T} circuit takes {min(map(int, self.plans))} to "
                             f"{max(map(int, self.plans))} tokens, not {n_tokens}")
        res = Layout(self.T, self.n_slots, self.block_of)
        p = self.plans[str(n_tokens)]
        if p is None:
            return res, None, None
        plan = ShiftPlan(*p)
        return res, plan.layout(res, self.n_heads), plan

    def input_names(self, n_tokens: int) -> list[str]:
        """The circuit's inputs for n_tokens, in the order the server reads their frames."""
        self.layouts(n_tokens)
        return [f"x{c}" for c in range(len(Layout(self.T, self.n_slots, self.block_of).pack(
            np.zeros((self.T, len(self.block_of))))))]

    def pack(self, x0: np.ndarray, n_tokens: int) -> dict[str, np.ndarray]:
        """The client's input slot vectors for x0 [T, d] of n_tokens, by input name."""
        res, _, _ = self.layouts(n_tokens)
        return {f"x{c}": ct for c, ct in enumerate(res.pack(x0))}

    def client_maps(self, n_tokens: int) -> dict[str, ClientMap | StackedMap]:
        """The public maps a refresh may ask the client to apply (none for a dot-product circuit)."""
        res, att, plan = self.layouts(n_tokens)
        return {} if plan is None else maps(res, att, plan, n_tokens)

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
        tuples = {"coeff_bits", "block_of", "outputs", "rotation_steps", "logit_slots", "labels"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


@dataclass(frozen=True)
class ServiceSignature:
    """A server's circuits: one Signature per token bucket, under one set of parameters and one key set.

    A registered key set serves every bucket, so it carries the union of the
    buckets' rotation steps (`rotation_steps`), exactly those. A sentence of
    n tokens runs in the smallest bucket T >= n; one longer than the largest
    bucket is truncated by the client to `max_tokens` (flagged `truncated`).
    """

    poly_modulus_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int
    rotation_steps: tuple[int, ...]
    labels: tuple[str, ...]
    buckets: tuple[Signature, ...]

    @classmethod
    def of(cls, buckets: list[Signature]) -> "ServiceSignature":
        """Join per-bucket signatures; ValueError unless they share parameters and labels."""
        if not buckets:
            raise ValueError("a server needs at least one bucket")
        first = buckets[0]
        for b in buckets:
            if (b.params, b.labels) != (first.params, first.labels):
                raise ValueError(f"bucket T={b.T} has other parameters or labels than T={first.T}")
        if len({b.T for b in buckets}) != len(buckets):
            raise ValueError("two circuits for one bucket")
        steps = tuple(sorted({s for b in buckets for s in b.rotation_steps}))
        return cls(first.poly_modulus_degree, first.coeff_bits, first.scale_bits, steps, first.labels,
                   tuple(sorted(buckets, key=lambda b: b.T)))

    @property
    def params(self) -> CkksParams:
        return CkksParams(self.poly_modulus_degree, self.coeff_bits, self.scale_bits)

    @property
    def max_tokens(self) -> int:
        return self.buckets[-1].T

    def bucket(self, n_tokens: int) -> Signature:
        """The smallest bucket holding n_tokens (1..max_tokens); ValueError otherwise."""
        for b in self.buckets:
            if 1 <= n_tokens <= b.T:
                return b
        raise ValueError(f"{n_tokens} tokens: a sentence takes 1 to {self.max_tokens}")

    def to_json(self) -> dict:
        return {**asdict(self), "buckets": [b.to_json() for b in self.buckets]}

    @classmethod
    def from_json(cls, data: dict) -> "ServiceSignature":
        return cls(int(data["poly_modulus_degree"]), tuple(data["coeff_bits"]), int(data["scale_bits"]),
                   tuple(data["rotation_steps"]), tuple(data["labels"]),
                   tuple(Signature.from_json(b) for b in data["buckets"]))


def key_switch_bytes(params: CkksParams) -> int:
    """Memory SEAL holds for one key-switching key (a relinearization key or one Galois key).

    One RLWE pair per data prime (the decomposition), each 2 polynomials over
    every prime of the key level: 2 x N x (L + 1) x 8 bytes, L = data primes.
    """
    primes = len(params.coeff_bits)
    return (primes - 1) * 2 * params.poly_modulus_degree * primes * 8


def key_switch_wire_bound(params: CkksParams) -> int:
    """Most bytes one key-switching key may take on the wire: seeded (half of it), uncompressed, plus headers."""
    return key_switch_bytes(params) // 2 + (len(params.coeff_bits) - 1) * 256 + 1024


def ciphertext_bytes(params: CkksParams) -> int:
    """Memory of one size-2 ciphertext at the top data level (an upper bound for a live intermediate)."""
    return 2 * params.poly_modulus_degree * (len(params.coeff_bits) - 1) * 8
