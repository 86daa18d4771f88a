"""Typed checks of everything a client sends; each failure maps to one 4xx answer.

A public context is read as it arrives (body.BodyReader) and refused at the
first byte that is wrong: the magic, then a JSON header of at most
MAX_HEADER_BYTES and nesting depth 2 that must state exactly the circuit's
parameters and rotation steps (integers, not floats; the steps sorted, no
duplicates and none missing or extra), then exactly the relinearization-key
part and the Galois-key part, each opening with a SEAL header whose declared
size is the part's length and whose length is within what such keys can
take; a fourth part is refused from its length prefix, unread. Only then does
SEAL load the keys (validated by SEAL against the server's own context).
`PublicContext.from_bytes` alone would ignore extra parts, so the server
never uses it on client bytes. A part that SEAL accepts as a secret key, or
a header field naming one, is refused as such and nothing of that request is
kept.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from he_inhibitor.ckks import Ciphertext, PublicContext, SEALContext, sealio
from he_inhibitor.ckks.context import galois_elements, level_of
from he_inhibitor.service.protocol import (
    CONTEXT_MAGIC, KEY_FILE_MAGIC, SEAL_HEADER_BYTES, ServiceSignature, key_id_of, key_switch_wire_bound,
    seal_declared_size,
)

if TYPE_CHECKING:
    from he_inhibitor.service.body import BodyReader

MAX_HEADER_BYTES = 1024
_T = TypeVar("_T")
_FRAMES_MAGIC = b"HEIF"
_HEADER_FIELDS = {"poly_modulus_degree", "coeff_bits", "scale_bits", "rotation_steps"}


class RequestError(Exception):
    """A client error: HTTP status, a stable machine-readable code, a message for humans."""

    status = 400
    code = "bad_request"


class Malformed(RequestError):
    code = "malformed"


class SecretKeyRefused(RequestError):
    status = 403
    code = "secret_key_refused"


class Mismatch(RequestError):
    status = 422
    code = "mismatch"


class UnknownKey(RequestError):
    status = 404
    code = "unknown_key_id"


class UnknownJob(RequestError):
    status = 404
    code = "unknown_job"


class TooLarge(RequestError):
    status = 413
    code = "too_large"


class Busy(RequestError):
    status = 503
    code = "busy"


def _json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects, found by a scan (json.loads recurses and can overflow)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _strict_int(value: object, what: str) -> int:
    if type(value) is not int:  # bool is an int subclass and 16384.9 is not an int: both refused
        raise Malformed(f"public context {what} must be an integer, got {value!r}")
    return value


def check_header(raw: bytes, sig: ServiceSignature) -> None:
    """The context's JSON header states exactly the circuit's parameters and rotation steps."""
    if _json_depth(raw.decode("utf-8", "replace")) > 2:
        raise Malformed("public context header nests deeper than 2")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise Malformed(f"public context header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise Malformed("public context header is not a JSON object")
    extra = set(header) - _HEADER_FIELDS
    if any("secret" in k.lower() for k in extra):
        raise SecretKeyRefused(f"public context header carries {sorted(extra)}; the server never accepts a secret key")
    if set(header) != _HEADER_FIELDS:
        raise Malformed(f"public context header fields {sorted(header)}; expected {sorted(_HEADER_FIELDS)}")
    n = _strict_int(header["poly_modulus_degree"], "poly_modulus_degree")
    scale = _strict_int(header["scale_bits"], "scale_bits")
    if not isinstance(header["coeff_bits"], list) or not isinstance(header["rotation_steps"], list):
        raise Malformed("public context coeff_bits and rotation_steps must be lists")
    bits = tuple(_strict_int(b, "coeff_bits") for b in header["coeff_bits"])
    steps = [_strict_int(s, "rotation_steps") for s in header["rotation_steps"]]
    if (n, bits, scale) != (sig.poly_modulus_degree, sig.coeff_bits, sig.scale_bits):
        raise Mismatch(f"context parameters N={n}, chain {list(bits)}, scale 2^{scale} do not match the circuit's "
                       f"N={sig.poly_modulus_degree}, chain {list(sig.coeff_bits)}, scale 2^{sig.scale_bits}")
    if tuple(steps) != sig.rotation_steps:
        missing = sorted(set(sig.rotation_steps) - set(steps))
        raise Mismatch(f"context rotation steps {steps}; the circuit needs exactly {list(sig.rotation_steps)} "
                       f"(sorted, each once{'; missing ' + str(missing) if missing else ''})")


@dataclass(frozen=True)
class ContextParts:
    """A structurally checked context, not yet loaded: the SEAL parts and the key id they hash to."""

    key_id: str
    relin: bytes
    galois: bytes | None


async def _seal_part(reader: "BodyReader", bound: int, what: str) -> bytes:
    (n,) = struct.unpack("<Q", await reader.exactly(8, f"{what} length"))
    if n > bound:
        raise Malformed(f"{what}: {n} bytes, more than such keys take ({bound})")
    if n < SEAL_HEADER_BYTES:
        raise Malformed(f"{what}: {n} bytes is no SEAL serialization")
    head = await reader.exactly(SEAL_HEADER_BYTES, what)
    if seal_declared_size(head) != n:
        raise Malformed(f"{what}: not one complete SEAL serialization")
    return head + await reader.exactly(n - SEAL_HEADER_BYTES, what)


async def read_context(reader: "BodyReader", sig: ServiceSignature) -> ContextParts:
    """Read and check a public context's structure as it arrives; raises a RequestError at the first fault."""
    magic = await reader.exactly(len(CONTEXT_MAGIC), "magic")
    if magic == KEY_FILE_MAGIC:
        raise SecretKeyRefused("this is a client key file, which holds the secret key; send the public context only")
    if magic != CONTEXT_MAGIC:
        raise Malformed("not a he-inhibitor public context (bad magic)")
    (n,) = struct.unpack("<Q", await reader.exactly(8, "header length"))
    if n > MAX_HEADER_BYTES:
        raise Malformed(f"public context header of {n} bytes; at most {MAX_HEADER_BYTES}")
    check_header(await reader.exactly(n, "header"), sig)
    bound = key_switch_wire_bound(sig.params)
    relin = await _seal_part(reader, bound, "relinearization keys")
    galois = await _seal_part(reader, bound * len(sig.rotation_steps), "Galois keys") if sig.rotation_steps else None
    if not await reader.at_end():
        raise Malformed(f"public context has more than {3 if galois else 2} parts (header, relin keys, Galois keys)")
    return ContextParts(key_id_of([relin] if galois is None else [relin, galois]), relin, galois)


def _is_secret_key(blob: bytes, context: SEALContext) -> bool:
    try:
        sealio.secret_key(blob, context)
    except (RuntimeError, ValueError):
        return False
    return True


def _load_part(load: Callable[[bytes, SEALContext], _T], blob: bytes, context: SEALContext, what: str) -> _T:
    try:
        return load(blob, context)
    except (RuntimeError, ValueError) as err:
        if _is_secret_key(blob, context):
            raise SecretKeyRefused(f"{what} is a secret key; the server never accepts one") from err
        raise Malformed(f"{what} is not valid for the circuit's parameters: {err}") from err


def load_context(parts: ContextParts, sig: ServiceSignature, context: SEALContext) -> PublicContext:
    """SEAL-load checked parts against the server's context (shared by every key set; blob not kept)."""
    relin = _load_part(sealio.relin_keys, parts.relin, context, "relinearization keys")
    if relin.size() != 1:
        raise Mismatch(f"{relin.size()} relinearization keys; the circuit needs exactly 1")
    galois = None if parts.galois is None else _load_part(sealio.galois_keys, parts.galois, context, "Galois keys")
    if galois is not None:
        # exactly the steps' keys: extra ones would cost memory the budget does not charge (and the size
        # bound on the part, being that of uncompressed keys, would let half as many again through)
        elements = galois_elements(context, list(sig.rotation_steps))
        if galois.size() != len(set(elements)) or not all(galois.has_key(e) for e in elements):
            raise Mismatch(f"Galois keys for {galois.size()} elements; the circuit needs exactly those of its "
                           f"{len(sig.rotation_steps)} rotation steps")
    return PublicContext(sig.params, context, relin, galois, sig.rotation_steps, b"")


async def read_frames(reader: "BodyReader", count: int, frame_cap: int) -> list[bytes]:
    """Exactly `count` frames, each one SEAL serialization of at most frame_cap bytes, and nothing after."""
    head = await reader.exactly(8, "frame list header")
    if head[:4] != _FRAMES_MAGIC:
        raise Malformed("body is not a frame list (bad magic)")
    (n,) = struct.unpack_from("<I", head, 4)
    if n != count:
        raise Malformed(f"expected {count} ciphertexts, got {n}")
    blobs = [await _seal_part(reader, frame_cap, f"ciphertext {i}") for i in range(n)]
    if not await reader.at_end():
        raise Malformed("trailing bytes after the frames")
    return blobs


def check_ciphertexts(blobs: list[bytes], context: SEALContext, level: int,
                      scale: float) -> list[Ciphertext]:
    """Fresh size-2 ciphertexts at chain index `level` and scale `scale` (frames from read_frames)."""
    out = []
    for i, blob in enumerate(blobs):
        try:
            ct = sealio.ciphertext(blob, context)
        except (RuntimeError, ValueError) as err:
            raise Malformed(f"ciphertext {i} is not a valid ciphertext for these parameters: {err}") from err
        if ct.size() != 2 or ct.is_transparent():
            raise Malformed(f"ciphertext {i} has size {ct.size()} (transparent: {ct.is_transparent()}); "
                            "expected a fresh size-2 ciphertext")
        if level_of(context, ct) != level:
            raise Mismatch(f"ciphertext {i} is at chain index {level_of(context, ct)}; "
                           f"the circuit expects {level}")
        if abs(ct.scale / scale - 1.0) > 1e-9:
            raise Mismatch(f"ciphertext {i} has scale {ct.scale:.6g}; expected {scale:.6g}")
        out.append(ct)
    return out


def check_tokens(value: str | None, T: int) -> int:
    """The number of valid tokens (the public sentence length), 1..T (T: the largest bucket)."""
    try:
        n = int(value) if value is not None else -1
    except ValueError:
        n = -1
    if not 1 <= n <= T:
        raise Malformed(f"X-Tokens must be an integer in [1, {T}], got {value!r}")
    return n
