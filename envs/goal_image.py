"""Goal-image tasks (navigation, manipulation): reach a frame that looks like the goal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from bagel_world.envs.base import BagelWorldEnv, Scene, check_image
from bagel_world.simulator.progress import (
    DISTANCE_BINS,
    LOCATED_YAW_WEIGHT,
    LOCATION_BINS,
    judge_distance,
    judge_location_frames,
    judge_reached,
    located_distance,
    pose_distance,
)

REWARDS = ("judged", "located", "feature")


class GoalImageEnv(BagelWorldEnv):
    """Shared logic of goal-image envs; the task subclasses carry the docs.

    Observation: ``{"frame": (H, W, 3) uint8, "goal": (H, W, 3) uint8}``. Two rewards:

    - ``reward="judged"`` (the default for tasks with a progress judge,
      `bagel_world.simulator.progress.DISTANCE_BINS`): the same model is asked, with the goal
      image in its context, how far the goal is (expected distance over the answer bins) and
      whether it is reached. Reward = `progress_weight` (1) times the decrease of the judged
      distance since the previous frame, plus `success_bonus` when P(reached) >=
      `reached_threshold`, which also terminates the episode. `progress_weight=0` leaves
      only the reached bonus: a sparse reward for models whose judged distance does not
      rank well but whose "reached" answer does (see the README's judged-progress table);
      the distance question is then not asked (`info["judged_distance"]` is None).
    - ``reward="located"`` (tasks with a location judge,
      `bagel_world.simulator.progress.LOCATION_BINS`): the same model is asked where the current
      frame and the goal image were taken (x, z and heading, each frame alone in a fresh session,
      the layout the questions are trained in). The located distance is the metres between the
      two places plus `yaw_weight` metres per 180 degrees of heading between them. Reward = the
      decrease of the located distance since the previous frame, plus `success_bonus` when the
      two places are within `located_radius` metres and `located_angle` degrees (the real twin's
      pose rule), which also terminates the episode.
    - ``reward="feature"``: centred cosine similarity of the frame's and the goal's features
      (see `BagelWorldEnv._features`), plus `success_bonus` on the step it first reaches
      `success_threshold`, which also terminates the episode.
    """

    option_keys: ClassVar[tuple[str, ...]] = ("scene_index", "start_image", "goal_image", "instruction")

    def __init__(self, *args, reward: str | None = None, success_threshold: float = 0.8,
                 reached_threshold: float = 0.5, success_bonus: float = 1.0, progress_weight: float = 1.0,
                 yaw_weight: float = LOCATED_YAW_WEIGHT, located_radius: float = 0.5, located_angle: float = 30.0, **kwargs):
        if reward is None:
            reward = "judged" if self.task in DISTANCE_BINS else "feature"
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if reward == "judged" and self.task not in DISTANCE_BINS:
            raise ValueError(f"reward='judged' needs a progress judge; tasks with one: {sorted(DISTANCE_BINS)}, "
                             f"not {self.task!r} (use reward='feature')")
        if reward == "located" and self.task not in LOCATION_BINS:
            raise ValueError(f"reward='located' needs a location judge; tasks with one: {sorted(LOCATION_BINS)}, "
                             f"not {self.task!r} (use reward='feature')")
        for name, v in (("yaw_weight", yaw_weight), ("located_radius", located_radius),
                        ("located_angle", located_angle)):
            if not (np.isfinite(v) and float(v) >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not -1.0 < float(success_threshold) <= 1.0:
            raise ValueError(f"success_threshold is a cosine similarity in (-1, 1], got {success_threshold!r}")
        if not 0.0 < float(reached_threshold) <= 1.0:
            raise ValueError(f"reached_threshold is a probability in (0, 1], got {reached_threshold!r}")
        if not (np.isfinite(progress_weight) and float(progress_weight) >= 0.0):
            raise ValueError(f"progress_weight must be a finite number >= 0, got {progress_weight!r}")
        if reward != "judged" and float(progress_weight) != 1.0:
            raise ValueError(f"progress_weight weighs the judged distance, so it needs reward='judged' "
                             f"(got reward={reward!r}, progress_weight={progress_weight!r})")
        self.reward_kind = reward
        self.yaw_weight, self.located_radius, self.located_angle = float(yaw_weight), float(located_radius), \
            float(located_angle)
        self._goal_place: np.ndarray | None = None  # (3,) the goal image's judged [x, z, yaw_deg]
        self._located_distance: float | None = None
        self.progress_weight = float(progress_weight)
        self.reached_threshold = float(reached_threshold)
        self._judged_distance: float | None = None  # None before a reset, and with progress_weight=0
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
        if self.reward_kind == "judged":
            info["judged_distance"] = self._judged_distance
        elif self.reward_kind == "located":
            info["located_distance"] = self._located_distance
        else:
            info["goal_similarity"] = self._start_similarity
        return info

    @classmethod
    def _begin_episodes(cls, envs: Sequence[GoalImageEnv]) -> None:
        judged = [e for e in envs if e.reward_kind == "judged"]
        if judged:
            for e, (d, _) in zip(judged, cls._judge(judged, reached=False)):
                e._judged_distance = d
        located = [e for e in envs if e.reward_kind == "located"]
        if located:  # the goals' places and the start frames', in one batch
            places = cls._locate(located, [e._scene.goal for e in located] + [e._frame for e in located])
            for i, e in enumerate(located):
                e._goal_place = places[i]
                e._located_distance = e._located_pose(places[len(located) + i])[0]
        featured = [e for e in envs if e.reward_kind == "feature"]
        if featured:
            # One embed call for all goals and start frames: (2B, D).
            feats = featured[0]._features([e._scene.goal for e in featured] + [e._scene.start for e in featured])
            n = len(featured)
            for i, e in enumerate(featured):
                e._goal_feature = feats[i]
                e._start_similarity = float(feats[i] @ feats[n + i])

    @classmethod
    def _rewards(cls, envs: Sequence[GoalImageEnv]) -> list[tuple[float, bool, dict[str, Any]]]:
        out: list[Any] = [None] * len(envs)
        judged = [i for i, e in enumerate(envs) if e.reward_kind == "judged"]
        if judged:
            for i, (d, p) in zip(judged, cls._judge([envs[i] for i in judged], reached=True)):
                e = envs[i]
                success = p >= e.reached_threshold
                progress = 0.0 if d is None else e.progress_weight * (e._judged_distance - d)
                e._judged_distance = d
                out[i] = (progress + (e.success_bonus if success else 0.0), success,
                          {"judged_distance": d, "judged_reached": p, "is_success": success})
        located = [i for i, e in enumerate(envs) if e.reward_kind == "located"]
        if located:
            for i, place in zip(located, cls._locate([envs[i] for i in located], [envs[i]._frame for i in located])):
                e = envs[i]
                d, metres, yaw = e._located_pose(place)
                success = metres <= e.located_radius and yaw <= e.located_angle
                progress = e._located_distance - d
                e._located_distance = d
                out[i] = (progress + (e.success_bonus if success else 0.0), success,
                          {"located_distance": d, "located_place": [float(v) for v in place], "is_success": success})
        featured = [i for i, e in enumerate(envs) if e.reward_kind == "feature"]
        if featured:
            feats = envs[featured[0]]._features([envs[i]._frame for i in featured])  # (B, D), one embed call
            for i, f in zip(featured, feats):
                e = envs[i]
                sim = float(f @ e._goal_feature)
                success = sim >= e.success_threshold
                out[i] = (sim + (e.success_bonus if success else 0.0), success,
                          {"goal_similarity": sim, "is_success": success})
        return out

    @classmethod
    def _locate(cls, envs: Sequence[GoalImageEnv], frames: Sequence[np.ndarray]) -> np.ndarray:
        """(B, 3) judged [x, z, yaw_deg] of each frame, each alone in a fresh session."""
        return judge_location_frames(envs[0].simulator, envs[0].task, frames)

    def _located_pose(self, place: np.ndarray) -> tuple[float, float, float]:
        """(located distance, metres, heading error in degrees) from a judged place to the goal's."""
        metres, yaw = located_distance(place, self._goal_place)
        return float(pose_distance(metres, yaw, self.yaw_weight)), float(metres), float(yaw)

    @classmethod
    def _judge(cls, envs: Sequence[GoalImageEnv], reached: bool) -> list[tuple[float | None, float]]:
        """(judged expected distance or None, P(reached) or nan) of each env's current frame,
        asked of the simulator with the goal image in context: one score call per question.

        The distance is asked only of envs whose reward uses it (`progress_weight` > 0); the
        others get None and cost nothing for that question."""
        sim, sids, goals = envs[0].simulator, [e._sid for e in envs], [e._scene.goal for e in envs]
        dist: list[float | None] = [None] * len(envs)
        ask = [i for i, e in enumerate(envs) if e.progress_weight > 0]
        if ask:
            d = judge_distance(sim, envs[0].task, [sids[i] for i in ask], [goals[i] for i in ask])
            for i, v in zip(ask, d):
                dist[i] = float(v)
        if not reached:
            return [(d, float("nan")) for d in dist]
        return [(d, float(q)) for d, q in zip(dist, judge_reached(sim, sids, goals))]
