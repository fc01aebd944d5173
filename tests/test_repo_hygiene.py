"""The repository keeps its own rules: imports only go down the layers of docs/architecture.md, no
library module imports a command-line module, ruff's lint and format are clean, and no text cites a
file outside the repository."""

import ast
import importlib.util
import pathlib
import re
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
    "overrides": 6,  # the override grammar of the command lines
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


# Local-only file access in the package: every user path goes through nest_jax.paths (etils.epath);
# these places touch only local files, each for the reason given.
LOCAL_FILE_ACCESS = {
    "nest_jax/analysis/corruptions.py": "the imagecorruptions package's own frost images",
    "nest_jax/analysis/inception.py": "a temporary local copy of (possibly remote) FID weights",
    "nest_jax/cli_config.py": "config files are Python modules executed from local disk",
    "nest_jax/convert/checkpoint.py": "the atomic rename swap, local branch (object stores: _swap_remote)",
    "nest_jax/convert/common.py": "format sniffing of a local (or locally copied) weights file",
    "nest_jax/convert/export.py": "temporary local files, uploaded through epath",
    "nest_jax/convert/load.py": "reading a local (or locally copied) weights file",
    "nest_jax/convert/timm.py": "type annotations of local weights files",
    "nest_jax/convert/vit_npz.py": "type annotations of local weights files",
    "nest_jax/data/image_folder.py": "image folders are local (a gs:// data_dir is one UserError line)",
    "nest_jax/main.py": "probes /dev/nvidia* device files",
    "nest_jax/train/lock.py": "fcntl lock on a local workdir (object stores: check-then-write)",
}
_FILE_ACCESS = re.compile(
    r"\bos\.path\.|\bimport pathlib\b|\bfrom pathlib import\b|\bpathlib\.|(?<![.\w])open\(|\bos\.(makedirs|replace|open)\("
)


def test_user_paths_go_through_the_path_helper():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = [line.split("#")[0] for line in path.read_text().splitlines()]
        hits = [n for n, code in enumerate(lines, 1) if _FILE_ACCESS.search(code)]
        rel = path.relative_to(REPO).as_posix()
        if hits and rel not in LOCAL_FILE_ACCESS:
            found[rel] = hits
    assert not found, f"os.path/pathlib/open/os.makedirs/os.replace outside nest_jax.paths (lines): {found}"
    stale = [f for f in LOCAL_FILE_ACCESS if not _FILE_ACCESS.search((REPO / f).read_text())]
    assert not stale, f"allow-listed but clean now: remove them from LOCAL_FILE_ACCESS: {stale}"
