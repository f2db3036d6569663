"""BagelManipulate-v0: a robot arm moved to a goal configuration, imagined by a BAGEL world model."""

from __future__ import annotations

from typing import ClassVar

from bagel_world.envs.goal_image import GoalImageEnv


class BagelManipulateEnv(GoalImageEnv):
    """
    ## Description

    A robot arm on a table, seen by a fixed camera, in a world that a BAGEL world model
    imagines frame by frame. Each step the model sees the recent frames and a gripper
    command, and generates the frame after the robot carries it out. The aim is to bring
    the scene to the state shown in the goal image.

    ## Action Space

    `action_mode="text"` (default): `ActionText(max_action_length)`, a `gymnasium.spaces.Text`
    of 1 to `max_action_length` printable ASCII characters (space included), not all blank.
    `action_mode="discrete"`: `Discrete(8)` over the canonical actions: 0 move gripper
    left, 1 right, 2 forward, 3 backward, 4 up, 5 down, 6 open gripper, 7 close gripper
    (the default template; `env.unwrapped.get_action_meanings()` is authoritative).

    ## Observation Space

    `Dict({"frame": Box(0, 255, (H, W, 3), uint8), "goal": Box(0, 255, (H, W, 3), uint8)})`,
    (H, W) the task template's resolution.

    ## Rewards

    As in `BagelNavigate-v0`: each step, the centred cosine similarity between the new
    frame and the goal in the model's visual feature space, plus `success_bonus` on the
    step it reaches `success_threshold`. Range: [-1, 1 + success_bonus].

    ## Starting State

    A scene drawn from the scenario set with `np_random`, or `options` with `scene_index`,
    or `start_image` + `goal_image` (exact task resolution, RGB uint8), and optionally
    `instruction`. Unknown keys raise `ValueError`.

    ## Episode End

    Terminated when the goal similarity reaches `success_threshold`; truncated by
    `TimeLimit` after `max_episode_steps` (64 as registered).

    ## Info

    As in `BagelNavigate-v0`: `model_text`, `frame_index`, `action_text`, `noise_seed`,
    `goal_similarity`, `is_success`, and `step_latency_s` if asked for.

    ## Arguments

    ```python
    gym.make("BagelManipulate-v0", simulator=None, checkpoint=None, backend=None, device=None,
             action_mode="text", render_mode=None, max_action_length=128,
             success_threshold=0.8, success_bonus=1.0, report_latency=False, scenarios=None,
             resolution=None)
    ```
    See `BagelNavigate-v0` for the shared arguments.

    ## Version History

    * v0: Initial version.
    """

    task: ClassVar[str] = "manipulate"
