"""The results tables in README.md and docs/ are exactly what scripts/readme_tables.py generates from the
committed JSON, so no table drifts from the files it summarises."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_tables_equal_the_generated_ones():
    tables = _script()
    for rel in tables.DOCS:
        text = (ROOT / rel).read_text()
        assert tables.render(text) == text, f"{rel}: run python scripts/readme_tables.py"


def test_every_doc_has_its_blocks_and_every_generator_is_used():
    tables = _script()
    used = {m.group("name") for rel in tables.DOCS for m in tables.BLOCK.finditer((ROOT / rel).read_text())}
    assert used == set(tables.TABLES)
