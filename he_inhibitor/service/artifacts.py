"""Where the shipped artifacts live (the names come from he_inhibitor.paths).

The circuit bundle (a directory written by `he-inhibitor compile`) is
the server's; its `client/` directory (tokenizer.json, model.safetensors with
only the word/position tables, signature.json) is all the client reads, so
neither side opens the torch model at run time.
"""

from __future__ import annotations

from he_inhibitor.paths import SHIPPED_BUNDLE, SHIPPED_CLIENT  # noqa: F401  (SHIPPED_CLIENT re-exported)

SHIPPED_CIRCUIT = SHIPPED_BUNDLE
