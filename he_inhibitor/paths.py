"""Every path the package ships or looks for, named once.

The shipped artifacts live inside the package (``he_inhibitor/assets/``) and
are installed as package data, so a non-editable ``pip install`` gives a
``he-inhibitor`` whose ``demo``, ``predict`` and ``serve`` find their circuit
and whose ``eval`` and ``compile`` find their student. Nothing here imports
the rest of the package, so any module may import it without a cycle.

* ``SHIPPED_STUDENT``: the distilled torch student (config.json,
  model.safetensors, tokenizer.json, metrics.json); ``he-inhibitor eval`` and
  ``compile`` read it when given no ``--model``.
* ``SHIPPED_BUNDLE``: the circuit bundle compiled from that student
  (``he-inhibitor compile`` writes here when given no ``--out``); ``predict``,
  ``simulate``, ``bench``, ``serve`` and ``demo`` read it. Its ``client/``
  directory (``SHIPPED_CLIENT``) is all a client opens.
* ``COSTS_DIR``: per-primitive SEAL timings (``costs_n<N>.json``) that the
  op-count floor in ``predict`` and ``bench`` is computed from.
* ``SHARED_DIR``: ``../shared`` beside a development checkout (SST-2 data, the
  teacher); it does not exist beside an installed wheel, and nothing shipped
  needs it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"

SHIPPED_STUDENT = ASSETS_DIR / "student"
SHIPPED_BUNDLE = ASSETS_DIR / "sst2-inhibitor"  # the directory name is the bundle's name in bench reports
CLIENT_DIR = "client"
SHIPPED_CLIENT = SHIPPED_BUNDLE / CLIENT_DIR

COSTS_DIR = PACKAGE_DIR / "circuit" / "data"

SHARED_DIR = PACKAGE_DIR.parents[1] / "shared"
