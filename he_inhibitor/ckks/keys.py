"""Key generation with public and secret material kept in separate types.

`ClientKeys` (secret key + what the client needs to encrypt/decrypt) never
leaves the client.  `PublicContext` is what the server gets: parameters,
relinearization keys and Galois keys for exactly the requested rotation
steps; it is built only from its own serialized bytes, so it cannot carry a
secret key by construction.  Public keys are not generated at all: the client
encrypts with the secret key (symmetric), whose seeded serialization is half
the size of a public-key ciphertext.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from . import serial
from .context import galois_elements, level_of, level_scales, make_context, parms_id_at
from .params import CkksParams

_MAGIC = b"HEIPUB1\n"


@dataclass
class PublicContext:
    """Evaluation material: params, relin keys, Galois keys for `rotation_steps`."""

    params: CkksParams
    context: seal.SEALContext
    relin_keys: seal.RelinKeys
    galois_keys: seal.GaloisKeys | None
    rotation_steps: tuple[int, ...]
    blob: bytes

    def to_bytes(self) -> bytes:
        """The container keygen wrote; rebuilt from the SEAL objects when it was dropped (the service keeps
        the parsed keys only, to halve what a registered key set holds)."""
        if self.blob:
            return self.blob
        p = self.params
        blobs = [serial.to_bytes(self.relin_keys)] + ([serial.to_bytes(self.galois_keys)]
                                                      if self.galois_keys is not None else [])
        return _pack({"poly_modulus_degree": p.poly_modulus_degree, "coeff_bits": list(p.coeff_bits),
                      "scale_bits": p.scale_bits, "rotation_steps": list(self.rotation_steps)}, blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> "PublicContext":
        """Parse the container written by keygen: magic, JSON header, SEAL blobs."""
        if not data.startswith(_MAGIC):
            raise ValueError("not a he-inhibitor public context")
        pos = len(_MAGIC)
        parts = []
        while pos < len(data):
            (n,) = struct.unpack_from("<Q", data, pos)
            parts.append(data[pos + 8 : pos + 8 + n])
            pos += 8 + n
        header = json.loads(parts[0])
        params = CkksParams(header["poly_modulus_degree"], tuple(header["coeff_bits"]), header["scale_bits"])
        context = make_context(params)
        relin = serial.load(seal.RelinKeys(), parts[1], context)
        galois = serial.load(seal.GaloisKeys(), parts[2], context) if len(parts) > 2 else None
        return cls(params, context, relin, galois, tuple(header["rotation_steps"]), data)


def _pack(header: dict, blobs: list[bytes]) -> bytes:
    out = [_MAGIC]
    for part in [json.dumps(header).encode()] + blobs:
        out += [struct.pack("<Q", len(part)), part]
    return b"".join(out)


@dataclass
class SecretKey:
    """The CKKS secret key; serializable for the client's own storage only."""

    key: seal.SecretKey

    def to_bytes(self) -> bytes:
        return serial.to_bytes(self.key)

    @classmethod
    def from_bytes(cls, data: bytes, context: seal.SEALContext) -> "SecretKey":
        return cls(serial.load(seal.SecretKey(), data, context))


class ClientKeys:
    """Secret key plus encode/encrypt/decrypt; produces the PublicContext bytes."""

    def __init__(self, params: CkksParams, secret: SecretKey, public_blob: bytes,
                 context: seal.SEALContext | None = None) -> None:
        self.params = params
        self.context = context if context is not None else make_context(params)
        self.secret = secret
        self.public_blob = public_blob
        self.encoder = seal.CKKSEncoder(self.context)
        self.scales = level_scales(self.context, params.scale)
        self._encryptor = seal.Encryptor(self.context, secret.key)
        self._decryptor = seal.Decryptor(self.context, secret.key)

    def public_context(self) -> PublicContext:
        return PublicContext.from_bytes(self.public_blob)

    def encode(self, values: np.ndarray, level: int | None = None) -> seal.Plaintext:
        """Encode (zero-padded to all slots) at `level` (default: the top data level).

        The scale is that level's Delta_l (see context.level_scales), the
        invariant the evaluator keeps.
        """
        v = np.zeros(self.params.slots)
        flat = np.asarray(values, dtype=float).ravel()
        if flat.size > v.size:
            raise ValueError(f"{flat.size} values exceed {v.size} slots")
        v[: flat.size] = flat
        lvl = self.params.depth if level is None else level
        pt = seal.Plaintext()
        self.encoder.encode(v.tolist(), parms_id_at(self.context, lvl), self.scales[lvl], pt)
        return pt

    def encrypt(self, values: np.ndarray, level: int | None = None) -> seal.Ciphertext:
        """Symmetric encryption at `level` (encrypting low saves bandwidth and server work)."""
        ct = seal.Ciphertext()
        self._encryptor.encrypt_symmetric(self.encode(values, level), ct)
        return ct

    def encrypt_bytes(self, values: np.ndarray, level: int | None = None) -> bytes:
        """Seeded serialization of a symmetric encryption (about half a ciphertext)."""
        return serial.to_bytes(self._encryptor.encrypt_symmetric(self.encode(values, level)))

    def decrypt(self, ct: seal.Ciphertext) -> np.ndarray:
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        return np.asarray(self.encoder.decode_double(pt))

    def level(self, ct: seal.Ciphertext) -> int:
        return level_of(self.context, ct)


def keygen(params: CkksParams, rotation_steps: list[int] | tuple[int, ...] = ()) -> ClientKeys:
    """Fresh keys; Galois keys only for `rotation_steps` (none if empty).

    Relin and Galois keys are serialized seeded, which halves the traffic the
    server receives.
    """
    context = make_context(params)
    gen = seal.KeyGenerator(context)
    steps = tuple(sorted(set(int(s) for s in rotation_steps)))
    blobs = [serial.to_bytes(gen.create_relin_keys())]
    if steps:
        blobs.append(serial.to_bytes(gen.create_galois_keys(galois_elements(context, list(steps)))))
    header = {"poly_modulus_degree": params.poly_modulus_degree, "coeff_bits": list(params.coeff_bits),
              "scale_bits": params.scale_bits, "rotation_steps": list(steps)}
    return ClientKeys(params, SecretKey(gen.secret_key()), _pack(header, blobs), context)
