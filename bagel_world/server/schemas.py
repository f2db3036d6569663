"""Request and response bodies of the /v1 API.

Requests forbid unknown fields, so a typo is a 422 rather than a silently ignored
option. Images are base64 PNG strings; limits that depend on the server's settings
(image size, action length) are checked in the handlers, which name the limit.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

PngB64 = Annotated[str, Field(min_length=1, description="base64-encoded PNG (optionally a data:image/png;base64, URL)")]
Seed = Annotated[int, Field(ge=0, lt=2**63, description="per-step noise seed")]
Id = Annotated[str, Field(min_length=1, max_length=128)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- sessions (simulator level) ----------------------------------------------------------
class OpenSession(Request):
    task: str = Field(min_length=1, max_length=128, description="a task name from GET /v1/tasks")
    frames: list[PngB64] = Field(min_length=1, description="start frames, oldest first")
    prompt: str | None = None


class SessionCreated(BaseModel):
    session_id: str


class StepSessions(Request):
    session_ids: list[Id] = Field(min_length=1)
    actions: list[str] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1)


class StepResult(BaseModel):
    frame: str  # base64 PNG
    text: str | None
    latency_s: float
    frame_index: int


class StepSessionsResult(BaseModel):
    outputs: list[StepResult]


class Frame(BaseModel):
    frame: str  # base64 PNG
    height: int
    width: int


class EmbedRequest(Request):
    frames: list[PngB64] = Field(min_length=1)


class EmbedResult(BaseModel):
    features: list[list[float]]  # (B, D) float32 values


class ScoreRequest(Request):
    session_ids: list[Id] = Field(min_length=1)
    question: str = Field(min_length=1)
    answers: list[str] = Field(min_length=1, max_length=64)


class ScoreResult(BaseModel):
    logprobs: list[list[float]]  # (len(session_ids), len(answers)) float32 values


class Closed(BaseModel):
    closed: str


# ---- env episodes ------------------------------------------------------------------------
class EpisodeOptions(Request):
    instruction: str | None = Field(None, description="the session's task prompt, e.g. 'find the red box'")
    question: str | None = Field(None, description="BagelFutureFrame-v0 only: the yes/no goal question")
    scene_index: int | None = Field(None, ge=0, lt=2**31, description="start from this scenario instead of a "
                                                                      "seeded draw")


class NewEpisode(Request):
    seed: Seed | None = None
    options: EpisodeOptions | None = None
    start_image: PngB64 | None = Field(None, description="own start frame, at the env's resolution")
    goal_image: PngB64 | None = Field(None, description="own goal frame (goal-image envs, with start_image)")


class EpisodeCreated(BaseModel):
    episode_id: str
    env_id: str
    frame: str  # base64 PNG of the first observation
    goal: str | None = None  # base64 PNG of the goal image, for goal-image envs
    info: dict[str, Any]


class EpisodeStep(Request):
    action: Annotated[int, Field(ge=0, lt=2**31)] | str = Field(
        description="an action text, or the index of one of the env's canonical actions")


class EpisodeStepResult(BaseModel):
    frame: str  # base64 PNG
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    step: int  # steps taken in this episode so far
    episode_return: float


class EnvInfo(BaseModel):
    env_id: str
    task: str
    actions: list[str]  # canonical actions; an int action indexes this list; any text is accepted too
    resolution: list[int]  # [H, W] of frames and of accepted start/goal images
    has_goal: bool  # whether episodes need a goal image along with a start image
    option_keys: list[str]
    max_episode_steps: int | None
    description: str


class EnvList(BaseModel):
    envs: list[EnvInfo]


class Metrics(BaseModel):
    sessions: int
    episodes: int
    max_sessions: int
    queue_depth: int
    batches_run: int
    steps_run: int
    steps_failed: int
    mean_batch_size: float
    step_latency_ms_p50: float | None  # queue wait + model, per step request
    step_latency_ms_p95: float | None
    batch_latency_ms_p50: float | None  # the model call alone, per batch
    batch_latency_ms_p95: float | None
