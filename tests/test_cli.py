"""The command line and the examples, run as a user runs them (small budgets)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from bagel_world.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_inspect_preset_prints_every_tensor(capsys):
    assert main(["inspect", "--preset", "bagel-7b-mot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if not line.startswith("#")]
    assert len(rows) == 1223 + 244
    assert "language_model.model.layers.0.self_attn.q_proj_moe_gen.weight\t[3584, 3584]" in rows
    assert lines[0] == "# ema.safetensors: 1223 tensors, 14,607,260,128 parameters"


def test_inspect_reports_bad_tensors_with_exit_1(tiny_ckpt, tmp_path, capsys):
    assert main(["inspect", str(tiny_ckpt)]) == 0
    assert "ema.safetensors: OK" in capsys.readouterr().out
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    sd = load_file(bad / "ema.safetensors")
    del sd["llm2vae.bias"]
    save_file(sd, str(bad / "ema.safetensors"))
    assert main(["inspect", str(bad)]) == 1
    assert "missing    llm2vae.bias" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nope" / "x")]) == 2


def test_generate_and_understand(tiny_ckpt, tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(img)
    out = tmp_path / "out.png"
    assert main(["generate", "--checkpoint", str(tiny_ckpt), "--prompt", "turn left", "--image", str(img),
                 "--steps", "3", "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 64)
    assert main(["understand", "--checkpoint", str(tiny_ckpt), "--image", str(img), "--question", "red?",
                 "--answers", "yes,no"]) == 0
    scores = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert [s[0] for s in scores] == ["yes", "no"] and all(float(s[1]) < 0 for s in scores)


@pytest.mark.slow
def test_demo_and_quickstart_write_gifs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bagel_world.cli", "demo", "--steps", "2", "--out", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(
        f"{e}.gif" for e in ("BagelNavigate-v0", "BagelMultiview-v0", "BagelFutureFrame-v0", "BagelManipulate-v0"))
    gif = Image.open(tmp_path / "d" / "BagelNavigate-v0.gif")
    assert 2 <= gif.n_frames <= 3  # start frame + up to 2 steps (an episode may end early)
    r = subprocess.run([sys.executable, "examples/quickstart.py", str(tmp_path / "q"), "--steps", "1",
                        "--envs", "BagelMultiview-v0"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "q" / "BagelMultiview-v0.gif").is_file()


def test_scenarios_command_saves_real_starts_that_imagined_envs_load(tmp_path, capsys):
    import gymnasium as gym
    import pytest

    from bagel_world.sims import missing_packages

    if missing_packages("navigate"):
        pytest.skip("MiniWorld not installed (pip install 'bagel-world[sims]')")
    out = tmp_path / "nav.npz"
    assert main(["scenarios", "--task", "navigate", "--episodes", "3", "--seed", "1000", "--layout", "one_room",
                 "--out", str(out)]) == 0
    assert "wrote 3 start frames and 3 goals" in capsys.readouterr().out
    env = gym.make("BagelNavigate-v0", scenarios=out, action_mode="discrete")
    obs, info = env.reset(seed=0)
    with np.load(out) as z:
        assert np.array_equal(obs["goal"], z["goals"][info["scene_index"]])
    env.close()
    assert main(["scenarios", "--task", "multiview", "--layout", "maze", "--out", str(out)]) == 2
    assert "--layout applies to the navigate task only" in capsys.readouterr().err
    assert main(["scenarios", "--task", "navigate", "--layout", "attic", "--out", str(out)]) == 2
    assert "unknown layout 'attic'; accepted: ['four_rooms', 'maze', 'one_room']" in capsys.readouterr().err
    # record checks --layout for every task before it records anything
    rec = tmp_path / "rec"
    assert main(["record", "--task", "navigate,manipulate", "--layout", "one_room", "--out", str(rec)]) == 2
    assert "not 'manipulate'" in capsys.readouterr().err and not rec.exists()


def test_serve_help_shows_every_limit_with_its_environment_variable():
    r = subprocess.run([sys.executable, "-m", "bagel_world.cli", "serve", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    for flag in ("--session-ttl-s", "--max-sessions", "--max-sessions-per-client", "--max-body-bytes",
                 "--body-timeout-s", "--max-action-length", "--max-batch-size", "--allowed-host"):
        assert flag in text, flag
    assert "BAGEL_WORLD_SESSION_TTL_S" in text and "default 900.0" in text


def test_serve_takes_limits_from_flags_then_environment(monkeypatch, capsys):
    import bagel_world.server.app as server_app

    got = {}
    monkeypatch.setattr(server_app, "serve", lambda **kw: got.update(kw))
    monkeypatch.setenv("BAGEL_WORLD_SESSION_TTL_S", "60")
    monkeypatch.setenv("BAGEL_WORLD_MAX_SESSIONS", "9")
    monkeypatch.setenv("BAGEL_WORLD_ALLOWED_HOSTS", "box.lan, other.lan")
    assert main(["serve", "--max-sessions", "7", "--max-sessions-per-client", "none"]) == 0
    assert got["session_ttl_s"] == 60.0 and got["max_sessions"] == 7 and got["max_sessions_per_client"] is None
    assert got["allowed_hosts"] == ("box.lan", "other.lan")
    got.clear()
    monkeypatch.setenv("BAGEL_WORLD_SESSION_TTL_S", "soon")
    assert main(["serve"]) == 2 and not got
    err = capsys.readouterr().err
    assert "BAGEL_WORLD_SESSION_TTL_S='soon'" in err and "a number" in err and "Traceback" not in err
    monkeypatch.delenv("BAGEL_WORLD_SESSION_TTL_S")
    assert main(["serve", "--max-batch-size", "0"]) == 2 and not got
    assert "max_batch_size must be >= 1" in capsys.readouterr().err


def test_serve_ray_gets_the_replicas_and_limits_and_replicas_need_ray(monkeypatch, capsys):
    import bagel_world.server.app as server_app
    import bagel_world.server.ray_serve as ray_serve

    got = {}
    monkeypatch.setattr(ray_serve, "serve_ray", lambda **kw: got.update(kw))
    monkeypatch.setattr(server_app, "serve", lambda **kw: got.update(kw, plain=True))
    assert main(["serve", "--ray", "--replicas", "3", "--max-sessions", "5", "--token", "t"]) == 0
    assert got["replicas"] == 3 and got["max_sessions"] == 5 and got["token"] == "t" and "plain" not in got
    got.clear()
    assert main(["serve", "--replicas", "2"]) == 2 and not got
    assert "--replicas 2 needs --ray" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_and_serve_refuse_bad_checkpoints_without_a_traceback(tiny_ckpt, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    ema = bad / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[: ema.stat().st_size // 2])

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "bagel_world.cli", *argv], capture_output=True, text=True,
                              timeout=300, cwd=REPO)

    r = run("inspect", str(bad))  # a bad tensor file is a finding: exit 1, the file named
    assert r.returncode == 1 and "ema.safetensors: UNREADABLE" in r.stdout and "Traceback" not in r.stderr, r
    r = run("serve", "--checkpoint", str(bad), "--port", "1")  # refused before the server starts
    assert r.returncode == 2 and "ema.safetensors" in r.stderr and "Traceback" not in r.stderr, r
    shutil.copy(tiny_ckpt / "ema.safetensors", ema)
    (bad / "llm_config.json").write_text("[1, 2]")
    for argv in (("inspect", str(bad)), ("serve", "--checkpoint", str(bad), "--port", "1")):
        r = run(*argv)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert "llm_config.json: the top level is a list" in r.stderr and "accepted: a JSON object" in r.stderr
