"""Simulator-level sessions: the API `RemoteSimulator` speaks. Steps are batched."""

from __future__ import annotations

import functools
import time

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from bagel_world.server.deps import client_key, get_state, require_token
from bagel_world.server.errors import ApiError, clip
from bagel_world.server.images import png_b64
from bagel_world.server.schemas import (
    COMMON_ERRORS,
    AskRequest,
    AskResult,
    Closed,
    EmbedRequest,
    EmbedResult,
    Frame,
    OpenSession,
    ScoreRequest,
    ScoreResult,
    SessionCreated,
    StepResult,
    StepSessions,
    StepSessionsResult,
    error_responses,
)
from bagel_world.server.state import ServerState
from bagel_world.server.validate import check_action, check_count, check_text, decode_frames, frame_response

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["sessions"], responses=COMMON_ERRORS)

_FRAME_RESPONSES = {200: {"content": {"image/png": {}}, "description": "the frame, as JSON or raw PNG (Accept)"},
                    **error_responses(404)}


@router.post("/sessions", status_code=201, responses=error_responses(429))
async def open_session(body: OpenSession, request: Request,
                       state: ServerState = Depends(get_state)) -> SessionCreated:
    s = state.settings
    if body.task not in state.tasks():
        raise ApiError(422, "unknown_task", f"unknown task {clip(body.task)}; this server has {sorted(state.tasks())}")
    check_text(body.prompt, "prompt", s)
    frames = await run_in_threadpool(decode_frames, body.frames, s)
    owner = client_key(request)
    state.reserve(owner)
    try:
        sim_id = await state.call(state.simulator.open, body.task, frames, body.prompt)
    finally:
        state.release(owner)
    return SessionCreated(session_id=state.add_session(sim_id, body.task, owner))


@router.post("/sessions/step", responses=error_responses(404))
async def step_sessions(body: StepSessions, state: ServerState = Depends(get_state)) -> StepSessionsResult:
    """Step several sessions at once; concurrent requests are batched together too."""
    n = len(body.session_ids)
    if not n == len(body.actions) == len(body.seeds):
        raise ApiError(422, "length_mismatch", f"need one action and one seed per session; got {n} session_ids, "
                                               f"{len(body.actions)} actions, {len(body.seeds)} seeds")
    if len(set(body.session_ids)) != n:
        raise ApiError(422, "duplicate_session", "a session may appear only once per step request")
    check_count(n, "sessions", state.settings.max_sessions)
    for i, a in enumerate(body.actions):
        check_action(a, state.settings, f"actions[{i}]")
    recs = [await state.get_session(cid) for cid in body.session_ids]
    for r in recs:
        r.busy += 1
    try:
        outs = await state.step([r.sim_id for r in recs], body.actions, body.seeds)
    finally:
        for r in recs:
            r.busy -= 1
            r.last_used = time.monotonic()
    frames = await run_in_threadpool(lambda: [png_b64(o.frame) for o in outs])
    return StepSessionsResult(outputs=[
        StepResult(frame=f, text=o.text, latency_s=float(o.latency_s), frame_index=int(o.frame_index))
        for f, o in zip(frames, outs)
    ])


@router.post("/sessions/{session_id}/fork", status_code=201, responses=error_responses(404, 429))
async def fork_session(session_id: str, request: Request,
                       state: ServerState = Depends(get_state)) -> SessionCreated:
    rec = await state.get_session(session_id)
    owner = client_key(request)
    state.reserve(owner)
    try:
        sim_id = await state.call(state.simulator.fork, rec.sim_id)
    finally:
        state.release(owner)
    return SessionCreated(session_id=state.add_session(sim_id, rec.task, owner))


@router.get("/sessions/{session_id}/frame", responses=_FRAME_RESPONSES)
async def session_frame(session_id: str, request: Request, state: ServerState = Depends(get_state)) -> Frame:
    rec = await state.get_session(session_id)
    frame = await state.call(state.simulator.frame, rec.sim_id)
    return await run_in_threadpool(frame_response, request, frame)


@router.delete("/sessions/{session_id}", responses=error_responses(404))
async def close_session(session_id: str, state: ServerState = Depends(get_state)) -> Closed:
    await state.close_session(session_id)
    return Closed(closed=session_id)


@router.post("/embed")
async def embed(body: EmbedRequest, state: ServerState = Depends(get_state)) -> EmbedResult:
    frames = await run_in_threadpool(decode_frames, body.frames, state.settings)
    feats = await state.call(state.simulator.embed, frames)
    return EmbedResult(features=feats.astype("float32").tolist())


@router.post("/score", responses=error_responses(404))
async def score(body: ScoreRequest, state: ServerState = Depends(get_state)) -> ScoreResult:
    s = state.settings
    if len(set(body.session_ids)) != len(body.session_ids):
        raise ApiError(422, "duplicate_session", "a session may appear only once per score request")
    check_count(len(body.session_ids), "sessions", s.max_sessions)
    check_text(body.question, "question", s, required=True)
    for i, a in enumerate(body.answers):
        check_text(a, f"answers[{i}]", s)
    goals = None
    if body.goals is not None:
        if len(body.goals) != len(body.session_ids):
            raise ApiError(422, "invalid_input", f"goals: one per session; got {len(body.goals)} for "
                           f"{len(body.session_ids)} sessions")
        goals = await run_in_threadpool(decode_frames, body.goals, s, "goals")
    recs = [await state.get_session(cid) for cid in body.session_ids]
    out = await state.call(functools.partial(state.simulator.score, goals=goals), [r.sim_id for r in recs],
                           body.question, body.answers)
    return ScoreResult(logprobs=out.astype("float32").tolist())


@router.post("/ask")
async def ask(body: AskRequest, state: ServerState = Depends(get_state)) -> AskResult:
    """Understanding without a session: scores of answers to a question about images."""
    s = state.settings
    check_text(body.question, "question", s, required=True)
    for i, a in enumerate(body.answers):
        check_text(a, f"answers[{i}]", s, required=True)
    if body.captions is not None:
        if len(body.captions) != len(body.images):
            raise ApiError(422, "invalid_input", f"captions: one per image; got {len(body.captions)} for "
                           f"{len(body.images)} images")
        for i, c in enumerate(body.captions):
            check_text(c, f"captions[{i}]", s)
    images = await run_in_threadpool(decode_frames, body.images, s, "images")
    scores, thought = await state.call(functools.partial(
        state.simulator.ask, captions=body.captions, think=body.think, max_think_tokens=body.max_think_tokens,
        length_normalize=body.length_normalize, seed=body.seed), images, body.question, body.answers)
    return AskResult(logprobs=[float(x) for x in scores], thought=thought)
