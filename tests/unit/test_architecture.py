"""The layering holds: flows -> stages -> library, and the library has no import cycles.

Imports are read from the source (tests/support/import_graph.py), including imports inside functions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.import_graph import REPO, SRC, cycles, imported_names, library_graph, module_name


def test_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_library_has_no_import_cycles():
    graph = library_graph()
    assert len(graph) > 50, "the walk found too few modules to be meaningful"
    assert cycles(graph) == []


# The `exact` command line (exact_ct/commands) is the top layer: `exact retrain` and `exact serve` start flows.
@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("src/exact_ct", ("flows", "stages", "tests", "benchmarks")), ("stages", ("flows", "tests"))],
)
def test_layers_import_only_downwards(folder, forbidden):
    offenders = []
    for path in sorted((REPO / folder).rglob("*.py")):
        if path.is_relative_to(SRC / "exact_ct" / "commands"):
            continue
        module = module_name(path, REPO / folder)
        for name in imported_names(path, module):
            if name.split(".")[0] in forbidden:
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def _closure(graph: dict[str, set[str]], roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        # a submodule's import runs its packages' __init__ too
        parent = module.rpartition(".")[0]
        todo.extend(graph.get(module, set()) | ({parent} if parent in graph else set()))
    return seen


def _module_file(module: str) -> Path:
    path = SRC / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _stage_deps() -> list[tuple[str, str, list[str]]]:
    """(stage, stage script module, deps) for every stage of dvc.yaml."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    rows = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        cmd = " ".join(body["cmd"]) if isinstance(body["cmd"], list) else body["cmd"]
        script = next(word for word in cmd.split() if word.startswith("stages."))
        rows.append((name, script, [str(d) if isinstance(d, str) else next(iter(d)) for d in body["deps"]]))
    return rows


@pytest.mark.parametrize(("stage", "script", "deps"), _stage_deps(), ids=[row[0] for row in _stage_deps()])
def test_dvc_stage_depends_on_the_code_it_runs(stage, script, deps):
    """A change to any library module a stage imports (directly or not) must make `dvc repro` rerun it."""
    path = REPO / Path(*script.split(".")).with_suffix(".py")
    graph = library_graph()
    roots = set()
    for name in imported_names(path, script):
        while name and name not in graph:
            name = name.rpartition(".")[0]
        if name:
            roots.add(name)
    # exact_ct/__init__.py holds only the version string; a release bump should not rerun the pipeline
    needed = {_module_file(m) for m in _closure(graph, roots) if m != "exact_ct"}
    covered = [REPO / d for d in deps]
    missing = sorted(
        str(f.relative_to(REPO)) for f in needed if not any(f == c or f.is_relative_to(c) for c in covered)
    )
    assert f"{path.relative_to(REPO)}" in deps
    assert missing == [], f"{stage}: add these to its deps in dvc.yaml"
