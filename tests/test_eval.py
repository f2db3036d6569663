"""`bagel-world eval`: controllability, persistence, the report, and its bad-input errors."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import gymnasium as gym
import numpy as np
import pytest
from fakes import FakeSimulator

from bagel_world.simulator.base import Simulator, StepOutput
from bagel_world.simulator.tasks import default_templates
from bagel_world.training.controllability import Controllability, imagine_each, pairwise_mse, real_each
from bagel_world.training.persistence import colour_masks, persistence

ACTIONS = ("left", "right", "up", "down", "stay")
MOVES = {"left": (0, -4), "right": (0, 4), "up": (-4, 0), "down": (4, 0), "stay": (0, 0)}


def scene(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def move(frame: np.ndarray, action: str) -> np.ndarray:
    return np.roll(frame, MOVES[action], axis=(0, 1))


class ShiftWorld(gym.Env):
    """A deterministic 'real' env: the frame is rolled by the action."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.frame = scene(seed)
        return self.frame.copy(), {}

    def step(self, action):
        self.frame = move(self.frame, action)
        return self.frame.copy(), 0.0, False, False, {}


class ModelSim(Simulator):
    """An imagined simulator that follows the action (`obeys=True`) or ignores it."""

    def __init__(self, obeys: bool):
        self.obeys, self.frames, self.n = obeys, {}, 0

    def tasks(self):
        return {}

    def open(self, task, frames, prompt=None):
        self.n += 1
        self.frames[self.n] = np.asarray(frames[-1]).copy()
        return self.n

    def fork(self, sid):
        self.n += 1
        self.frames[self.n] = self.frames[sid].copy()
        return self.n

    def step(self, sids, actions, seeds):
        out = []
        for s, a in zip(sids, actions):
            self.frames[s] = move(self.frames[s], a) if self.obeys else self.frames[s]
            out.append(StepOutput(self.frames[s].copy(), None, 0.0, 1))
        return out

    def close(self, sid):
        del self.frames[sid]

    def frame(self, sid):
        return self.frames[sid]

    def embed(self, frames):
        raise NotImplementedError

    def score(self, sids, question, answers):
        raise NotImplementedError


def controllability_of(sim: Simulator, episodes: int = 3, steps: int = 4) -> Controllability:
    env, c = ShiftWorld(), Controllability(ACTIONS)
    for seed in range(episodes):
        prefix = [ACTIONS[(seed + t) % 4] for t in range(steps)]
        for t in range(steps):
            state = real_each(env, seed, prefix[:t], ["stay"])[0]
            c.add(imagine_each(sim, "t", state, ACTIONS, seed), real_each(env, seed, prefix[:t], ACTIONS))
    return c


def test_a_model_that_follows_the_action_scores_one():
    c = controllability_of(ModelSim(obeys=True))
    assert c.accuracy == 1.0 and c.pairs == 3 * 4 * len(ACTIONS)
    assert np.array_equal(c.confusion, np.diag(np.diag(c.confusion)))


def test_a_model_that_ignores_the_action_scores_chance():
    c = controllability_of(ModelSim(obeys=False))
    # One frame for every action: only 'stay' (whose outcome is the unchanged frame) is right.
    assert c.accuracy == pytest.approx(1 / len(ACTIONS)) == pytest.approx(c.chance)
    assert (c.confusion[:, ACTIONS.index("stay")] == c.confusion.sum(1)).all()


def test_indistinguishable_outcomes_are_not_counted():
    c = Controllability(("a", "b", "c"))
    f = scene(0)
    real = np.stack([f, f, move(f, "left")])  # a and b lead to the same frame
    c.add(real.copy(), real)
    assert c.pairs == 1 and c.skipped == 2 and c.accuracy == 1.0 and c.chance == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"\(3, H, W, 3\)"):
        c.add(real[:2], real[:2])


def test_pairwise_mse_matches_direct():
    a, b = np.stack([scene(1), scene(2)]), np.stack([scene(3), scene(1), scene(4)])
    d = pairwise_mse(a, b)
    want = [[np.mean((x.astype(float) - y.astype(float)) ** 2) for y in b] for x in a]
    assert np.allclose(d, want) and d[0, 1] == 0


def test_persistence_counts_objects_that_stay_and_those_that_fade():
    grey = np.full((16, 16, 3), 128, np.uint8)
    real = grey.copy()
    real[4:8, 4:8] = (220, 30, 30)  # a red box
    assert colour_masks(real, ("red", "blue"))[0].sum() == 16 and not colour_masks(real, ("blue",)).any()
    assert persistence("navigate", [real], [real]) == 1.0
    assert persistence("navigate", [grey], [real]) == 0.0  # it faded
    half = grey.copy()
    half[4:8, 4:6] = (220, 30, 30)
    assert persistence("navigate", [half], [real]) == pytest.approx(0.5)
    assert np.isnan(persistence("navigate", [real], [grey]))  # nothing in view in truth


@pytest.fixture(scope="module")
def fake():
    return FakeSimulator(default_templates(False))


def test_eval_writes_controllability_and_persistence(fake, tmp_path):
    from bagel_world.sims import missing_packages
    from bagel_world.training.evaluate import evaluate

    if missing_packages("navigate"):
        pytest.skip(f"the navigate twin needs {missing_packages('navigate')}")

    res = evaluate(fake, tasks=("navigate",), seeds=[0], horizons=(1, 2), episode_steps=4, control_states=2,
                   out=tmp_path, progress=False)
    saved = json.loads((tmp_path / "eval.json").read_text())
    c = saved["tasks"]["navigate"]["controllability"]
    assert set(c) >= {"accuracy", "chance", "pairs"} and c["states"] == 2
    assert c["pairs"] + c["skipped_pairs"] == 2 * 6 and np.array(c["confusion"]).sum() == c["pairs"]
    per = saved["tasks"]["navigate"]["per_horizon"]
    assert set(per) == {"1", "2"} and {"psnr", "copy_psnr", "ssim", "persistence", "copy_persistence"} <= set(per["1"])
    for name in ("eval.md", "strip_navigate.png", "confusion_navigate.png", "rollout_navigate.npz"):
        assert (tmp_path / name).is_file(), name
    assert res["tasks"]["navigate"]["controllability"]["pairs"] == c["pairs"]
    assert saved["tasks"]["navigate"]["sampling"] == json.loads(json.dumps(asdict(fake.tasks()["navigate"].sampling)))
    assert saved["tasks"]["navigate"]["autoencoder"] is None  # a fake has no autoencoder to bound it
    assert "autoencoder PSNR" not in (tmp_path / "eval.md").read_text()


def test_autoencoder_ceiling_is_the_round_trip_of_the_real_frames(tiny_engine):
    """The ceiling compares each real frame with itself encoded and decoded (one posterior draw
    per frame, as `encode_image` with that seed would make), batch by batch."""
    import torch

    from bagel_world.simulator.local import LocalSimulator
    from bagel_world.training.evaluate import autoencoder_ceiling, markdown_table, mse, psnr_of_mse, ssim

    sim = LocalSimulator(tiny_engine)
    H, W = sim.tasks()["navigate"].resolution
    rng = np.random.default_rng(0)
    frames = [np.kron(rng.integers(0, 256, (H // 8, W // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
              for _ in range(35)]  # two batches of the round trip
    c = autoencoder_ceiling(sim, "navigate", frames)
    back = [tiny_engine.decode_tokens(tiny_engine.encode_image(tiny_engine.prepare_image(f),
                                                               torch.Generator().manual_seed(k)), (H, W))
            for k, f in enumerate(frames)]
    assert c["frames"] == 35
    assert c["psnr"] == pytest.approx(psnr_of_mse(np.mean([mse(f, b) for f, b in zip(frames, back)])), rel=1e-4)
    assert c["ssim"] == pytest.approx(np.mean([ssim(f, b) for f, b in zip(frames, back)]), rel=1e-4)
    assert autoencoder_ceiling(FakeSimulator(default_templates(False)), "navigate", frames) is None
    md = markdown_table({"tasks": {"navigate": {"per_horizon": {}, "autoencoder": c, "controllability": {
        "accuracy": 0.5, "chance": 0.17, "pairs": 6, "states": 1}}}, "lpips": "n/a"})
    assert f"| navigate | {c['psnr']:.2f} | {c['ssim']:.3f} |" in md


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=("swim",)), r"unknown task 'swim'; accepted: navigate"),
    (dict(seeds=[]), r"at least 1 episode"),
    (dict(horizons=(1, 80)), r"horizons \[80\] are outside 1\.\.64"),
    (dict(trained_tasks=("multiview",)), r"world\.json has no task 'navigate'"),
])
def test_eval_bad_input_names_the_value(fake, tmp_path, kwargs, match):
    from bagel_world.training.evaluate import evaluate

    args = dict(tasks=("navigate",), seeds=[0], horizons=(1,), episode_steps=64, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=match):
        evaluate(fake, **{**args, **kwargs})


def test_eval_cli_rejects_bad_arguments_before_loading(capsys):
    from bagel_world.cli import main

    assert main(["eval", "--task", "swim"]) == 2
    assert "unknown task 'swim'; accepted: navigate, multiview, future_frame, manipulate or 'all'" in capsys.readouterr().err
    assert main(["eval", "--episodes", "0"]) == 2
    assert "--episodes must be >= 1, got 0" in capsys.readouterr().err
    assert main(["eval", "--horizons", "1,x"]) == 2
    assert "--horizons must be comma-separated whole numbers" in capsys.readouterr().err
    assert main(["eval", "--sampling", "steps=3"]) == 2
    assert "sampling override 'steps=3' is not NAME=VALUE with NAME one of num_timesteps" in capsys.readouterr().err


def test_sampling_overrides_change_only_the_named_settings():
    from bagel_world.inference.settings import SamplingSettings

    base = SamplingSettings(num_timesteps=5, cfg_text_scale=3.0)
    new = base.overridden("num_timesteps=3, cfg_text_scale=1.5,cfg_interval=0.4:1")
    assert (new.num_timesteps, new.cfg_text_scale, new.cfg_interval) == (3, 1.5, (0.4, 1.0))
    assert replace(new, num_timesteps=5, cfg_text_scale=3.0, cfg_interval=base.cfg_interval) == base
    for spec, match in [("num_timesteps=2.5", "num_timesteps takes a whole number, got '2.5'"),
                        ("cfg_interval=3", "cfg_interval takes LO:HI"), ("", "empty sampling override"),
                        ("num_timesteps=1", "num_timesteps must be >= 2"),
                        ("cfg_renorm_type=l2", "'l2' is not one of")]:
        with pytest.raises(ValueError, match=match):
            base.overridden(spec)


def test_eval_with_sampling_samples_the_same_model_with_the_new_settings(tiny_engine):
    from bagel_world.simulator.local import LocalSimulator
    from bagel_world.training.evaluate import with_sampling

    sim = LocalSimulator(tiny_engine)
    swept = with_sampling(sim, "num_timesteps=3")
    assert swept.engine is sim.engine
    for task, tpl in swept.tasks().items():
        assert tpl.sampling == replace(sim.tasks()[task].sampling, num_timesteps=3)
    with pytest.raises(ValueError, match="need a local simulator"):
        with_sampling(FakeSimulator(default_templates(False)), "num_timesteps=3")
