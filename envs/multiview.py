"""BagelMultiview-v0: look at one static scene from new camera poses, imagined by a BAGEL world model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from bagel_world.envs.base import BagelWorldEnv


class BagelMultiviewEnv(BagelWorldEnv):
    """
    ## Description

    A camera moves around one static scene that a BAGEL world model renders frame by frame
    from the camera motions it is told. The task is exploration: see the scene from views
    that differ from every view seen so far in the episode.

    ## Action Space

    `action_mode="text"` (default): `ActionText(max_action_length)`, a `gymnasium.spaces.Text`
    of 1 to `max_action_length` printable ASCII characters (space included), not all blank.
    `action_mode="discrete"`: `Discrete(6)` over the canonical actions: 0 orbit left 30
    degrees, 1 orbit right 30 degrees, 2 orbit up 15 degrees, 3 orbit down 15 degrees,
    4 zoom in, 5 zoom out (the default template; `env.unwrapped.get_action_meanings()`
    is authoritative).

    ## Observation Space

    `Box(0, 255, (H, W, 3), uint8)`: the current frame only (there is no goal), (H, W) the
    task template's resolution. Being a plain image, it works with image wrappers such as
    `ResizeObservation` and `GrayscaleObservation`.

    ## Rewards

    View novelty: `1 - max_k cos(f_t, f_k)` over all earlier frames k of the episode (the
    start frame included), with f the centred unit features of frames in the model's own
    visual feature space (`Simulator.embed` minus the scenario set's mean feature). A view
    like one already seen earns about 0; a new one up to 2. Note that a text agent can
    also earn novelty by making the model lose the scene; prefer the discrete actions or
    add a consistency term for such agents.

    ## Starting State

    A scene drawn from the scenario set with `np_random`, or `options` with `scene_index`,
    or `start_image` (an RGB PIL image or (H, W, 3) uint8 array of the exact task
    resolution), and optionally `instruction` (the session's task prompt). Unknown keys
    raise `ValueError`.

    ## Episode End

    Never terminated; truncated by `TimeLimit` after `max_episode_steps` (24 as registered).

    ## Info

    `model_text`, `frame_index`, `action_text`, `noise_seed`, `step_latency_s` if asked
    for (see `BagelNavigate-v0`), `novelty` and `is_success` (always False: there is no goal).

    ## Arguments

    ```python
    gym.make("BagelMultiview-v0", simulator=None, checkpoint=None, backend=None, device=None,
             action_mode="text", render_mode=None, max_action_length=128, report_latency=False,
             scenarios=None, resolution=None)
    ```
    See `BagelNavigate-v0` for the shared arguments.

    ## Version History

    * v0: Initial version.
    """

    task: ClassVar[str] = "multiview"

    @classmethod
    def _begin_episodes(cls, envs: Sequence[BagelMultiviewEnv]) -> None:
        feats = envs[0]._features([e._scene.start for e in envs])  # (B, D)
        for e, f in zip(envs, feats):
            e._seen = f[None].copy()  # (K, D) features of the views seen so far

    @classmethod
    def _rewards(cls, envs: Sequence[BagelMultiviewEnv]) -> list[tuple[float, bool, dict[str, Any]]]:
        feats = envs[0]._features([e._frame for e in envs])  # (B, D)
        out = []
        for e, f in zip(envs, feats):
            novelty = float(1.0 - np.max(e._seen @ f))
            e._seen = np.concatenate([e._seen, f[None]])
            out.append((novelty, False, {"novelty": novelty, "is_success": False}))  # no goal to reach
        return out
