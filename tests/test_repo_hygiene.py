"""The repository keeps its own rules: imports only go down the layers of docs/architecture.md, no
library module imports a command-line module, ruff's lint and format are clean, and no text cites a
file outside the repository."""

import ast
import importlib.util
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "nest_jax"

# Layer of each part of the package: a module may import its own layer and the layers below.
LAYERS = {
    "errors": 0,
    "paths": 0,  # the one user-path helper (etils.epath)
    "models": 1,
    "convert": 2,
    "data": 3,
    "train": 3,
    "analysis": 4,
    "viz": 4,  # plots of analysis results: the analysis evaluators' `figures` draw them
    "analyze": 6,
    "export": 6,  # python -m nest_jax.export and its library entry (reads workdirs: train, data)
    "main": 6,
    "cli_config": 6,
}
# Deliberate upward imports, each done lazily inside a function and documented where it happens.
PLUGIN_IMPORTS = {
    # The evaluator registry finds kinds defined by the analysis layer (nest_jax/train/evaluators).
    ("train", "analysis"),
    # The training loop's default data module is nest_jax.data (same layer, imported lazily).
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "nest_jax" or len(parts) < 2:
        return None
    if parts[-1] == "__main__":  # a command line (python -m nest_jax.convert): the CLI layer
        return "main"
    return parts[1]


def _imports(path: pathlib.Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        yield path, ".".join(rel.parts)


def test_imports_only_go_down_the_layers():
    problems = []
    for path, module in _modules():
        here = _part(module)
        if here not in LAYERS:
            continue
        for target, line in _imports(path):
            there = _part(target)
            if there is None or there not in LAYERS or there == here:
                continue
            if LAYERS[there] > LAYERS[here] and (here, there) not in PLUGIN_IMPORTS:
                problems.append(f"{path.relative_to(REPO)}:{line} ({here}) imports {target} ({there})")
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_library_module_imports_a_command_line_module():
    problems = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for path, module in _modules()
        if not module.endswith("__main__")
        for target, line in _imports(path)
        if target.endswith("__main__")
    ]
    assert not problems, "\n".join(problems)


def test_no_text_cites_files_outside_the_repository():
    problems = []
    for path in list(PACKAGE.rglob("*.py")) + list((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]:
        text = path.read_text()
        for needle in ("REFERENCE.md", "REFERENCE §", "the brief"):
            if needle in text:
                problems.append(f"{path.relative_to(REPO)}: {needle!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    # The interpreter's own ruff: `venv/bin/python -m pytest` works without an activated venv.
    assert importlib.util.find_spec("ruff"), "ruff is a dev dependency: pip install -e '.[dev]'"
    proc = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
