"""SEAL objects <-> bytes through anonymous memory files: nothing touches a disk or /tmp.

sealapi exposes SEAL's save/load only through file paths. `he_inhibitor.ckks.serial`
goes through named temporary files, which is fine for ciphertexts in a
benchmark but not for the service: the client's secret key must never be
written anywhere (a crash or a shared /tmp would leave it behind), and the
server must not write every body it parses to a disk a client chooses the
size of. A Linux memfd has no name in any filesystem and lives in RAM only;
SEAL opens it through /proc/self/fd. This module needs Linux (os.memfd_create).
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import tenseal.sealapi as seal

SEAL_MAGIC = b"\x5e\xa1"
_T = TypeVar("_T")


def _path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def to_bytes(obj: Any) -> bytes:
    """Serialize a SEAL object (or Serializable wrapper) with SEAL's default compression."""
    fd = os.memfd_create("he-inhibitor-seal", os.MFD_CLOEXEC)
    try:
        obj.save(_path(fd))
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def load(obj: _T, data: bytes, context: seal.SEALContext) -> _T:
    """Fill a fresh SEAL object from bytes, validated by SEAL against `context`; returns it."""
    if not data.startswith(SEAL_MAGIC):
        raise ValueError("not a SEAL serialization (bad magic)")
    fd = os.memfd_create("he-inhibitor-seal", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        obj.load(context, _path(fd))
        return obj
    finally:
        os.close(fd)


def ciphertext(data: bytes, context: seal.SEALContext) -> seal.Ciphertext:
    """A (possibly seeded) ciphertext; SEAL expands the seed on load."""
    return load(seal.Ciphertext(), data, context)


def secret_key(data: bytes, context: seal.SEALContext) -> seal.SecretKey:
    return load(seal.SecretKey(), data, context)


def relin_keys(data: bytes, context: seal.SEALContext) -> seal.RelinKeys:
    return load(seal.RelinKeys(), data, context)


def galois_keys(data: bytes, context: seal.SEALContext) -> seal.GaloisKeys:
    return load(seal.GaloisKeys(), data, context)
