"""HTTP server: the simulator API and Gymnasium env episodes over a versioned JSON API.

    from bagel_world.server import create_app, serve, ServerSettings
    serve(checkpoint=None, host="127.0.0.1", port=8000, token=None, max_sessions=64)

Needs the `[server]` extra (fastapi, uvicorn). Importing this package loads no model.
Frames travel as PNG: base64 in JSON, or raw `image/png` for GET .../frame with
`Accept: image/png`. Errors are `{"error": {"code", "message"}}` with a 4xx/5xx status.

    GET    /healthz                        liveness (no token)
    GET    /playground/                    the browser playground (static; "/" redirects)
    GET    /v1/metrics                     sessions, queue depth, batches, batch size, latency
    GET    /v1/limits                      the server's request limits
    GET    /v1/tasks                       task templates
    GET    /v1/tasks/{task}/scenarios      the checkpoint's start scenes (.npz), if it ships them
    POST   /v1/sessions                    {task, frames, prompt?} -> {session_id}
    POST   /v1/sessions/step               {session_ids, actions, seeds} -> {outputs}   (batched)
    POST   /v1/sessions/{id}/fork          -> {session_id}
    GET    /v1/sessions/{id}/frame         current frame
    DELETE /v1/sessions/{id}
    POST   /v1/embed                       {frames} -> {features}
    POST   /v1/score                       {session_ids, question, answers} -> {logprobs}
    POST   /v1/ask                         {images, captions, question, answers, think} -> {logprobs, thought}
    GET    /v1/envs                        Bagel env ids with their canonical actions
    POST   /v1/envs/{env_id}/episodes      {seed?, options?, start_image?, goal_image?}
    POST   /v1/episodes/{id}/step          {action: text or canonical index}
    POST   /v1/episodes/{id}/fork
    GET    /v1/episodes/{id}/frame
    GET    /v1/episodes/{id}/gif           the episode so far as an animated GIF
    DELETE /v1/episodes/{id}

Every /v1 route needs `Authorization: Bearer <token>` when the server has a token; a
server without one answers only on loopback. OpenAPI docs are at /docs.

Several simulator replicas on Ray Serve, each session kept on its replica: see
`bagel_world.server.ray_serve` (`bagel-world serve --ray --replicas N`, the `[ray]` extra).
"""

from bagel_world.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]


def __getattr__(name: str):
    # The app (and FastAPI) load on first use, so `bagel-world --help` and the serve flags,
    # which read ServerSettings, need neither the [server] extra nor its import time.
    if name in ("create_app", "serve"):
        from bagel_world.server import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
