"""TorchRL on every env id: `GymWrapper` + `check_env_specs` in both action modes.

Skipped when TorchRL is not installed. The imagined envs run on the model-free
`FakeSimulator`; the real twins skip when their simulators are not installed. Text
action spaces become TorchRL `NonTensor` specs; `bagel_world.torchrl_text` makes their
random samples the task's canonical commands instead of TorchRL's placeholder "a string"
(the imagined envs and the real twins register it themselves when TorchRL is imported
before they are made).
"""

from __future__ import annotations

import gymnasium as gym
import pytest

torchrl = pytest.importorskip("torchrl")

import torch  # noqa: E402
from fakes import FakeSimulator  # noqa: E402
from torchrl.envs import GymWrapper  # noqa: E402
from torchrl.envs.libs import gym as torchrl_gym  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

import bagel_world.torchrl_text  # noqa: E402,F401  (registers the conversion, as making an env would)
from bagel_world.envs import ENV_IDS  # noqa: E402
from bagel_world.sims import REAL_ENVS, missing_packages  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402
from bagel_world.torchrl_text import TORCHRL_PLACEHOLDER, CommandSpec  # noqa: E402

TASK_OF = {env_id: task for task, (env_id, *_) in REAL_ENVS.items()}
ALL_IDS = ENV_IDS + tuple(TASK_OF)


def _make(env_id: str, **kwargs) -> gym.Env:
    if env_id in TASK_OF:
        missing = missing_packages(TASK_OF[env_id])
        if missing:
            pytest.skip(f"{env_id} needs {missing}; pip install 'bagel-world[sims]'")
        return gym.make(env_id, **kwargs)
    return gym.make(env_id, simulator=FakeSimulator(default_templates(large=False)), **kwargs)


@pytest.mark.parametrize("mode", ["discrete", "text"])
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env_specs_and_a_random_rollout(env_id, mode):
    env = GymWrapper(_make(env_id, action_mode=mode))
    try:
        check_env_specs(env, seed=0)
        torch.manual_seed(0)
        rollout = env.rollout(4)
        assert rollout.batch_size == (4,)
        actions = rollout.get("action")
        meanings = env._env.unwrapped.get_action_meanings()
        if mode == "text":
            assert isinstance(env.action_spec, CommandSpec)
            sent = actions.tolist()
            assert set(sent) <= set(meanings) and len(set(sent)) > 1, sent  # random commands, all valid
        else:
            assert actions.shape == (4, len(meanings)) and (actions.sum(-1) == 1).all()  # one-hot
    finally:
        env.close()


@pytest.mark.parametrize("env_id", tuple(TASK_OF))
def test_envs_and_twins_register_the_text_spec_when_torchrl_is_loaded(env_id, monkeypatch):
    from bagel_world.envs.base import ActionText
    from bagel_world.sims.base import GrammarText

    registry = torchrl_gym._conversion_registry
    for cls in (ActionText, GrammarText):  # as in a process that never imported bagel_world.torchrl_text
        monkeypatch.delitem(registry.data, cls, raising=False)
    imagined = GymWrapper(_make("BagelNavigate-v0"))  # the imagined env registers it for ActionText
    twin = GymWrapper(_make(env_id, resolution=(32, 32)))  # the twin for GrammarText
    try:
        for env in (imagined, twin):
            assert isinstance(env.action_spec, CommandSpec)
            assert env.action_spec.rand().tolist() in env._env.unwrapped.get_action_meanings()
        twin._env.reset(seed=0)
        with pytest.raises(ValueError, match="TorchRL's placeholder"):
            twin._env.step(TORCHRL_PLACEHOLDER)
    finally:
        imagined.close()
        twin.close()


def test_command_spec_is_seeded_by_torch_and_keeps_its_choices():
    choices = ("turn left 30 degrees", "turn right 30 degrees", "move forward 0.5 m")
    spec = CommandSpec((), example_data=choices[0], choices=choices)

    def draw(s, n=8):
        torch.manual_seed(1)
        return [s.rand().tolist() for _ in range(n)]

    assert draw(spec) == draw(spec) and set(draw(spec)) <= set(choices) and len(set(draw(spec))) > 1
    for derived in (spec.clone(), spec.expand(3), spec.to("cpu")):
        assert derived.choices == choices
    batch = spec.expand(2, 3).rand().tolist()
    assert len(batch) == 2 and all(len(row) == 3 and set(row) <= set(choices) for row in batch)
