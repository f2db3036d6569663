"""Env-level episodes: the registered Bagel Gymnasium envs, run on the server.

For the browser playground and clients that want rewards without running Gymnasium.
Each episode is a real `gym.make(env_id, simulator=...)` whose simulator routes steps
through the server's batcher, so concurrent episodes share model batches.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from bagel_world.server.deps import client_key, get_state, require_token
from bagel_world.server.errors import ApiError, clip, from_simulator_error
from bagel_world.server.images import make_gif, png_b64
from bagel_world.server.schemas import (
    COMMON_ERRORS,
    Closed,
    EnvInfo,
    EnvList,
    EpisodeCreated,
    EpisodeStep,
    EpisodeStepResult,
    Frame,
    NewEpisode,
    error_responses,
)
from bagel_world.server.state import EpisodeRecord, ServerState
from bagel_world.server.validate import check_action, check_text, decode_frames, frame_response

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["envs"], responses=COMMON_ERRORS)


# ---- the catalogue -----------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _registered() -> dict[str, tuple[type, int | None]]:
    """Bagel env id -> (env class, max_episode_steps), from Gymnasium's registry."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    from bagel_world.envs import ENV_IDS

    out = {}
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        out[env_id] = (load_env_creator(spec.entry_point), spec.max_episode_steps)
    return out


def _description(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"## Description\s*\n(.*?)(\n\s*\n|\n##|$)", doc, re.S)
    return " ".join((m.group(1) if m else doc.split("\n\n")[0]).split())


def catalogue(state: ServerState) -> dict[str, EnvInfo]:
    """The envs this server can run: those whose task the simulator knows."""
    tasks = state.tasks()
    out = {}
    for env_id, (cls, max_steps) in _registered().items():
        tpl = tasks.get(cls.task)
        if tpl is None:
            continue
        out[env_id] = EnvInfo(
            env_id=env_id, task=cls.task, actions=list(tpl.canonical_actions), resolution=list(tpl.resolution),
            has_goal="goal_image" in cls.option_keys, option_keys=list(cls.option_keys),
            max_episode_steps=max_steps, description=_description(cls),
        )
    return out


# ---- running env code --------------------------------------------------------------------
async def _env_call(state: ServerState, fn: Callable, *args) -> Any:
    """Run env code on an env thread; its input errors are 422, model failures 5xx."""
    try:
        return await asyncio.get_running_loop().run_in_executor(state.env_executor, fn, *args)
    except ApiError:
        raise
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_input", str(exc)) from exc
    except Exception as exc:
        raise from_simulator_error(exc) from exc


def _make_and_reset(state: ServerState, env_id: str, seed: int | None, options: dict[str, Any]):
    import gymnasium as gym

    env = gym.make(env_id, simulator=state.env_simulator, action_mode="text",
                   max_action_length=state.settings.max_action_length, disable_env_checker=True)
    try:
        obs, info = env.reset(seed=seed, options=options or None)
    except BaseException:
        env.close()
        raise
    return env, obs, info


def _fork_env(env):
    """An independent copy of a running env (BagelWorldEnv's deepcopy forks its session)."""
    return copy.deepcopy(env)


def _split(obs) -> tuple[np.ndarray, np.ndarray | None]:
    """(frame, goal) of an observation: goal-image envs observe {"frame", "goal"}."""
    if isinstance(obs, dict):
        return np.asarray(obs["frame"]), (np.asarray(obs["goal"]) if "goal" in obs else None)
    return np.asarray(obs), None


def jsonable(x: Any) -> Any:
    """`info` values as JSON: numpy scalars to numbers, small arrays to lists, big ones described."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 64 else f"<array {x.dtype} {list(x.shape)}>"
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return f"<{type(x).__name__}>"  # never a repr: it may carry addresses or internals


def _resolve_action(action: int | str, env_info: EnvInfo, state: ServerState) -> str:
    if isinstance(action, int):
        if not 0 <= action < len(env_info.actions):
            listed = ", ".join(f"{i}={a!r}" for i, a in enumerate(env_info.actions))
            raise ApiError(422, "invalid_action", f"action index {action} is out of range for {env_info.env_id}; "
                                                  f"accepted 0..{len(env_info.actions) - 1}: {listed}")
        return env_info.actions[action]
    check_action(action, state.settings, "action")
    return action


def _check_still_open(state: ServerState, episode_id: str, rec: EpisodeRecord) -> None:
    """404 when the episode was closed or expired while this request waited for its lock.

    Call it right after taking `rec.lock`: whatever ran before (a DELETE queued ahead of a
    fork, say) may have closed the env this request is about to use.
    """
    if state.episodes.get(episode_id) is not rec:
        raise ApiError(404, "unknown_episode", f"episode {clip(episode_id)} was closed while this request waited "
                                               f"for it")


# ---- endpoints ---------------------------------------------------------------------------
@router.get("/envs")
def list_envs(state: ServerState = Depends(get_state)) -> EnvList:
    return EnvList(envs=list(catalogue(state).values()))


@router.post("/envs/{env_id}/episodes", status_code=201, responses=error_responses(404, 429))
async def new_episode(env_id: str, body: NewEpisode, request: Request,
                      state: ServerState = Depends(get_state)) -> EpisodeCreated:
    envs = catalogue(state)
    if env_id not in envs:
        raise ApiError(404, "unknown_env", f"unknown env {clip(env_id)}; this server runs {sorted(envs)}")
    # 1. Options: only the documented keys reach the env (no paths, no URLs).
    options = body.options.model_dump(exclude_none=True) if body.options is not None else {}
    for key in ("instruction", "question"):
        check_text(options.get(key), f"options.{key}", state.settings)
    images = [(k, v) for k, v in (("start_image", body.start_image), ("goal_image", body.goal_image)) if v]
    for key, b64 in images:
        options[key] = (await run_in_threadpool(decode_frames, [b64], state.settings, key))[0]
    # 2. Make the env and reset it on an env thread (reset may step the model for rewards).
    owner = client_key(request)
    state.reserve(owner)
    try:
        env, obs, info = await _env_call(state, _make_and_reset, state, env_id, body.seed, options)
    finally:
        state.release(owner)
    frame, goal = _split(obs)
    eid = state.new_id("ep")
    state.episodes[eid] = EpisodeRecord(env=env, env_id=env_id, frames=[frame], rewards=[], goal=goal, owner=owner)
    return EpisodeCreated(episode_id=eid, env_id=env_id, frame=png_b64(frame),
                          goal=None if goal is None else png_b64(goal), info=jsonable(info))


@router.post("/episodes/{episode_id}/step", responses=error_responses(404, 409))
async def step_episode(episode_id: str, body: EpisodeStep,
                       state: ServerState = Depends(get_state)) -> EpisodeStepResult:
    rec = await state.get_episode(episode_id)
    text = _resolve_action(body.action, catalogue(state)[rec.env_id], state)
    async with rec.lock:
        _check_still_open(state, episode_id, rec)
        if rec.done:
            raise ApiError(409, "episode_finished", f"episode {clip(episode_id)} has ended (terminated or truncated); "
                                                    f"start a new one with POST /v1/envs/{rec.env_id}/episodes")
        rec.busy += 1
        try:
            obs, reward, terminated, truncated, info = await _env_call(state, rec.env.step, text)
        finally:
            rec.busy -= 1
            rec.last_used = time.monotonic()
        frame, _ = _split(obs)
        rec.frames.append(frame)
        del rec.frames[: max(0, len(rec.frames) - state.settings.max_episode_frames)]
        rec.rewards.append(float(reward))
        rec.done = bool(terminated or truncated)
    return EpisodeStepResult(frame=await run_in_threadpool(png_b64, frame), reward=float(reward),
                             terminated=bool(terminated), truncated=bool(truncated), info=jsonable(info),
                             step=len(rec.rewards), episode_return=float(sum(rec.rewards)))


@router.post("/episodes/{episode_id}/fork", status_code=201, responses=error_responses(404, 429))
async def fork_episode(episode_id: str, request: Request,
                       state: ServerState = Depends(get_state)) -> EpisodeCreated:
    rec = await state.get_episode(episode_id)
    owner = client_key(request)
    async with rec.lock:
        _check_still_open(state, episode_id, rec)
        state.reserve(owner)
        try:
            env = await _env_call(state, _fork_env, rec.env)
        finally:
            state.release(owner)
        eid = state.new_id("ep")
        state.episodes[eid] = EpisodeRecord(env=env, env_id=rec.env_id, frames=list(rec.frames),
                                            rewards=list(rec.rewards), goal=rec.goal, done=rec.done, owner=owner)
    return EpisodeCreated(episode_id=eid, env_id=rec.env_id, frame=png_b64(rec.frames[-1]),
                          goal=None if rec.goal is None else png_b64(rec.goal),
                          info={"forked_from": episode_id, "step": len(rec.rewards)})


@router.get("/episodes/{episode_id}/frame", responses={200: {"content": {"image/png": {}}}, **error_responses(404)})
async def episode_frame(episode_id: str, request: Request, state: ServerState = Depends(get_state)) -> Frame:
    rec = await state.get_episode(episode_id)
    return await run_in_threadpool(frame_response, request, rec.frames[-1])


@router.get("/episodes/{episode_id}/gif", response_class=Response,
            responses={200: {"content": {"image/gif": {}}, "description": "the episode's frames as an animated GIF"},
                       **error_responses(404)})
async def episode_gif(episode_id: str, state: ServerState = Depends(get_state)) -> Response:
    rec = await state.get_episode(episode_id)
    fps = float(rec.env.metadata.get("render_fps", 4))
    data = await run_in_threadpool(make_gif, list(rec.frames), fps)
    return Response(data, media_type="image/gif",
                    headers={"Content-Disposition": f'attachment; filename="{rec.env_id}-{episode_id}.gif"'})


@router.delete("/episodes/{episode_id}", responses=error_responses(404))
async def close_episode(episode_id: str, state: ServerState = Depends(get_state)) -> Closed:
    rec = await state.get_episode(episode_id)
    async with rec.lock:
        _check_still_open(state, episode_id, rec)
        await state.close_episode(episode_id)
    return Closed(closed=episode_id)
