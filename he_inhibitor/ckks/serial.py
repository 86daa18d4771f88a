"""SEAL objects <-> bytes.

sealapi exposes SEAL's `save`/`load` only through file paths, so bytes go
through a private temporary file.  SEAL writes its default compression, which
in TenSEAL's build is zstd (checked by `compression`); seeded objects (the
`Serializable` results of secret-key encryption and key generation) store the
uniform half of each ciphertext as a PRNG seed and are about half the size.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import tenseal.sealapi as seal

_COMPRESSION = {0: "none", 1: "zlib", 2: "zstd"}


def to_bytes(obj: Any) -> bytes:
    """Serialize any SEAL object or Serializable wrapper that has `save(path)`."""
    fd, path = tempfile.mkstemp(prefix="he-inhibitor-")
    os.close(fd)
    try:
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def load(obj: Any, data: bytes, context: seal.SEALContext | None = None) -> Any:
    """Fill `obj` (a fresh SEAL object) from bytes; returns it.

    Objects tied to a context (ciphertexts, keys) are validated against it by
    SEAL; EncryptionParameters take no context.
    """
    if not data.startswith(b"\x5e\xa1"):
        raise ValueError("not a SEAL serialization (bad magic)")
    fd, path = tempfile.mkstemp(prefix="he-inhibitor-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if context is None:
            obj.load(path)
        else:
            obj.load(context, path)
        return obj
    finally:
        os.unlink(path)


def compression(data: bytes) -> str:
    """Compression recorded in a SEAL header: 'none', 'zlib' or 'zstd'."""
    return _COMPRESSION.get(data[5], f"unknown({data[5]})")


def ciphertext_from_bytes(data: bytes, context: seal.SEALContext) -> seal.Ciphertext:
    """Load a (possibly seeded) ciphertext; SEAL expands the seed on load."""
    return load(seal.Ciphertext(), data, context)
