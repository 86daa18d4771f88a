"""Typed checks of everything a client sends; each failure maps to one 4xx answer.

A public context is parsed strictly (every byte accounted for) so nothing can
ride along unseen: the JSON header must have exactly the expected fields, and
there must be exactly a relinearization-key part and a Galois-key part, each a
SEAL serialization whose declared size is its length, loaded and validated by
SEAL against the circuit's parameters. `PublicContext.from_bytes` alone would
ignore extra parts, so the server never uses it on client bytes. A part that
SEAL accepts as a secret key, or a header field naming one, is refused as
such and nothing of that request is kept.
"""

from __future__ import annotations

import json
import struct

import tenseal.sealapi as seal

from he_inhibitor.ckks import CkksParams, InsecureParametersError, PublicContext, make_context, serial
from he_inhibitor.ckks.context import galois_elements, level_of
from he_inhibitor.service.protocol import KEY_FILE_MAGIC, ProtocolError, Signature, seal_declared_size, unpack_frames

CONTEXT_MAGIC = b"HEIPUB1\n"  # he_inhibitor.ckks.keys writes this container
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


def _split_container(data: bytes) -> list[bytes]:
    if data.startswith(KEY_FILE_MAGIC):
        raise SecretKeyRefused("this is a client key file, which holds the secret key; send the public context only")
    if not data.startswith(CONTEXT_MAGIC):
        raise Malformed("not a he-inhibitor public context (bad magic)")
    pos, parts = len(CONTEXT_MAGIC), []
    while pos < len(data):
        if pos + 8 > len(data):
            raise Malformed("public context truncated")
        (n,) = struct.unpack_from("<Q", data, pos)
        if pos + 8 + n > len(data):
            raise Malformed("public context truncated")
        parts.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n
    return parts


def _is_secret_key(blob: bytes, context: seal.SEALContext) -> bool:
    try:
        serial.load(seal.SecretKey(), blob, context)
    except (RuntimeError, ValueError):
        return False
    return True


def _load_part(obj, blob: bytes, context: seal.SEALContext, what: str):
    if seal_declared_size(blob) != len(blob):
        raise Malformed(f"{what}: not one complete SEAL serialization")
    try:
        return serial.load(obj, blob, context)
    except (RuntimeError, ValueError) as err:
        if _is_secret_key(blob, context):
            raise SecretKeyRefused(f"{what} is a secret key; the server never accepts one") from err
        raise Malformed(f"{what} is not valid for the circuit's parameters: {err}") from err


def check_context(data: bytes, sig: Signature) -> PublicContext:
    """The client's public context, validated against the circuit; raises a RequestError."""
    parts = _split_container(data)
    if not parts:
        raise Malformed("public context has no header")
    try:
        header = json.loads(parts[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Malformed(f"public context header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise Malformed("public context header is not a JSON object")
    extra = set(header) - _HEADER_FIELDS
    if any("secret" in k.lower() for k in extra):
        raise SecretKeyRefused(f"public context header carries {sorted(extra)}; the server never accepts a secret key")
    if extra or set(header) != _HEADER_FIELDS:
        raise Malformed(f"public context header fields {sorted(header)}; expected {sorted(_HEADER_FIELDS)}")
    try:
        params = CkksParams(int(header["poly_modulus_degree"]), tuple(int(b) for b in header["coeff_bits"]),
                            int(header["scale_bits"]))
        steps = tuple(sorted({int(s) for s in header["rotation_steps"]}))
    except (TypeError, ValueError, InsecureParametersError) as err:
        raise Malformed(f"public context parameters unreadable: {err}") from err
    if params != sig.params:
        raise Mismatch(f"context parameters {params} do not match the circuit's {sig.params}")
    missing = set(sig.rotation_steps) - set(steps)
    if missing:
        raise Mismatch(f"context lacks Galois keys for rotation steps {sorted(missing)} the circuit uses")
    context = make_context(params)
    want = 3 if steps else 2
    for i, blob in enumerate(parts[want:], start=want):
        if _is_secret_key(blob, context):
            raise SecretKeyRefused(f"public context part {i} is a secret key; the server never accepts one")
    if len(parts) != want:
        raise Malformed(f"public context has {len(parts)} parts; expected {want} (header, relin keys, Galois keys)")
    relin = _load_part(seal.RelinKeys(), parts[1], context, "relinearization keys")
    galois = _load_part(seal.GaloisKeys(), parts[2], context, "Galois keys") if steps else None
    if galois is not None and not all(galois.has_key(e) for e in galois_elements(context, list(steps))):
        raise Mismatch("Galois keys do not cover the rotation steps the header declares")
    return PublicContext(params, context, relin, galois, steps, data)


def check_ciphertexts(body: bytes, count: int, public: PublicContext, level: int,
                      scale: float) -> list[seal.Ciphertext]:
    """`count` fresh ciphertexts at chain index `level` and scale `scale`; raises a RequestError."""
    try:
        blobs = unpack_frames(body, count)
    except ProtocolError as err:
        raise Malformed(str(err)) from err
    out = []
    for i, blob in enumerate(blobs):
        if seal_declared_size(blob) != len(blob):
            raise Malformed(f"ciphertext {i}: not one complete SEAL serialization")
        try:
            ct = serial.ciphertext_from_bytes(blob, public.context)
        except (RuntimeError, ValueError) as err:
            raise Malformed(f"ciphertext {i} is not a valid ciphertext for these parameters: {err}") from err
        if ct.size() != 2 or ct.is_transparent():
            raise Malformed(f"ciphertext {i} has size {ct.size()} (transparent: {ct.is_transparent()}); "
                            "expected a fresh size-2 ciphertext")
        if level_of(public.context, ct) != level:
            raise Mismatch(f"ciphertext {i} is at chain index {level_of(public.context, ct)}; "
                           f"the circuit expects {level}")
        if abs(ct.scale / scale - 1.0) > 1e-9:
            raise Mismatch(f"ciphertext {i} has scale {ct.scale:.6g}; expected {scale:.6g}")
        out.append(ct)
    return out


def check_tokens(value: str | None, T: int) -> int:
    """The number of valid tokens (the public sentence length), 1..T."""
    try:
        n = int(value) if value is not None else -1
    except ValueError:
        n = -1
    if not 1 <= n <= T:
        raise Malformed(f"X-Tokens must be an integer in [1, {T}], got {value!r}")
    return n
