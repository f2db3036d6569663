"""BagelFutureFrame-v0: make a physical scene evolve until a yes/no question holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from bagel_world.envs.base import BagelWorldEnv, Scene, check_prompt_text

# The default task: keep the red ball left of the blue box (the canonical pushes move both
# across the view). "Has anything in the scene moved?", the old default, is yes after any
# first step, so every episode ended there.
DEFAULT_QUESTION = "Is the red ball left of the blue box?"
MOVED_QUESTION = "Has anything in the scene moved?"


class BagelFutureFrameEnv(BagelWorldEnv):
    """
    ## Description

    A physical scene (balls and boxes on a table) that a BAGEL world model rolls forward
    frame by frame, given an event ("push the red ball left") or a wait ("wait 0.5 s").
    The goal is a yes/no question about the scene, e.g. "Is the red object in the centre
    of the view?", that the same model judges through its understanding path: act until
    the model answers yes.

    ## Action Space

    `action_mode="text"` (default): `ActionText(max_action_length)`, a `gymnasium.spaces.Text`
    of 1 to `max_action_length` printable ASCII characters (space included), not all blank.
    `action_mode="discrete"`: `Discrete(6)` over the canonical actions: 0 wait 0.1 s,
    1 wait 0.5 s, 2 push the red ball left, 3 push the red ball right, 4 push the blue box
    left, 5 push the blue box right (the default template;
    `env.unwrapped.get_action_meanings()` is authoritative).

    ## Observation Space

    `Box(0, 255, (H, W, 3), uint8)`: the current frame only, (H, W) the task template's
    resolution. The question is not part of the observation (so image-only agents and
    wrappers work); it is in the reset `info["question"]`. Fix it for every episode with
    `question=...` when an agent must not depend on hidden per-scene questions.

    ## Rewards

    Every step: `P(yes)`, the model's probability of answering "yes" rather than "no" to
    the question about the session (its recent frames and actions), from
    `Simulator.score(..., question, ["yes", "no"])` renormalised over the two answers.
    When it reaches `success_threshold` the step earns `success_bonus` on top.
    Range: [0, 1 + success_bonus].

    ## Starting State

    A scene drawn from the scenario set with `np_random`, or `options` with `scene_index`,
    or `start_image` (an RGB PIL image or (H, W, 3) uint8 array of the exact task
    resolution), and optionally `instruction` and `question`. The question is, in order:
    `options["question"]`, the `question` argument, the scene's own question from the
    scenario set, then "Is the red ball left of the blue box?". Unknown keys raise `ValueError`.

    ## Episode End

    Truncated by `TimeLimit` after `max_episode_steps` (32 as registered): the return counts
    the steps on which the answer is yes (with the default question, how long the agent keeps
    the red ball left of the blue box, which pushes can bring about and waiting does not). With `terminate_on_success=True` the
    episode instead ends when `P(yes)` reaches `success_threshold` (`info["is_success"]`),
    for questions about an event to bring about.

    ## Info

    `reset`: `scene_index`, `instruction`, `frame_index`, `question`. `step`:
    `model_text`, `frame_index`, `action_text`, `noise_seed`, `step_latency_s` if asked
    for (see `BagelNavigate-v0`), `p_yes`, `is_success`.

    ## Arguments

    ```python
    gym.make("BagelFutureFrame-v0", simulator=None, checkpoint=None, backend=None, device=None,
             action_mode="text", render_mode=None, max_action_length=128, question=None,
             success_threshold=0.9, success_bonus=1.0, terminate_on_success=False,
             report_latency=False, scenarios=None, resolution=None)
    ```
    See `BagelNavigate-v0` for the shared arguments.

    ## Version History

    * v0: Initial version. The default question became "Is the red ball left of the blue box?" and episodes
      run to the time limit (`terminate_on_success=False`): with the old default every episode
      ended after one step.
    """

    task: ClassVar[str] = "future_frame"
    option_keys: ClassVar[tuple[str, ...]] = ("scene_index", "start_image", "instruction", "question")

    def __init__(self, *args, question: str | None = None, success_threshold: float = 0.9,
                 success_bonus: float = 1.0, terminate_on_success: bool = False, **kwargs):
        if question is not None:
            check_prompt_text(question, "question")
        if not 0.0 < float(success_threshold) <= 1.0:
            raise ValueError(f"success_threshold is a probability in (0, 1], got {success_threshold!r}")
        self.question = question
        self.success_threshold = float(success_threshold)
        self.success_bonus = float(success_bonus)
        self.terminate_on_success = bool(terminate_on_success)
        super().__init__(*args, **kwargs)

    def _check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        opts = super()._check_options(options)
        if "question" in opts:
            check_prompt_text(opts["question"], "options['question']")
        return opts

    def _scene_from_options(self, opts: dict[str, Any], scene_index: int | None) -> Scene:
        scene = super()._scene_from_options(opts, scene_index)
        questions = self.scenarios.questions
        own = questions[scene_index] if scene_index is not None and questions is not None else None
        scene.question = opts.get("question") or self.question or own or DEFAULT_QUESTION
        return scene

    def _reset_info(self) -> dict[str, Any]:
        info = super()._reset_info()
        info["question"] = self._scene.question
        return info

    @classmethod
    def _rewards(cls, envs: Sequence[BagelFutureFrameEnv]) -> list[tuple[float, bool, dict[str, Any]]]:
        # One score call per distinct question (usually one for the whole batch).
        p_yes = np.zeros(len(envs))
        by_question: dict[str, list[int]] = {}
        for i, e in enumerate(envs):
            by_question.setdefault(e._scene.question, []).append(i)
        sim = envs[0].simulator
        for q, idx in by_question.items():
            logp = np.asarray(sim.score([envs[i]._sid for i in idx], q, ["yes", "no"]), np.float64)  # (b, 2)
            p_yes[idx] = 1.0 / (1.0 + np.exp(logp[:, 1] - logp[:, 0]))
        out = []
        for e, p in zip(envs, p_yes):
            success = bool(p >= e.success_threshold)
            out.append((float(p) + (e.success_bonus if success else 0.0), success and e.terminate_on_success,
                        {"p_yes": float(p), "is_success": success}))
        return out
