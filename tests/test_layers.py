"""The package's import layers, read from the source (AST), so that the contract holds without running anything.

Layers, top to bottom; a module may import its own component and any component of a lower layer,
never a higher one, and a component of its own layer only along a declared edge (``PEER_EDGES``):

1. ``cli``: the console script (it imports its subcommands by name, from ``cli.COMMANDS``);
2. the subcommands: ``train``, ``evaluate``, ``recalibrate``, ``teacher``, ``bench``, ``service`` and
   the circuit's own commands (``circuit_entry``: ``circuit.predict``, ``circuit.cli``, ``circuit.simulate_cli``);
3. ``circuit`` (compiler and runtime) beside ``model`` (the torch student); neither imports the other,
   so the circuit runs without torch;
4. ``approx`` beside ``ckks``;
5. ``base``: ``paths``, ``data``, ``vocab``, which every layer may use.

Function-level imports count as imports. A function-level import of the package's own modules is a
hidden dependency, so it is allowed only where it keeps torch (or Ray, or SEAL) optional, and then says
so: the comment ``# lazy: <why>`` on its line or the line above.

``KNOWN_VIOLATIONS`` and ``LAZY_PENDING`` list what the circuit runtime and the service still do that
the contract forbids (they are being restructured); each test fails both on a new violation and on a
listed one that has gone, so the lists only shrink.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "he_inhibitor"

LAYERS: list[set[str]] = [
    {"cli"},
    {"train", "evaluate", "recalibrate", "teacher", "bench", "service", "circuit_entry"},
    {"circuit", "model"},
    {"approx", "ckks"},
    {"base"},
]
PEER_EDGES: set[tuple[str, str]] = {
    ("recalibrate", "train"),  # the calibrate command reuses training's calibration and batches
    ("train", "teacher"),  # distillation runs the teacher (its cache, token vectors, labelled copies)
    ("evaluate", "teacher"),  # eval measures the teacher for reference
    ("bench", "service"),  # the bench measures the client/server stack
}
CIRCUIT_ENTRY = {"he_inhibitor.circuit.predict", "he_inhibitor.circuit.cli", "he_inhibitor.circuit.simulate_cli"}
BASE = {"he_inhibitor", "he_inhibitor.paths", "he_inhibitor.data", "he_inhibitor.vocab", "he_inhibitor.embed"}

KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
"""(importer, imported) pairs the layering forbids that the code still has."""

LAZY_PENDING: set[str] = set()
"""Files (relative to the repository) whose function-level imports of the package have not been
sorted yet into removed or marked ``# lazy:``."""

LAZY_MARK = re.compile(r"#\s*lazy:")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name, resolved to a module of the package
    path: str  # the importer's file, relative to the repository
    line: int
    in_function: bool
    marked_lazy: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str:
    """The package module that ``name`` (a module, or a name inside one) refers to."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    rel = str(path.relative_to(ROOT))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" for a in child.names]
            for target in targets:
                if target == "he_inhibitor" or target.startswith("he_inhibitor."):
                    around = " ".join(lines[max(0, child.lineno - 2) : child.end_lineno])
                    found.append(Import(name, resolve(target, known), rel, child.lineno, in_function,
                                        bool(LAZY_MARK.search(around))))
            visit(child, inner)

    visit(tree, False)
    return found


def cli_commands() -> list[Import]:
    """``cli.COMMANDS``: the modules the console script imports by name, as imports of ``he_inhibitor.cli``."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    table = next(n.value for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "COMMANDS")
    return [Import("he_inhibitor.cli", v.value, "he_inhibitor/cli.py", v.lineno, True, True) for v in table.values]


def all_imports() -> list[Import]:
    known = modules()
    found = [i for name, path in known.items() for i in imports_of(name, path, known)]
    return found + cli_commands()


def component(name: str) -> str:
    """The layering component of a module of the package."""
    if name in BASE:
        return "base"
    if name in CIRCUIT_ENTRY:
        return "circuit_entry"
    top = name.split(".")[1]
    if top.startswith("teacher"):  # teacher.py, teacher_cache.py and the teacher's helpers
        return "teacher"
    if top in {"cli", "train", "evaluate", "recalibrate", "bench", "service", "circuit", "model", "approx", "ckks"}:
        return top
    raise AssertionError(f"{name} belongs to no component: add it to test_layers.component")


def layer(comp: str) -> int:
    return next(i for i, members in enumerate(LAYERS) if comp in members)


def allowed(imp: Import) -> bool:
    src, dst = component(imp.importer), component(imp.imported)
    if src == dst:
        return True
    if layer(dst) > layer(src):
        return True
    return layer(dst) == layer(src) and (src, dst) in PEER_EDGES


def violations() -> set[tuple[str, str]]:
    return {(i.importer, i.imported) for i in all_imports() if not allowed(i)}


def test_every_module_has_a_component() -> None:
    for name in modules():
        component(name)


def test_cli_commands_are_modules_of_the_package() -> None:
    known = modules()
    for imp in cli_commands():
        assert imp.imported in known, f"cli.COMMANDS names {imp.imported}, which does not exist"


def test_imports_follow_the_layers() -> None:
    found = violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    assert not new, "imports against the layering (module docstring):\n" + "\n".join(f"  {a} -> {b}" for a, b in new)
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not gone, "fixed: remove from KNOWN_VIOLATIONS:\n" + "\n".join(f"  {a} -> {b}" for a, b in gone)


def test_low_layers_import_no_entry_point() -> None:
    """Stated on its own, as the contract that matters most: the circuit, the CKKS layer, the student and the
    approximations never import the service, the bench, the CLI or training (known violations aside)."""
    low = {"circuit", "ckks", "model", "approx", "base"}
    high = {"service", "bench", "cli", "train", "circuit_entry", "evaluate", "recalibrate", "teacher"}
    bad = {(i.importer, i.imported) for i in all_imports()
           if component(i.importer) in low and component(i.imported) in high} - KNOWN_VIOLATIONS
    assert not bad, sorted(bad)


def test_no_cycles_between_components() -> None:
    """Peer edges are declared one way, so the layers alone forbid cycles; this checks it outright."""
    edges: dict[str, set[str]] = {}
    for i in all_imports():
        if (i.importer, i.imported) in KNOWN_VIOLATIONS:
            continue
        a, b = component(i.importer), component(i.imported)
        if a != b:
            edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("components import in a cycle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_function_level_imports_are_marked_lazy() -> None:
    """A function-level import of the package is allowed only with ``# lazy: <why>`` (torch, Ray or SEAL kept
    optional); the files in ``LAZY_PENDING`` are not sorted yet."""
    unmarked: dict[str, list[str]] = {}
    for i in all_imports():
        if i.in_function and not i.marked_lazy:
            unmarked.setdefault(i.path, []).append(f"{i.path}:{i.line} {i.imported}")
    new = {p: v for p, v in unmarked.items() if p not in LAZY_PENDING}
    assert not new, "unmarked function-level imports:\n" + "\n".join(x for v in new.values() for x in v)
    done = sorted(LAZY_PENDING - set(unmarked))
    assert not done, f"no unmarked function-level imports left: remove from LAZY_PENDING: {done}"
