"""`bagel-world demo` on the model-free fake: progress, why each episode ended, labelled GIFs."""

from __future__ import annotations

from fakes import FakeSimulator
from PIL import Image

from bagel_world.demo import run_demo
from bagel_world.envs import ENV_IDS
from bagel_world.envs import base as envs_base
from bagel_world.simulator.tasks import default_templates


def test_demo_says_why_each_episode_ended_and_labels_the_gif(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(envs_base._SIMULATORS, (None, None, None), FakeSimulator(default_templates(large=False)))
    rows = run_demo(out=tmp_path, steps=3, seed=0)
    assert [r["env"] for r in rows] == list(ENV_IDS)
    for r in rows:
        assert r["ended"] in ("goal reached", "terminated", "time limit", "3 steps done")
        assert (r["ended"] == "3 steps done") == (r["steps"] == 3)
        gif = Image.open(r["gif"])
        assert gif.n_frames == r["steps"] + 1 and gif.height == 64 * 4 + 24  # frames plus a caption strip
    assert "BagelNavigate-v0" in capsys.readouterr().err  # the progress bar names the env
