"""Request and response bodies of the /v1 API.

Requests forbid unknown fields, so a typo is a 422 rather than a silently ignored
option. Images are base64 PNG strings; limits that depend on the server's settings
(image size, action length) are checked in the handlers, which name the limit.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# Strict types: JSON `true` or "5" is a 422, never coerced into an index or a seed.
# The text patterns are documented in the schema and enforced by the handlers
# (server/validate.py), which name the field and the rule in their message.
_ASCII = "^[\\x20-\\x7e]*$"
_ASCII_NOT_BLANK = "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$"
# A base64 string (a data URL prefix allowed); that it decodes to a PNG within the limits is
# checked by the handler. JSON Schema can state the encoding and media type, not the decoding.
PngB64 = Annotated[str, Field(min_length=1, strict=True, json_schema_extra={
    "pattern": "^(data:image/png;base64,)?(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$",
    "contentEncoding": "base64",
    "contentMediaType": "image/png"}, description="base64-encoded PNG (optionally a data:image/png;base64, URL)")]
Seed = Annotated[int, Field(ge=0, lt=2**63, strict=True, description="per-step noise seed (a JSON integer)")]
Id = Annotated[str, Field(min_length=1, max_length=128, strict=True)]
ActionText = Annotated[str, Field(strict=True, json_schema_extra={"pattern": _ASCII_NOT_BLANK, "minLength": 1},
                                  description="1 to max_action_length (GET /v1/limits) printable ASCII characters "
                                              "(codes 32-126, space included), not all blank")]
Text = Annotated[str, Field(strict=True, json_schema_extra={"pattern": _ASCII},
                            description="at most max_text_length (GET /v1/limits) printable ASCII characters "
                                        "(codes 32-126, space included)")]
NonBlankText = Annotated[str, Field(strict=True, json_schema_extra={"pattern": _ASCII_NOT_BLANK, "minLength": 1},
                                    description="1 to max_text_length (GET /v1/limits) printable ASCII characters "
                                                "(codes 32-126, space included), not all blank")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- sessions (simulator level) ----------------------------------------------------------
class OpenSession(Request):
    task: str = Field(min_length=1, max_length=128, strict=True, description="a task name from GET /v1/tasks")
    frames: list[PngB64] = Field(min_length=1, description="start frames, oldest first")
    prompt: Text | None = None


class SessionCreated(BaseModel):
    session_id: str


class StepSessions(Request):
    session_ids: list[Id] = Field(min_length=1)
    actions: list[ActionText] = Field(min_length=1)
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
    question: NonBlankText
    answers: list[Text] = Field(min_length=1, max_length=64)
    goals: list[PngB64] | None = Field(None, description="one goal image per session, shown before the question "
                                       "(goal-conditioned progress questions)")


class ScoreResult(BaseModel):
    logprobs: list[list[float]]  # (len(session_ids), len(answers)) float32 values


class AskRequest(Request):
    images: list[PngB64] = Field(min_length=1, description="shown to the model as ViT tokens, in order")
    captions: list[Text] | None = Field(None, description="one caption per image, shown before it, "
                                        "e.g. 'Current view:' and 'Goal view:'")
    question: NonBlankText
    answers: list[Text] = Field(min_length=1, max_length=64)
    think: bool = Field(False, strict=True, description="let the model write its reasoning before the answers")
    max_think_tokens: int = Field(256, ge=1, le=1024, strict=True)
    length_normalize: bool = Field(False, strict=True, description="divide each score by its answer's token count")
    seed: int = Field(0, ge=0, lt=2**63, strict=True, description="seed of the reasoning's generator (decoding is greedy)")


class AskResult(BaseModel):
    logprobs: list[float]  # (len(answers),) log P(answer) (per token with length_normalize)
    thought: str | None  # the reasoning, with think


class Closed(BaseModel):
    closed: str


# ---- env episodes ------------------------------------------------------------------------
class EpisodeOptions(Request):
    instruction: Text | None = Field(None, description="the session's task prompt, e.g. 'find the red box'")
    question: Text | None = Field(None, description="BagelFutureFrame-v0 only: the yes/no goal question")
    scene_index: int | None = Field(None, ge=0, lt=2**31, strict=True,
                                    description="start from this scenario instead of a seeded draw")


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
    action: Annotated[int, Field(ge=0, lt=2**31, strict=True)] | ActionText = Field(
        description="an action text, or the index (a JSON integer) of one of the env's canonical actions")


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


# ---- errors, for the OpenAPI document ----------------------------------------------------
class ErrorDetail(BaseModel):
    code: str  # stable and machine-readable, e.g. "unknown_session"
    message: str  # for people: names the field or limit and what is accepted
    details: list[dict[str, Any]] | None = None  # body validation errors: loc, msg, type


class ErrorBody(BaseModel):
    error: ErrorDetail


_WHEN = {
    400: "the request body could not be read as JSON (e.g. not UTF-8)",
    401: "no or wrong bearer token (servers with a token)",
    404: "unknown or expired session, episode, env or task",
    408: "the request body did not arrive within body_timeout_s",
    409: "the episode has ended (terminated or truncated)",
    413: "request body or uploaded image over the server's limits",
    421: "Host header not a loopback or configured name (servers without a token)",
    422: "invalid input: the message names the field and what is accepted",
    429: "the server, or this client's quota, is full; see Retry-After",
    500: "the model call failed",
    503: "out of memory (retry, see Retry-After), still loading, or shutting down",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the ErrorBody schema."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


# Every /v1 route can answer these; routes add 404, 409 and 429 where they apply.
COMMON_ERRORS = error_responses(400, 401, 408, 413, 421, 422, 500, 503)
