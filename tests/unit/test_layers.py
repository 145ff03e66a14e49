"""The layers of ARCHITECTURE.md hold: nothing imports upward, and no import cycle.

Every ``import`` of ``src/sluice`` counts: at module level, inside a function, and
under ``if TYPE_CHECKING:``. A lazy import still makes the importer depend on what it
imports, and a type named in a signature is part of the contract; so neither is a way
round a layer. Each module belongs to the package under ``sluice`` it sits in
(``sluice.flow.limits`` to ``flow``, ``sluice.cli.messages`` or ``sluice.cli`` to
``cli``); a top-level module (``sluice.model``) is a package of its own, and
``sluice/__init__.py``, the Python API, is the package ``sluice``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: The layers, lowest first. A package may import its own modules and any package of
#: a lower layer; within its own layer only what ALONGSIDE allows (the ground excepted:
#: its modules are one layer of plain parts, kept in order by the cycle test).
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "ground",
        frozenset(
            {
                "actions",
                "addressing",
                "alerts",
                "clock",
                "config",
                "connections",
                "errors",
                "expiry",
                "heap",
                "logs",
                "metrics",
                "model",
                "netguard",
                "outcome",
                "retention",
                "runbooks",
                "secrets",
                "tracing",
                "twoperson",
            }
        ),
    ),
    ("policy, stores, adapters", frozenset({"flow", "store", "providers"})),
    ("services", frozenset({"worker", "ingress", "ops", "outbox"})),
    ("python api", frozenset({"sluice"})),
    ("http api", frozenset({"api", "console"})),
    ("entry points", frozenset({"embedded", "cli"})),
)
OPEN_LAYERS = frozenset({"ground"})

#: Imports between two packages of one layer, each with its reason.
ALONGSIDE: Mapping[tuple[str, str], str] = {
    ("store", "flow"): "the store keeps policy state in the policy's types (Control, Cell)",
    ("worker", "ingress"): "a worker process also runs the receipt projector",
    ("cli", "embedded"): "`sluice run` starts the embedded stack",
    ("api", "console"): "the API's app mounts the web console at /",
}

LAYER_OF = {package: (rank, name) for rank, (name, pkgs) in enumerate(LAYERS) for package in pkgs}


@dataclass(frozen=True, slots=True)
class Import:
    """One module of ``sluice`` importing another, and where it says so."""

    path: str
    line: int
    importer: str
    imported: str


def package_of(module: str) -> str:
    """``sluice.flow.limits`` -> ``flow``; ``sluice`` -> ``sluice``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_in(source: str, module: str, path: str, modules: Iterable[str]) -> list[Import]:
    """Every import of a ``sluice`` module in ``source`` (the text of ``module``), at any
    depth. ``from pkg import name`` is an import of ``pkg.name`` when that is a module
    (one of ``modules``), else of ``pkg``."""
    known = set(modules)
    is_package = path.endswith("__init__.py")
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, path)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets = subs + ([base] if len(subs) < len(node.names) else [])
        for target in targets:
            if target == "sluice" or target.startswith("sluice."):
                found.append(Import(path, node.lineno, module, target))
    return found


def project_imports() -> list[Import]:
    """Every import between modules of ``src/sluice``."""
    files = {}
    for file in sorted((SRC / "sluice").rglob("*.py")):
        parts = file.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = file
    out: list[Import] = []
    for name, file in files.items():
        rel = str(file.relative_to(SRC.parent))
        out += imports_in(file.read_text(encoding="utf-8"), name, rel, files)
    return out


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """One line per import that climbs a layer or crosses one sideways unallowed, naming
    the file, the line, the import and the rule it breaks."""
    problems = []
    for imp in imports:
        src, dst = package_of(imp.importer), package_of(imp.imported)
        if src == dst:
            continue
        where = f"{imp.path}:{imp.line}: {imp.importer} imports {imp.imported}"
        if src not in LAYER_OF or dst not in LAYER_OF:
            unplaced = src if src not in LAYER_OF else dst
            problems.append(f"{where}: package {unplaced!r} is in no layer of test_layers.py")
            continue
        (src_rank, src_layer), (dst_rank, dst_layer) = LAYER_OF[src], LAYER_OF[dst]
        if dst_rank > src_rank:
            problems.append(
                f"{where}: {src} ({src_layer}) may not import {dst}, a higher layer ({dst_layer})"
            )
        elif dst_rank == src_rank and src_layer not in OPEN_LAYERS and (src, dst) not in ALONGSIDE:
            problems.append(
                f"{where}: {src} may not import {dst}, beside it in layer {src_layer!r} "
                "(move what both need down a layer)"
            )
    return problems


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    graph = {node: set(targets) for node, targets in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def described(component: list[str], imports: Iterable[Import], key: Callable[[str], str]) -> str:
    """The imports that close ``component`` (whose nodes are ``key`` of a module), one
    per line."""
    members = set(component)
    lines = [
        f"  {i.path}:{i.line}: {i.importer} imports {i.imported}"
        for i in imports
        if key(i.importer) in members
        and key(i.imported) in members
        and key(i.importer) != key(i.imported)
    ]
    return f"cycle {' <-> '.join(component)}:\n" + "\n".join(lines)


# -- the project ----------------------------------------------------------------------


def test_layers__no_module_imports_a_higher_layer_or_an_unallowed_neighbour() -> None:
    problems = layer_violations(project_imports())
    assert not problems, "imports against the layers of ARCHITECTURE.md:\n" + "\n".join(problems)


def test_layers__no_import_cycle_between_packages() -> None:
    imports = project_imports()
    graph: dict[str, set[str]] = {}
    for i in imports:
        graph.setdefault(package_of(i.importer), set()).add(package_of(i.imported))
    found = cycles(graph)
    assert not found, "\n".join(described(c, imports, package_of) for c in found)


def test_layers__no_import_cycle_between_modules() -> None:
    imports = project_imports()
    graph: dict[str, set[str]] = {}
    for i in imports:
        graph.setdefault(i.importer, set()).add(i.imported)
    found = cycles(graph)
    assert not found, "\n".join(described(c, imports, lambda m: m) for c in found)


def test_layers__every_package_is_placed_in_one_layer() -> None:
    packages = {package_of(i.importer) for i in project_imports()}
    assert packages <= set(LAYER_OF), sorted(packages - set(LAYER_OF))
    assert sum(len(pkgs) for _, pkgs in LAYERS) == len(LAYER_OF)  # none in two layers


# -- the checker catches what it is for --------------------------------------------------

MODULES = [
    "sluice.flow",
    "sluice.worker",
    "sluice.worker.dispatcher",
    "sluice.api",
    "sluice.api.app",
]


@pytest.mark.parametrize(
    ("module", "path", "source", "expected"),
    [
        (
            "sluice.flow.synthetic",
            "src/sluice/flow/synthetic.py",
            "from __future__ import annotations\n\n"
            "from sluice.worker.dispatcher import Dispatcher\n",
            "src/sluice/flow/synthetic.py:3: sluice.flow.synthetic imports "
            "sluice.worker.dispatcher: flow (policy, stores, adapters) may not import worker, "
            "a higher layer (services)",
        ),
        (
            "sluice.store.synthetic",
            "src/sluice/store/synthetic.py",
            "def late() -> None:\n    from sluice.api import app\n",
            "src/sluice/store/synthetic.py:2: sluice.store.synthetic imports sluice.api.app: "
            "store (policy, stores, adapters) may not import api, a higher layer (http api)",
        ),
        (
            "sluice.flow.synthetic",
            "src/sluice/flow/synthetic.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sluice.worker\n",
            "src/sluice/flow/synthetic.py:3: sluice.flow.synthetic imports sluice.worker: "
            "flow (policy, stores, adapters) may not import worker, a higher layer (services)",
        ),
        (
            "sluice.worker.synthetic",
            "src/sluice/worker/synthetic.py",
            "from ..ops.connections import verify_key\n",
            "src/sluice/worker/synthetic.py:1: sluice.worker.synthetic imports "
            "sluice.ops.connections: worker may not import ops, beside it in layer 'services' "
            "(move what both need down a layer)",
        ),
    ],
    ids=[
        "flow-imports-worker",
        "store-imports-api-in-a-function",
        "under-type-checking",
        "sideways",
    ],
)
def test_checker__names_file_line_and_forbidden_import(
    module: str, path: str, source: str, expected: str
) -> None:
    imports = imports_in(source, module, path, MODULES)
    assert layer_violations(imports) == [expected]


def test_checker__allows_lower_layers_own_package_and_listed_neighbours() -> None:
    source = (
        "from sluice.model import Message\n"
        "from sluice.store import base\n"
        "from sluice.flow.controls import Control\n"
        "from sluice.store._queries import load_queries\n"
    )
    imports = imports_in(source, "sluice.store.synthetic", "s.py", ["sluice.store.base"])
    assert len(imports) == 4
    assert layer_violations(imports) == []


def test_checker__an_unplaced_package_fails() -> None:
    imports = imports_in("import sluice.model\n", "sluice.newthing", "n.py", [])
    assert layer_violations(imports) == [
        "n.py:1: sluice.newthing imports sluice.model: package 'newthing' is in no layer "
        "of test_layers.py"
    ]


def test_checker__finds_a_cycle_and_only_that() -> None:
    graph = {"flow": {"store", "model"}, "store": {"flow"}, "model": {"errors"}, "errors": set()}
    assert cycles(graph) == [["flow", "store"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
