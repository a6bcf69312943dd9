"""The layer order of ARCHITECTURE.md, checked on the source: every import (inside functions and under
``TYPE_CHECKING`` too) points to the same or a lower layer, no import cycle, and no function below the stage layer
takes the whole ``Config``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

# lowest first; a module may import its own layer's modules (no cycle) and any lower layer's
LAYERS: list[tuple[str, ...]] = [
    ("pipeline.errors", "pipeline.redact"),
    ("pipeline.config", "pipeline.paths", "pipeline.console", "pipeline.ops"),
    ("pipeline.data",),
    ("pipeline.model",),
    ("pipeline.evaluation",),
    ("pipeline.registry",),
    ("pipeline.training",),
    ("pipeline.stages",),
    ("pipeline.serving", "pipeline.monitoring", "pipeline.scoring"),  # beside the stages: below them, not each other
    ("flows",),
    ("emotion_cli",),
]
BESIDE_STAGES = LAYERS[8]
BELOW_STAGES = [prefix for layer in LAYERS[:7] for prefix in layer]  # take a section of the config, never all of it
PACKAGE_ROOTS = ("pipeline", "flows", "emotion_cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for root in PACKAGE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def imported(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Each project module ``name`` imports, with the line: ``from a.b import c`` is ``a.b.c`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PACKAGE_ROOTS:
                yield target, node.lineno


def layer_of(name: str) -> tuple[int, str]:
    for rank, layer in enumerate(LAYERS):
        for prefix in layer:
            if name == prefix or name.startswith(prefix + "."):
                return rank, prefix
    if name == "pipeline":
        return 0, "pipeline"  # the package's __init__: nothing in it
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in imported(name, path)} - {name} for name, path in MODULES.items()}


def test_every_import_points_to_the_same_or_a_lower_layer() -> None:
    upward = []
    for name, path in MODULES.items():
        rank, prefix = layer_of(name)
        for target, line in imported(name, path):
            target_rank, target_prefix = layer_of(target)
            sideways = rank == target_rank and prefix != target_prefix and prefix in BESIDE_STAGES
            if target_rank > rank or sideways:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not upward, "imports of a higher layer (or of a sibling beside the stages):\n" + "\n".join(upward)


def test_pipeline_never_imports_the_drivers() -> None:
    drivers = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if name.startswith("pipeline")
        for target, _ in imported(name, path)
        if target.split(".")[0] in ("flows", "emotion_cli")
    ]
    assert not drivers


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    edges = {name: {t for t in targets if t in MODULES and t != "pipeline"} for name, targets in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def config_parameters(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.annotation is not None and ast.unparse(arg.annotation).split(".")[-1] == "Config":
                    yield f"{path.relative_to(REPO)}:{node.lineno} {node.name}({arg.arg}: Config)"


@pytest.mark.parametrize("prefix", BELOW_STAGES)
def test_no_function_below_the_stages_takes_the_whole_config(prefix: str) -> None:
    """Each step gets its section or plain values; only stages and the drivers see the whole configuration."""
    offenders = [
        found
        for name, path in MODULES.items()
        if (name == prefix or name.startswith(prefix + ".")) and name != "pipeline.config"
        for found in config_parameters(path)
    ]
    assert not offenders, "\n".join(offenders)
