"""SST-2 loading.

The project must run offline, so a local directory holding GLUE SST-2's
``train.tsv`` and ``dev.tsv`` (header ``sentence<TAB>label``, unquoted fields;
see ``../shared/data/README.md``) is the primary source. Hugging Face
``datasets`` is only a fallback for users with network access and no files,
and is imported lazily so that it is never a dependency.

No torch here: the client, the circuit and ``he-inhibitor eval`` read TSVs
without the training stack.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from he_inhibitor.paths import SHARED_DIR

SPLITS: dict[str, str] = {"train": "train", "dev": "validation"}
"""Our split name -> the Hugging Face GLUE/sst2 split name."""

DATA_ENV = "HE_INHIBITOR_DATA"
"""Environment variable that names a directory of train.tsv/dev.tsv, overriding the default."""

HEADER = ["sentence", "label"]
LABELS = {"0": 0, "1": 1}


def default_data_dir() -> Path | None:
    """The local SST-2 directory to use when none is given, or None.

    ``$HE_INHIBITOR_DATA`` wins when set (returned even if it does not exist,
    so that a typo fails loudly instead of silently reaching for the network).
    Otherwise ``../shared/data/sst2`` beside the repository root, which exists
    in a development checkout but not in an installed wheel.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    candidate = SHARED_DIR / "data" / "sst2"
    return candidate if candidate.is_dir() else None


def load_sst2_tsv(path: str | os.PathLike[str]) -> tuple[list[str], list[int]]:
    """Read a TSV with header ``sentence<TAB>label`` (labels 0/1) into two lists.

    Fields are read with ``csv.QUOTE_NONE`` because SST-2 sentences contain
    bare quote characters that a quoting reader would merge across lines.
    Wholly blank lines are skipped (a trailing blank line is common in
    hand-made files); anything else malformed raises ``ValueError`` naming the
    file and line, since a silently dropped or mislabelled row would bias
    every accuracy computed from it.
    """
    path = Path(path)
    sentences: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != HEADER:
            raise ValueError(
                f"{path}, line 1: expected the header 'sentence<TAB>label', got {header!r}"
            )
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected 2 tab-separated columns "
                    f"(sentence, label), got {len(row)}: {row!r}"
                )
            sentence, label = row
            if label.strip() not in LABELS:
                raise ValueError(
                    f"{path}, line {reader.line_num}: label must be 0 or 1, got {label!r}"
                )
            sentences.append(sentence)
            labels.append(LABELS[label.strip()])
    return sentences, labels


def load_sst2(
    data_dir: str | os.PathLike[str] | None = None, split: str = "train"
) -> tuple[list[str], list[int]]:
    """Load an SST-2 split (``"train"`` or ``"dev"``) as (sentences, labels).

    Reads ``<data_dir>/<split>.tsv``. Without ``data_dir``, uses
    :func:`default_data_dir`; only when that finds nothing does it fall back
    to Hugging Face ``datasets`` (GLUE ``sst2``; its ``validation`` split is
    our ``dev``), which needs the package and network access or a warm cache.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown SST-2 split {split!r}; expected one of {sorted(SPLITS)}")
    if data_dir is None:
        data_dir = default_data_dir()
    if data_dir is not None:
        return load_sst2_tsv(Path(data_dir) / f"{split}.tsv")
    return _load_sst2_hf(split)


def _load_sst2_hf(split: str) -> tuple[list[str], list[int]]:
    """GLUE/sst2 from Hugging Face ``datasets``, with errors that say what to do instead."""
    hint = (
        f"pass a directory holding train.tsv and dev.tsv (--data-dir, or ${DATA_ENV}); "
        "see ../shared/data/README.md"
    )
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"no local SST-2 data found and Hugging Face `datasets` is not installed: {hint}"
        ) from exc
    try:
        ds = load_dataset("glue", "sst2", split=SPLITS[split])
    except Exception as exc:  # offline, hub errors, cache misses: all have the same remedy
        raise RuntimeError(
            f"could not load GLUE/sst2 ({SPLITS[split]}) with `datasets` "
            f"({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    return list(ds["sentence"]), [int(x) for x in ds["label"]]
