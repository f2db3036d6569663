"""The GPU check's dry run: every step of benchmarks/gpu_check.py on the CPU, so it never rots."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_runs_every_step(conformance_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BAGEL_CONFORMANCE_DIR", str(conformance_dir))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "check.json"
    assert mod.main(["--dry-run", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["dry_run"] and set(rep["correctness"]) == {"float32", "bfloat16"}
    assert all(r["within_tolerance"] for r in rep["correctness"].values())
    assert rep["correctness"]["float32"]["logits"] < 1e-4 and rep["correctness"]["float32"]["image_uint8"] <= 1
    assert rep["load"]["parameters"] > 0
    assert {(r["side"], r["timesteps"]) for r in rep["generation"]} == {(64, 4), (128, 4), (64, 3), (128, 3)}
    assert all(r["step_tflop"] > 0 and r["image_s"] > 0 for r in rep["generation"])
    assert [(r["side"], r["num_envs"]) for r in rep["envs"]] == [(64, 1), (64, 2)]
    assert all(r["env_steps_per_s"] > 0 for r in rep["envs"])
    text = capsys.readouterr().out
    for heading in ("## 1. correctness", "## 2.", "## 3. guided generation", "## 4. imagined env", "## 5. share"):
        assert heading in text


def test_gpu_check_without_cuda_says_what_to_do(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([]) == 2
    assert "use --dry-run" in capsys.readouterr().err
