"""Goal-image tasks (navigation, manipulation): reach a frame that looks like the goal."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
from gymnasium import spaces

from bagel_world.envs.base import BagelWorldEnv, Scene, check_image


class GoalImageEnv(BagelWorldEnv):
    """Shared logic of goal-image envs; the task subclasses carry the docs.

    Observation: ``{"frame": (H, W, 3) uint8, "goal": (H, W, 3) uint8}``. Reward: centred
    cosine similarity of the frame's and the goal's features (see `BagelWorldEnv._features`),
    plus `success_bonus` on the step it first reaches `success_threshold`, which also
    terminates the episode.
    """

    option_keys: ClassVar[tuple[str, ...]] = ("scene_index", "start_image", "goal_image", "instruction")

    def __init__(self, *args, success_threshold: float = 0.8, success_bonus: float = 1.0, **kwargs):
        if not -1.0 < float(success_threshold) <= 1.0:
            raise ValueError(f"success_threshold is a cosine similarity in (-1, 1], got {success_threshold!r}")
        self.success_threshold = float(success_threshold)
        self.success_bonus = float(success_bonus)
        super().__init__(*args, **kwargs)
        if self.scenarios.goals is None:
            raise ValueError(
                f"the scenario set of task {self.task!r} has no goal images; this env needs them "
                "(or pass options['start_image'] and options['goal_image'] at every reset)"
            )
        self._goal_feature: np.ndarray | None = None  # (D,) centred unit feature of the goal

    def _observation_space(self) -> spaces.Space:
        return spaces.Dict({"frame": self.frame_space, "goal": self.frame_space})

    def _observation(self) -> dict[str, np.ndarray]:
        return {"frame": self._frame.copy(), "goal": self._scene.goal.copy()}

    def _check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        opts = super()._check_options(options)
        if "goal_image" in opts:
            opts["goal_image"] = check_image(opts["goal_image"], "options['goal_image']", self.resolution)
        elif "start_image" in opts:
            raise ValueError(
                f"options['start_image'] needs options['goal_image'] too: {type(self).__name__} scores frames "
                "against a goal image"
            )
        return opts

    def _scene_from_options(self, opts: dict[str, Any], scene_index: int | None) -> Scene:
        scene = super()._scene_from_options(opts, scene_index)
        scene.goal = opts["goal_image"] if "goal_image" in opts else self.scenarios.goals[scene_index].copy()
        return scene

    def _reset_info(self) -> dict[str, Any]:
        info = super()._reset_info()
        info["goal_similarity"] = self._start_similarity
        return info

    @classmethod
    def _begin_episodes(cls, envs: Sequence["GoalImageEnv"]) -> None:
        # One embed call for all goals and start frames: (2B, D).
        feats = envs[0]._features([e._scene.goal for e in envs] + [e._scene.start for e in envs])
        n = len(envs)
        for i, e in enumerate(envs):
            e._goal_feature = feats[i]
            e._start_similarity = float(feats[i] @ feats[n + i])

    @classmethod
    def _rewards(cls, envs: Sequence["GoalImageEnv"]) -> list[tuple[float, bool, dict[str, Any]]]:
        feats = envs[0]._features([e._frame for e in envs])  # (B, D), one embed call
        out = []
        for e, f in zip(envs, feats):
            sim = float(f @ e._goal_feature)
            success = sim >= e.success_threshold
            out.append((sim + (e.success_bonus if success else 0.0), success,
                        {"goal_similarity": sim, "is_success": success}))
        return out
