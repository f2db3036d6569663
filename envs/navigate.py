"""BagelNavigate-v0: first-person navigation to a goal view, imagined by a BAGEL world model."""

from __future__ import annotations

from typing import ClassVar

from bagel_world.envs.goal_image import GoalImageEnv


class BagelNavigateEnv(GoalImageEnv):
    """
    ## Description

    A first-person walk through a world that a BAGEL world model imagines frame by frame.
    Each step the model sees the recent frames and the action text, and generates the view
    after the movement. The episode starts from a scene of the model's scenario set (or
    your own start image) and the aim is to reach the view shown in the goal image.

    ## Action Space

    `action_mode="text"` (default): `ActionText(max_action_length)`, a `gymnasium.spaces.Text`
    of 1 to `max_action_length` printable ASCII characters (space included) that is not all
    blank, e.g. ``"turn left 45 degrees"``.
    `action_mode="discrete"`: `Discrete(6)` over the task's canonical actions:

    | index | action               |
    |-------|----------------------|
    | 0     | move forward 0.5 m   |
    | 1     | move backward 0.5 m  |
    | 2     | turn left 30 degrees |
    | 3     | turn right 30 degrees|
    | 4     | strafe left 0.5 m    |
    | 5     | strafe right 0.5 m   |

    (The table is the default template; a checkpoint's `world.json` may redefine it:
    `env.unwrapped.get_action_meanings()` is authoritative.)

    ## Observation Space

    `Dict({"frame": Box(0, 255, (H, W, 3), uint8), "goal": Box(0, 255, (H, W, 3), uint8)})`:
    the current generated frame and the goal image. (H, W) is the task template's
    resolution (64x64 for the small model, 512x512 for BAGEL-7B-MoT).

    ## Rewards

    `reward="judged"` (default): the same model judges progress. With the goal image shown
    after the current frame, it is asked "How far away is the goal view?" (answers: the
    centres of the distance bins 0.5, 1, 1.5, 2, 3, 4, 6 m, i.e. "0.25" ... "7") and "Have
    you reached the goal view?" ("yes"/"no"); see `bagel_world.simulator.progress`. The
    judged distance is the expected bin centre under the model's answer probabilities.
    Every step: `progress_weight` (default 1) times the judged distance before the step
    minus the judged distance after it (m, positive when the agent got closer), plus
    `success_bonus` when P(yes) to the second question is at least `reached_threshold`
    (default 0.5); `progress_weight=0` keeps only that bonus (a sparse reward; the distance
    question is then not asked and `judged_distance` is None). `info` carries
    `judged_distance`, `judged_reached` and `is_success`.

    `reward="located"`: the same model is asked where the current frame and the goal image were
    taken: "How far are you from the green wall?", "... the blue wall?" (0.5 m bins over the 8 m
    one room) and "Which way are you facing?" (15 degree bins), each frame alone in a fresh session; see
    `bagel_world.simulator.progress.LOCATION_BINS`. It needs a model trained with
    `--locate-share` on one-room recordings (meant for `layout="one_room", landmarks=True`
    scenarios, whose wall panels make a view's place readable). The located distance is the
    metres between the two judged places plus `yaw_weight` (3: 30 degrees count as 0.5 m) metres per 180 degrees of
    heading between them. Every step: the located distance before the step minus after it,
    plus `success_bonus` when the judged places are within `located_radius` (0.5 m) and
    `located_angle` (30 degrees), the real twin's pose rule. `info` carries
    `located_distance`, `located_place` ([x, z, heading] of the new frame) and `is_success`.

    `reward="feature"`: the cosine similarity, in the model's own visual feature space
    (`Simulator.embed`, mean-pooled SigLIP features), between the new frame and the goal,
    after subtracting the mean feature of the task's scenario set (so unrelated scenes
    score about 0 and identical ones 1). When it reaches `success_threshold` the step
    earns `success_bonus` on top. Range: [-1, 1 + success_bonus]. `info` carries
    `goal_similarity` and `is_success`.

    ## Starting State

    `reset(seed=...)` draws a scene index uniformly from the scenario set (the model's, or
    `scenarios=`) with `np_random`.
    `options` may instead give `{"scene_index": int}`, or `{"start_image": img,
    "goal_image": img}` (RGB PIL image or (H, W, 3) uint8 array of exactly the task
    resolution; nothing is resized), and optionally `{"instruction": str}` (the session's
    task prompt, e.g. "find the red box"). Any other key raises `ValueError`.

    ## Episode End

    Terminated when the goal is judged reached (`reward="judged"`: P(yes) >=
    `reached_threshold`; `reward="located"`: the judged places within the tolerances) or the
    goal similarity reaches `success_threshold`
    (`reward="feature"`); both set `info["is_success"]`. Truncated by `TimeLimit` after
    `max_episode_steps` (64 as registered).

    ## Info

    `reset`: `scene_index` (-1 for a user's image), `instruction`, `frame_index` (0),
    `judged_distance` or `goal_similarity` (of the start frame). `step`: `model_text`
    (text a backend produced with the frame; None from today's backends, which do not think
    while stepping: `BagelInference.interleave_generate(think=True)` does, for one prompt),
    `frame_index`, `action_text` (what the model was told), `noise_seed`, `is_success`,
    and `judged_distance` + `judged_reached` or
    `goal_similarity`; with `report_latency=True` also `step_latency_s` (wall time of the
    batched simulator step).

    ## Arguments

    ```python
    gym.make("BagelNavigate-v0", simulator=None, checkpoint=None, backend=None, device=None,
             action_mode="text", render_mode=None, max_action_length=128,
             reward="judged", reached_threshold=0.5, success_threshold=0.8, success_bonus=1.0, progress_weight=1.0,
             yaw_weight=3.0, located_radius=0.5, located_angle=30.0, report_latency=False, scenarios=None,
             resolution=None)
    ```
    `simulator`: a `Simulator` to use; otherwise one is made with
    `make_simulator(checkpoint, backend, device)` and shared by every env of the process
    with the same three values (`checkpoint=None` is the shipped default model,
    `backend="http://..."` a bagel-world server). `render_mode="rgb_array"` makes `render()`
    return the current frame; `render_mode="human"` shows each frame in a pygame window
    (`pip install 'bagel-world[human]'`; without pygame it raises `ValueError` saying so).
    `report_latency=True` adds the wall-clock `step_latency_s` to the step `info`; it is
    off by default because it is the one part of a step that a seed does not fix, and
    `check_env` compares the infos of two seeded steps.
    `scenarios`: the start scenes (and goals) to draw from instead of the model's own set: a
    `ScenarioSet` or the path of its `.npz`, e.g. the real twin's starts and goals saved by
    `bagel-world scenarios`; rewards stay centred on the model's own set. `resolution`: None
    or the model's (H, W) (anything else raises `ValueError`), so the same keywords make the
    real twin. In text mode `action_space.sample()` draws one of the canonical actions.

    ## Version History

    * v0: Initial version. The judged-progress reward became the default (the feature
      reward is `reward="feature"`); `report_latency` became opt-in, so `check_env` passes
      on the defaults. `progress_weight` was added (default 1: the reward is unchanged).
      `reward="located"` was added (with `yaw_weight`, `located_radius`, `located_angle`).
    """

    task: ClassVar[str] = "navigate"
