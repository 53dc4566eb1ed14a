"""Tests and benchmarks use the library's public names only, and the library holds no test-only code.

(1) No file under tests/ or benchmarks/ imports a private name (one starting with ``_``, dunders aside)
    from exact_ct, flows or stages: neither ``from exact_ct.x import _y`` nor ``x._y`` on a module bound
    by an import (``import exact_ct.x as x``, ``from exact_ct import x``, ``import exact_ct.x``).
(2) Every module under src/exact_ct is reachable from the code that runs in production: stages/ and
    flows/ (dvc.yaml and Prefect run them) and the ``exact`` console script (exact_ct.cli and the
    command modules it loads by name), following imports inside src. A module only tests or
    benchmarks import belongs in tests/support/.

Imports are read with ``ast`` (nothing is imported but exact_ct.cli for its command table), including
imports inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.import_graph import REPO, absolute, owned_modules

OWNED = ("exact_ct", "flows", "stages")  # the packages whose private names tests must not use

#: (file relative to the repository, "module._name") pairs allowed to break rule (1), each with a reason.
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {}

#: src modules allowed to break rule (2): genuine library API nothing in production imports yet.
UNREACHABLE_ALLOWED: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    return owned_modules()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _py_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted(p for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


def private_uses(path: Path, modules: dict[str, Path]) -> set[str]:
    """``module._name`` for each private name of an owned module that `path` imports or reads."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound: dict[str, str] = {}  # local name -> owned module it is bound to
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in OWNED:
                    continue
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:  # `import exact_ct.a.b` binds `exact_ct`; attribute chains are resolved below
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] not in OWNED:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.add(f"{node.module}.{alias.name}")
                elif f"{node.module}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        chain: list[str] = []
        value: ast.expr = node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in bound:
            owner = ".".join([bound[value.id], *reversed(chain)])
            if owner in modules:
                found.add(f"{owner}.{node.attr}")
    return found


def test_tests_and_benchmarks_use_no_private_names_of_the_library() -> None:
    modules = _modules()
    violations = {
        (str(path.relative_to(REPO)), use)
        for path in _py_files("tests", "benchmarks")
        for use in private_uses(path, modules)
    }
    unexpected = sorted(violations - set(PRIVATE_ALLOWED))
    assert not unexpected, (
        "private names used outside the library (make them public, or test the public API):\n"
        + ("\n".join(f"  {file}: {use}" for file, use in unexpected))
    )
    stale = sorted(set(PRIVATE_ALLOWED) - violations)
    assert not stale, f"PRIVATE_ALLOWED entries no longer needed: {stale}"


def _imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The owned modules (and their parent packages) that `path` imports, anywhere in the file."""
    out: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, module, is_package)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            while name:  # importing a.b.c runs a/__init__ and a/b/__init__ too
                if name in modules:
                    out.add(name)
                name = name.rpartition(".")[0]
    return out


def production_roots(modules: dict[str, Path]) -> set[str]:
    from exact_ct.cli import COMMANDS

    roots = {m for m in modules if m.split(".")[0] in ("flows", "stages")}
    roots |= {"exact_ct.cli"} | {f"exact_ct.commands.{module}" for module, _ in COMMANDS.values()}
    return roots


def test_every_library_module_is_used_by_production_code() -> None:
    modules = _modules()
    seen: set[str] = set()
    todo = sorted(production_roots(modules))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_imports(modules[module], module, modules) - seen)
    unreachable = sorted(
        m for m in modules if m.startswith("exact_ct") and m not in seen and modules[m].name != "__init__.py"
    )
    unexpected = [m for m in unreachable if m not in UNREACHABLE_ALLOWED]
    assert not unexpected, (
        "src modules that only tests or benchmarks import (move them to tests/support/): "
        + ", ".join(unexpected)
    )
    stale = sorted(set(UNREACHABLE_ALLOWED) - set(unreachable))
    assert not stale, f"UNREACHABLE_ALLOWED entries no longer needed: {stale}"
