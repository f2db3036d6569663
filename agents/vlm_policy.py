"""The model-judged policy: BAGEL's understanding path picks the next instruction.

Each step it asks the simulator (`Simulator.ask`: an understanding context of ViT tokens
only, as the official VLM path)

    [system] "Current view:" [frame ViT] "Goal view:" [goal ViT] [question]

to score every canonical action as the answer (the log-probability of the answer tokens
and the closing token); the best-scoring action is taken (or one is sampled with
`temperature`). With `think=True` the model first writes its reasoning, which precedes
the answers. Tasks without a goal image (multiview, future_frame) get the frame only and a
task question. It talks only to the simulator API, so it runs over a local model, a
`RemoteSimulator` or the server alike.

How far it goes: this is the intended policy for BAGEL-7B-MoT, whose understanding
expert was trained on general image QA. The small world model's understanding training
covers only the state questions of `bagel_world.sims.state_questions` (is the red box
visible, on the left or right, is there a wall ahead, ...), asked about a session's frame
without a goal image; it was never asked which action to take. Measured on it
(`python examples/probe_vlm_policy.py --episodes 5`, 136 states of scripted navigation
episodes): it answers "is the red box visible?" right in 99% of states and "on the left or
the right?" in 91% (majority answers: 79%), but as a policy it picks "turn left 30
degrees" in every state (35% agreement with the scripted action, chance 17%), and in the
real twin it earns a return of exactly 0 (`bagel-world evaluate-agent --agent vlm`).
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np

from bagel_world.agents.base import Agent, canonical_actions, frame_of, goal_of, task_of
from bagel_world.simulator.base import Simulator

log = logging.getLogger(__name__)

GOAL_QUESTION = ("Which action brings the view closer to the goal image? Answer with one of: {actions}.")
QUESTIONS = {
    "multiview": "Which camera motion shows the scene from a view not seen yet? Answer with one of: {actions}.",
    "future_frame": "Which action makes the answer to '{question}' yes? Answer with one of: {actions}.",
}


class ModelJudgedPolicy(Agent):
    """Pick the canonical action BAGEL's understanding path scores highest. See the module doc.

    `simulator`: any `Simulator` that answers questions (`ask`): local, remote or served;
    `engine=` (a `BagelInference`) is wrapped in a `LocalSimulator`. `think`: reason in text
    first (`max_think_tokens`). `length_normalize`: divide each answer's log-probability by its
    token count, so long phrasings are not penalised. `temperature`: 0 takes the argmax, > 0
    samples from softmax(score / temperature).
    """

    name = "vlm"

    def __init__(self, engine=None, simulator: Simulator | None = None, *, question: str | None = None,
                 think: bool = False, max_think_tokens: int = 256, length_normalize: bool = True,
                 temperature: float = 0.0, seed: int | None = None):
        if simulator is None and engine is not None:
            from bagel_world.simulator.local import LocalSimulator

            simulator = LocalSimulator(engine)
        if simulator is None:
            raise ValueError("pass simulator= (a Simulator that answers questions: local, remote or served) "
                             "or engine= (a BagelInference)")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if max_think_tokens < 1:
            raise ValueError(f"max_think_tokens must be >= 1, got {max_think_tokens!r}")
        self.simulator, self.question, self.think = simulator, question, think
        self.max_think_tokens, self.length_normalize, self.temperature = max_think_tokens, length_normalize, temperature
        self._rng = np.random.default_rng(seed)
        self._think_seed = 0 if seed is None else int(seed)
        self.actions: tuple[str, ...] = ()
        self._task = ""
        self._episode_question = ""
        self.last_scores: np.ndarray | None = None  # (A,) of the last act
        self.last_thought: str | None = None

    def reset(self, env: gym.Env, obs: Any, info: dict[str, Any], seed: int | None = None) -> None:
        self._task, self.actions = task_of(env), canonical_actions(env)
        self._episode_question = str(info.get("question") or getattr(env.unwrapped, "question", None)
                                     or "Has anything in the scene moved?")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._think_seed = int(seed)

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        if not self.actions:
            raise RuntimeError("call reset(env, obs, info) before act()")
        scores = self.scores(obs)
        if self.temperature > 0:
            p = np.exp((scores - scores.max()) / self.temperature)
            return int(self._rng.choice(len(p), p=p / p.sum()))
        return int(np.argmax(scores))

    def scores(self, obs: Any) -> np.ndarray:
        """(A,) the model's score of each canonical action for this observation."""
        goal = goal_of(obs)
        images, captions = [frame_of(obs)], ["Current view:"]
        if goal is not None:
            images.append(goal)
            captions.append("Goal view:")
        s, self.last_thought = self.simulator.ask(
            images, self._question(goal is not None), list(self.actions), captions=captions, think=self.think,
            max_think_tokens=self.max_think_tokens, length_normalize=self.length_normalize, seed=self._think_seed)
        if self.think:
            self._think_seed += 1  # a new generator seed per step (decoding itself is greedy)
        self.last_scores = np.asarray(s, np.float64)
        return self.last_scores

    def _question(self, has_goal: bool) -> str:
        listed = "; ".join(self.actions)
        if self.question is not None:
            return self.question.format(actions=listed, question=self._episode_question)
        template = GOAL_QUESTION if has_goal else QUESTIONS.get(self._task, GOAL_QUESTION)
        return template.format(actions=listed, question=self._episode_question)
