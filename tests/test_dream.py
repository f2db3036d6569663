"""`bagel-world dream`: one round end to end on a tiny model trained from real one-room recordings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bagel_world.dream import Dream, DreamConfig
from bagel_world.sims import missing_packages
from bagel_world.training.data import Shard, list_shards

pytestmark = pytest.mark.skipif(bool(missing_packages("navigate")), reason="the navigate twin needs MiniWorld")

SMALL = dict(ae_steps=2, batch_size=2, holdout_episodes=1, hidden=32, layers=1, heads=2, kv_heads=1,
             intermediate=64, vocab_size=300, window=2)


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """Real one-room recordings (with progress poses) and a tiny model trained on them."""
    from bagel_world.training.pipeline import TrainConfig, run_training
    from bagel_world.training.recorder import record

    root = tmp_path_factory.mktemp("dream-start")
    record("navigate", root / "data", episodes=3, steps=4, seed=1000, uniform=1.0, progress=False,
           env_kwargs={"layout": "one_room"})
    model = run_training(TrainConfig(data=str(root / "data"), out=str(root / "model"), work=str(root / "work"),
                                     world_steps=2, **SMALL), progress=False)
    return root / "data", model


def config(start, tmp_path, **kw) -> DreamConfig:
    data, model = start
    return DreamConfig(**{**dict(
        task="navigate", layout="one_room", agent="planner", rounds=1, work=str(tmp_path / "dream"), init=str(model),
        base_data=str(data), collect_episodes=2, collect_steps=3, train_steps=2,
        train={k: SMALL[k] for k in ("batch_size", "holdout_episodes")}, eval_episodes=1, max_steps=2,
        planner={"candidates": 2, "horizon": 1, "iterations": 1, "elites": 1}), **kw})


@pytest.mark.slow
def test_a_round_collects_with_the_agent_fine_tunes_and_evaluates(start, tmp_path):
    cfg = config(start, tmp_path)
    rows = Dream(cfg, progress=False).run()
    work = tmp_path / "dream"
    assert [r["round"] for r in rows] == [0, 1]
    # 1. Collected: real one-room episodes recorded like `bagel-world record`, on the collection seeds.
    [shard] = [Shard.load(p) for p in list_shards(work / "round-1" / "data", "navigate")]
    assert shard.frames.shape == (2, 4, 64, 64, 3) and shard.seeds.tolist() == [20_000, 20_001]
    assert shard.has_progress and json.loads((work / "round-1" / "data" / "navigate" / "env.json").read_text()) == {
        "layout": "one_room"}
    assert rows[1]["collected"]["episodes"] == 2 and 0.0 <= rows[1]["collected"]["success"] <= 1.0
    # 2. Fine-tuned from the starting model on the base recordings plus the collected ones.
    mix = sorted((work / "round-1" / "mix" / "navigate").glob("shard-*.npz"))
    assert len(mix) == 2  # one collected shard, one base shard
    # the base recordings sort last, so the episodes training holds out are base ones, never collected ones
    assert mix[-1].resolve().parent == (start[0] / "navigate").resolve()
    assert done_file(work, 1).is_file()
    model = work / "round-1" / "model"
    assert (model / "ema.safetensors").is_file() and rows[1]["model"] == str(model)
    assert json.loads((model / "training.json").read_text())["train_config"]["init"] == cfg.init
    # 3. Evaluated on the same held-out seeds each round; the report has a row per round.
    for r in (0, 1):
        ev = json.loads((work / f"round-{r}" / "eval.json").read_text())
        assert ev["agent"] == "planner" and ev["seeds"] == [0] and ev["settings"]["layout"] == "one_room"
    table = (work / "rounds.md").read_text()
    assert "| 0 | - |" in table and "| 1 | 2 (" in table
    # Resumed: every stage is found done, nothing is redone; one more round extends the run.
    stamp = (model / "ema.safetensors").stat().st_mtime_ns
    assert Dream(cfg, progress=False).run() == rows
    assert (model / "ema.safetensors").stat().st_mtime_ns == stamp
    # An export without the done marker (a fine-tune stopped between refreshes) is not taken as done.
    done_file(work, 1).unlink()
    Dream(cfg, progress=False).fine_tune(1)
    assert done_file(work, 1).is_file()
    rows2 = Dream(dataclasses.replace(cfg, rounds=2), progress=False).run()
    assert [r["round"] for r in rows2] == [0, 1, 2] and rows2[:2] == rows
    seeds = Shard.load(list_shards(work / "round-2" / "data", "navigate")[0]).seeds.tolist()
    assert seeds == [20_002, 20_003]  # each round collects on new seeds
    assert len(list((work / "round-2" / "mix" / "navigate").glob("shard-*.npz"))) == 3


@pytest.mark.slow
def test_a_ppo_round_continues_the_previous_policy_on_the_new_model(start, tmp_path):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    cfg = config(start, tmp_path, agent="ppo", ppo_timesteps=16, scenario_episodes=2, planner={},
                 ppo={"num_envs": 2, "n_steps": 8, "batch_size": 8, "n_epochs": 1, "max_episode_steps": 4,
                      "save_every": 0})
    rows = Dream(cfg, progress=False).run()
    work = tmp_path / "dream"
    assert [r["round"] for r in rows] == [0, 1]
    for r in (0, 1):
        args = json.loads((work / f"round-{r}" / "ppo" / "args.json").read_text())
        assert args["env_id"] == "BagelNavigate-v0" and args["scenarios"] == str(work / "scenarios.npz")
        assert args["checkpoint"] == rows[r]["model"]
        assert PPO.load(work / f"round-{r}" / "ppo" / "policy.zip").num_timesteps == 16
    assert args["init"] == str(work / "round-0" / "ppo" / "policy.zip")  # round 1 continues round 0's policy
    with np.load(work / "scenarios.npz") as z:
        assert len(z["frames"]) == 2 and z["goals"].shape == (2, 64, 64, 3)
    ev = json.loads((work / "round-1" / "eval.json").read_text())
    assert ev["agent"] == "ppo" and ev["settings"]["policy"] == str(work / "round-1" / "ppo" / "policy.zip")


def done_file(work, r):
    return work / f"round-{r}" / "train" / "done.json"


def test_dream_refuses_what_it_cannot_do(start, tmp_path):
    with pytest.raises(ValueError, match="'planner' or 'ppo', not 'vlm'"):
        Dream(config(start, tmp_path, agent="vlm"))
    with pytest.raises(ValueError, match="collection seeds 0..1 overlap the evaluation seeds 0..0"):
        Dream(config(start, tmp_path, collect_seed=0))
    with pytest.raises(ValueError, match="collection seeds 30000..30001 overlap the scenario seeds 30000..30511"):
        Dream(config(start, tmp_path, collect_seed=30_000))
    with pytest.raises(ValueError, match=r"train settings \['stepz'\] are not ones dream passes on; accepted: "):
        Dream(config(start, tmp_path, train={"stepz": 3}))
    with pytest.raises(ValueError, match=r"train settings \['device'\] .* \(dream sets .*'device'"):
        Dream(config(start, tmp_path, train={"device": "cpu"}))
    with pytest.raises(ValueError, match=r"ppo settings \['out'\]"):
        Dream(config(start, tmp_path, agent="ppo", planner={}, ppo={"out": "elsewhere"}))
    with pytest.raises(ValueError, match=r"planner settings \['candidats'\]"):
        Dream(config(start, tmp_path, planner={"candidats": 4}))
    with pytest.raises(ValueError, match=r"planner settings \['candidates', .*\] do not apply to agent 'ppo'"):
        Dream(config(start, tmp_path, agent="ppo"))
    with pytest.raises(ValueError, match="--base-data '/nowhere' has no navigate shards"):
        Dream(config(start, tmp_path, base_data="/nowhere"))
    with pytest.raises(ValueError, match="unknown layout 'attic'"):
        Dream(config(start, tmp_path, layout="attic"))
    with pytest.raises(ValueError, match=r"--landmarks is defined for layouts \['one_room'\], not 'maze'"):
        Dream(config(start, tmp_path, layout="maze", landmarks=True))
    with pytest.raises(ValueError, match="unknown success rule 'near'"):
        Dream(config(start, tmp_path, success="near"))
    Dream(config(start, tmp_path))  # writes dream.json
    with pytest.raises(ValueError, match=r"other settings \(\['collect_episodes'\]\)"):
        Dream(config(start, tmp_path, collect_episodes=5))
    with pytest.raises(ValueError, match=r"other settings \(\['landmarks'\]\)"):
        Dream(config(start, tmp_path, landmarks=True))
    # a run written before an option existed resumes with that option's default
    saved = json.loads((tmp_path / "dream" / "dream.json").read_text())
    del saved["landmarks"], saved["success"]
    (tmp_path / "dream" / "dream.json").write_text(json.dumps(saved))
    Dream(config(start, tmp_path))


@pytest.mark.slow
def test_dream_cli_prints_the_rounds(start, tmp_path, capsys):
    from bagel_world.cli import main

    data, model = start
    argv = ["dream", "--layout", "one_room", "--rounds", "1", "--work", str(tmp_path / "d"), "--init", str(model),
            "--base-data", str(data), "--collect-episodes", "1", "--collect-steps", "2", "--train-steps", "1",
            "--train", '{"batch_size": 2, "holdout_episodes": 1}', "--eval-episodes", "1", "--max-steps", "1",
            "--planner", '{"candidates": 2, "horizon": 1, "iterations": 1, "elites": 1}', "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| round | real episodes collected (success) |" in out and "| 1 | 1 (" in out
    with pytest.raises(SystemExit):
        main(["dream", "--agent", "vlm"])
    assert "invalid choice: 'vlm'" in capsys.readouterr().err
