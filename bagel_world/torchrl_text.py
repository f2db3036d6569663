"""TorchRL specs for the text action spaces: random text actions are the task's commands.

TorchRL's `GymWrapper` turns a `gymnasium.spaces.Text` into a `NonTensor` spec whose
`rand()` always returns the placeholder string ``"a string"``, so `env.rollout()`,
`check_env_specs` and `RandomPolicy` would send that to the env; a real twin rejects it
(`ValueError`: not a command). This module registers a conversion (TorchRL's public
`register_gym_spec_conversion`) for bagel-world's `ActionText` spaces: a `CommandSpec`,
a `NonTensor` whose `rand()` draws one of the space's canonical actions per element with
torch's RNG (so `torch.manual_seed` fixes it), as `action_space.sample()` does. Spaces
without canonical actions keep TorchRL's default.

Importing this module imports TorchRL and registers the conversion. The real twins import
it themselves when TorchRL is already imported as they are made, so
``GymWrapper(gym.make(...))`` and ``GymEnv(env_id)`` need nothing else; import it yourself
(``import bagel_world.torchrl_text``) if you import TorchRL only after making the env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import NonTensorData, lazy_stack, set_capture_non_tensor_stack
from torchrl.data import NonTensor
from torchrl.envs.libs.gym import register_gym_spec_conversion

TORCHRL_PLACEHOLDER = "a string"  # what TorchRL's NonTensor.rand() gives for a Text space


class CommandSpec(NonTensor):
    """A `NonTensor` spec of text commands whose random samples are drawn from `choices`."""

    def __init__(self, *args: Any, choices: Sequence[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.choices = tuple(choices) or (self.example_data,)

    def rand(self, shape: Any = None) -> Any:
        shape = torch.Size([shape]) if isinstance(shape, int) else torch.Size(shape or ())
        total = torch.Size([*shape, *self._safe_shape])

        def pick(dims: torch.Size) -> Any:
            if not dims:
                return NonTensorData(data=self.choices[int(torch.randint(len(self.choices), ()))], device=self.device)
            return lazy_stack([pick(dims[1:]) for _ in range(dims[0])])

        with set_capture_non_tensor_stack(False):
            return pick(total)


def _keeping_choices(name: str) -> Any:
    base = getattr(NonTensor, name)

    def method(self: CommandSpec, *args: Any, **kwargs: Any) -> Any:
        out = base(self, *args, **kwargs)  # NonTensor builds the derived spec without `choices`
        for spec in out if isinstance(out, tuple) else (out,):
            if isinstance(spec, CommandSpec):
                spec.choices = self.choices
        return out

    method.__name__ = method.__qualname__ = name
    return method


for _name in ("to", "clone", "expand", "unsqueeze", "squeeze", "_reshape", "_unflatten", "__getitem__", "unbind"):
    setattr(CommandSpec, _name, _keeping_choices(_name))


def _convert(space: Any, dtype: Any = None, device: Any = None, **_: Any) -> NonTensor:
    commands = tuple(getattr(space, "canonical_actions", ()))
    if not commands:
        return NonTensor((), device=device, example_data=TORCHRL_PLACEHOLDER)  # TorchRL's default
    return CommandSpec((), device=device, example_data=commands[0], choices=commands)


def register() -> None:
    """Register the conversion for bagel-world's text action spaces (idempotent)."""
    from bagel_world.envs.base import ActionText
    from bagel_world.sims.base import GrammarText

    # Exact classes: TorchRL looks a space's own type up first, then its bases (where
    # its "Text" entry could win).
    for cls in (ActionText, GrammarText):
        register_gym_spec_conversion(cls)(_convert)


register()
