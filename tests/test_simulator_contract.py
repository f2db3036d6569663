"""One contract, every backend: the fake, the local model and the HTTP client (over the fake
and over the local model) pass the same checks of the `Simulator` API that envs, agents and
the server rely on."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fakes import FakeSimulator  # noqa: E402

from bagel_world.simulator.base import Simulator, StepOutput  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402

BACKENDS = ["fake", "local", "remote-fake", "remote-local"]


@pytest.fixture(scope="module")
def local_sim(tiny_engine):
    from bagel_world.simulator.local import LocalSimulator

    return LocalSimulator(tiny_engine)


@pytest.fixture(params=BACKENDS)
def sim(request) -> Simulator:
    kind = request.param
    if kind.endswith("fake"):
        base: Simulator = FakeSimulator(default_templates(large=False))
    else:
        base = request.getfixturevalue("local_sim")
    if not kind.startswith("remote"):
        yield base
        base.close_all()
        return
    from bagel_world.server import create_app
    from bagel_world.server.testing import run_in_thread
    from bagel_world.simulator.remote import RemoteSimulator

    with run_in_thread(create_app(base)) as url:
        remote = RemoteSimulator(url)
        yield remote
        remote.close_all()
        remote.disconnect()


def _start(sim: Simulator, task: str = "navigate", seed: int = 0) -> np.ndarray:
    H, W = sim.tasks()[task].resolution
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _exact(sim: Simulator) -> bool:
    # The fake is bit-exact everywhere; a model may differ by rounding between batch layouts.
    return isinstance(sim, FakeSimulator)


def test_tasks_name_their_templates(sim):
    tasks = sim.tasks()
    assert {"navigate", "multiview", "future_frame", "manipulate"} <= set(tasks)
    for name, tpl in tasks.items():
        assert tpl.name == name and len(tpl.resolution) == 2 and tpl.window >= 1
    tasks.clear()  # a copy: callers cannot change the simulator's tasks
    assert "navigate" in sim.tasks()


def test_open_keeps_the_start_frame_and_checks_it(sim):
    start = _start(sim)
    sid = sim.open("navigate", [start])
    np.testing.assert_array_equal(sim.frame(sid), start)
    H, W = sim.tasks()["navigate"].resolution
    for bad in (np.zeros((H + 8, W, 3), np.uint8), np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.uint8)):
        with pytest.raises(ValueError):
            sim.open("navigate", [bad])
    with pytest.raises(ValueError, match="no_such_task|unknown"):
        sim.open("no_such_task", [start])
    sim.close(sid)


def test_step_is_batched_seeded_and_forks_are_independent(sim):
    tpl = sim.tasks()["navigate"]
    a, b = tpl.canonical_actions[0], tpl.canonical_actions[1]
    s1 = sim.open("navigate", [_start(sim)])
    s2 = sim.fork(s1)
    out = sim.step([s1, s2], [a, a], [7, 7])
    assert len(out) == 2 and all(isinstance(o, StepOutput) for o in out)
    for o in out:
        assert o.frame.shape == (*tpl.resolution, 3) and o.frame.dtype == np.uint8 and o.frame_index == 1
    # Same state, action and seed: the same frame (forks are exact copies).
    tol = 0 if _exact(sim) else 2
    assert np.abs(out[0].frame.astype(int) - out[1].frame.astype(int)).max() <= tol
    np.testing.assert_array_equal(sim.frame(s1), out[0].frame)
    # A fork evolves on its own: stepping it leaves the original where it was.
    s3 = sim.fork(s1)
    before = sim.frame(s1)
    sim.step([s3], [b], [3])
    np.testing.assert_array_equal(sim.frame(s1), before)
    # A batch gives each session what it would get alone.
    s4 = sim.fork(s1)
    alone = sim.step([s4], [b], [3])[0].frame
    s5, s6 = sim.fork(s1), sim.fork(s1)
    batched = sim.step([s5, s6], [a, b], [9, 3])[1].frame
    assert np.abs(alone.astype(int) - batched.astype(int)).max() <= tol
    for s in (s1, s2, s3, s4, s5, s6):
        sim.close(s)


def test_close_forgets_and_unknown_ids_raise_key_error(sim):
    sid = sim.open("navigate", [_start(sim)])
    sim.close(sid)
    with pytest.raises(KeyError):
        sim.frame(sid)
    with pytest.raises(KeyError):
        sim.close(sid)
    with pytest.raises(KeyError):
        sim.step([sid], ["wait"], [0])


def test_embed_gives_unit_features(sim):
    frames = [_start(sim, seed=i) for i in range(3)]
    f = np.asarray(sim.embed(frames))
    assert f.shape[0] == 3 and f.ndim == 2 and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-3)


def test_score_depends_on_the_question_and_takes_goals(sim):
    s1 = sim.open("navigate", [_start(sim, seed=1)])
    s2 = sim.open("navigate", [_start(sim, seed=2)])
    answers = ["yes", "no"]
    q1 = sim.score([s1, s2], "Is the red box in view?", answers)
    q2 = sim.score([s1, s2], "Is the floor grey?", answers)
    assert q1.shape == (2, 2) and np.isfinite(q1).all() and (q1 <= 1e-5).all()
    assert not np.allclose(q1, q2), "the question must reach the model"
    goals = [_start(sim, seed=3), _start(sim, seed=4)]
    g = sim.score([s1, s2], "Have you reached the goal view?", answers, goals=goals)
    assert g.shape == (2, 2) and np.isfinite(g).all()
    with pytest.raises(ValueError):
        sim.score([s1, s2], "Have you reached the goal view?", answers, goals=goals[:1])
    sim.close(s1)
    sim.close(s2)


def test_ask_scores_answers_about_images(sim):
    images = [_start(sim, seed=5), _start(sim, seed=6)]
    answers = ["turn left 30 degrees", "move forward 0.5 m", "yes"]
    s1, thought = sim.ask(images, "Which action brings the view closer to the goal?", answers,
                          captions=["Current view:", "Goal view:"])
    assert s1.shape == (3,) and np.isfinite(s1).all() and thought is None
    s2, _ = sim.ask(images, "Is the floor grey?", answers, captions=["Current view:", "Goal view:"])
    assert not np.allclose(s1, s2), "the question must reach the model"
    again, _ = sim.ask(images, "Is the floor grey?", answers, captions=["Current view:", "Goal view:"])
    np.testing.assert_allclose(again, s2, rtol=1e-6)
    _, thought = sim.ask(images[:1], "Where is the red box?", answers, think=True, max_think_tokens=3, seed=1)
    assert isinstance(thought, str)
    with pytest.raises(ValueError):
        sim.ask(images, "Is the floor grey?", answers, captions=["only one"])


def test_scenarios_and_centred_features(sim):
    tpl = sim.tasks()["navigate"]
    scen = sim.scenarios("navigate")
    assert len(scen) >= 1 and scen.frames.shape[1:] == (*tpl.resolution, 3) and scen.frames.dtype == np.uint8
    assert sim.scenarios("navigate") is scen  # loaded once per simulator
    f = sim.centred_features("navigate", list(scen.frames[:3]))
    assert f.shape[0] == min(3, len(scen))
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-3)
    # Centred on the task's own scenes: their mean feature is (close to) the origin.
    mean = sim.feature_mean("navigate")
    assert mean.shape == (f.shape[1],)
    with pytest.raises(KeyError):
        sim.scenarios("no_such_task")
