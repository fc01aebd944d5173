"""`python benchmarks/reproduce.py --smoke`: the whole pipeline (world, training, caching, every
measured claim, the report) on tiny models trained for two steps."""

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_tier_writes_every_claim_with_a_verdict(tmp_path):
    reproduce = _load("reproduce")
    out = tmp_path / "REPRODUCTIONS.md"
    result = reproduce.main(["--smoke", f"--out={out}", f"--checkpoints={tmp_path / 'ckpt'}"])
    (cached,) = (tmp_path / "ckpt").iterdir()  # one folder per tier and settings
    assert cached.name.startswith("smoke-")
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{m}.npz" for m in reproduce.MODELS)
    text = out.read_text()
    rows = result["rows"]
    assert len(rows) == 16
    for r in rows:
        assert r["verdict"] in ("reproduced", "partly", "not reproduced")
        assert r["models"] and set(r["models"]) <= set(reproduce.MODELS)  # what the undertrained flag reads
        assert f"| {r['claim']} |" in text and f"**{r['verdict']}**" in text
        for fig in re.findall(r"docs/reproductions/[\w.]+\.png", r["figure"]):
            assert (tmp_path / fig).is_file()
    for claim, _ in reproduce.NOT_RUN:
        assert f"| {claim} |" in text
    counts = re.search(r"Verdicts: (\d+) reproduced, (\d+) partly, (\d+) not reproduced", text)
    assert counts and sum(map(int, counts.groups())) == len(rows)
    assert all(0.0 <= a <= 1.0 for a in result["accuracy"].values()) and len(result["accuracy"]) == len(
        reproduce.MODELS
    )
