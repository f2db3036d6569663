"""The `bagel-world` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import typing
from pathlib import Path

from bagel_world.simulator.tasks import TASK_NAMES
from bagel_world.training.config import option_flag


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One option per field of dataclass `cls`: `--field-name` (or the field's metadata "flag"),
    its type, default and metadata "help". The dataclass stays the one source of defaults."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = option_flag(f)
        kind = hints[f.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif base in (int, float, str):
            shown = "" if default is None or "default" in help_text else f" (default: {default})"
            parser.add_argument(flag, dest=f.name, type=base, default=default, help=help_text + shown)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line type for {kind}")


def _cmd_inspect(args) -> int:
    from bagel_world.config import BagelConfig, preset
    from bagel_world.model.loader import (
        CheckpointError,
        check_file,
        expected_state,
        parameter_counts,
        resolve_checkpoint,
    )

    if args.preset:
        cfg = preset(args.preset)
        ema, ae = expected_state(cfg)
        for fname, layout in (("ema.safetensors", ema), ("ae.safetensors", ae)):
            print(f"# {fname}: {len(layout)} tensors, {sum(_numel(s) for s in layout.values()):,} parameters")
            for name in sorted(layout):
                print(f"{name}\t{list(layout[name])}")
        return 0
    if not args.path:
        print("bagel-world inspect: give a checkpoint PATH or --preset NAME", file=sys.stderr)
        return 2
    folder = resolve_checkpoint(args.path)
    cfg = BagelConfig.from_pretrained(folder)
    print(f"checkpoint: {folder}")
    print(json.dumps(cfg.summary(), indent=2))
    print("parameters per component:")
    for k, v in parameter_counts(cfg).items():
        print(f"  {k:28s} {v:>16,}")
    ema, ae = expected_state(cfg)
    bad = 0
    for fname, layout in (("ema.safetensors", ema), ("ae.safetensors", ae)):
        path = folder / fname
        if not path.is_file():
            print(f"{fname}: MISSING FILE")
            bad += 1
            continue
        try:
            rep = check_file(path, layout)
        except CheckpointError as e:  # truncated or not safetensors at all
            print(f"{fname}: UNREADABLE: {e}")
            bad += 1
            continue
        if rep.ok:
            print(f"{fname}: OK ({len(layout)} tensors match)")
        else:
            print(rep.describe(limit=10_000))
            bad += 1
    return 1 if bad else 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _settings_from_args(args):
    from bagel_world.inference.settings import SamplingSettings

    return SamplingSettings(
        num_timesteps=args.steps, timestep_shift=args.shift, cfg_text_scale=args.cfg_text,
        cfg_img_scale=args.cfg_img, cfg_interval=(args.cfg_interval_start, 1.0),
        cfg_renorm_type=args.renorm, cfg_renorm_min=args.renorm_min,
    )


def _cmd_generate(args) -> int:
    import torch
    from PIL import Image

    from bagel_world.inference.load import load_bagel
    from bagel_world.simulator import default_checkpoint

    engine = load_bagel(args.checkpoint or default_checkpoint(), device=args.device)
    inputs = []
    if args.image:
        inputs.append(Image.open(args.image))
    inputs.append(args.prompt)
    shape = tuple(int(v) for v in args.size.lower().split("x"))[::-1] if args.size else None
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    res, thought = engine.interleave_generate(
        inputs, settings=_settings_from_args(args), image_shape=shape, think=args.think, generator=g
    )
    Image.fromarray(res.images[0]).save(args.out)
    if thought:
        print(f"thinking: {thought}")
    print(f"wrote {args.out} ({res.images[0].shape[1]}x{res.images[0].shape[0]}) in {time.perf_counter() - t0:.2f}s")
    return 0


def _cmd_understand(args) -> int:
    from PIL import Image

    from bagel_world.inference.load import load_bagel
    from bagel_world.simulator import default_checkpoint

    engine = load_bagel(args.checkpoint or default_checkpoint(), device=args.device)
    gen, _, _ = engine.build_contexts([Image.open(args.image), args.question], think=args.think, understanding=True)
    if args.answers:
        answers = [a.strip() for a in args.answers.split(",")]
        scores = engine.score_answers(gen, answers)[0]
        for a, s in zip(answers, scores.tolist()):
            print(f"{a}\t{s:.4f}")
    else:
        print(engine.generate_text(gen, max_length=args.max_tokens)[0])
    return 0


def _cmd_demo(args) -> int:
    """The main job: roll out every env on the default model and write GIFs."""
    from bagel_world.demo import run_demo

    for row in run_demo(out=args.out, steps=args.steps, seed=args.seed, checkpoint=args.checkpoint, device=args.device):
        steps = f"{row['steps']} step" + ("s" if row["steps"] != 1 else "")
        print(f"{row['env']:24s} {steps} ({row['ended']})  return {row['return']:+.3f}  "
              f"{row['steps_per_s']:.2f} steps/s  -> {row['gif']}")
    return 0


def _cmd_record(args) -> int:
    from bagel_world.evaluate_agents import real_env_kwargs
    from bagel_world.training.data import Branches, list_branches
    from bagel_world.training.recorder import backfill_poses, record, record_branches

    tasks = args.task.split(",") if args.task != "all" else list(TASK_NAMES)
    if args.backfill_poses:
        if tasks != ["navigate"]:
            raise ValueError(f"--backfill-poses works on navigate recordings only (--task navigate), got {args.task!r}")
        paths = backfill_poses(args.out, "navigate")
        print(f"navigate: {len(paths)} shards in {Path(args.out) / 'navigate'} given the red box's position")
        lacking = [p for p in list_branches(args.out, "navigate") if not Branches.file_has_progress(p)]
        record_branches("navigate", args.out, existing_only=True)
        print(f"navigate: {sum(Branches.file_has_progress(p) for p in lacking)} branch files in "
              f"{Path(args.out) / 'navigate'} given their poses")
        return 0
    env_kwargs = {t: real_env_kwargs(t, args.layout, landmarks=args.landmarks)
                  for t in tasks}  # checked for every task before recording
    for t in tasks:
        paths = record(t, args.out, episodes=args.episodes, steps=args.steps, shard_size=args.shard_size,
                       seed=args.seed, resolution=(args.size, args.size), vary=args.vary,
                       uniform=args.uniform, env_kwargs=env_kwargs[t])
        print(f"{t}: {len(paths)} shards in {Path(args.out) / t}")
        if args.branches:
            paths = record_branches(t, args.out, points=args.branches, seed=args.seed)
            print(f"{t}: {len(paths)} branch files in {Path(args.out) / t}")
    return 0


def _cmd_train(args) -> int:
    from bagel_world.training.config import TrainConfig
    from bagel_world.training.pipeline import run_training

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)})
    out = run_training(cfg)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per torchrun rank
        print(f"checkpoint written to {out}")
    return 0


def _cmd_eval(args) -> int:
    from bagel_world.inference.settings import SamplingSettings
    from bagel_world.simulator import default_checkpoint, make_simulator
    from bagel_world.simulator.tasks import trained_tasks
    from bagel_world.training.evaluate import TASKS, evaluate, markdown_table, with_sampling

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    try:
        horizons = tuple(int(h) for h in args.horizons.split(","))
    except ValueError:
        raise ValueError(f"--horizons must be comma-separated whole numbers, got {args.horizons!r}") from None
    tasks = TASKS if args.task == "all" else tuple(args.task.split(","))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:  # before loading the model
        raise ValueError(f"unknown task {unknown[0]!r}; accepted: {', '.join(TASKS)} or 'all'")
    if args.sampling:
        SamplingSettings().overridden(args.sampling)  # a bad override fails before the model loads
    sim = make_simulator(args.checkpoint, device=args.device)
    if args.sampling:
        sim = with_sampling(sim, args.sampling)
    seeds = range(args.seed, args.seed + args.episodes)
    trained = trained_tasks(args.checkpoint or default_checkpoint())
    res = evaluate(sim, tasks=tasks, seeds=seeds, horizons=horizons, out=args.out, episode_steps=args.episode_steps,
                   control_states=args.control_states, trained_tasks=trained)
    print(markdown_table(res))
    print(f"written to {args.out}/eval.json, eval.md and strip_*.png")
    return 0


def _cmd_eval_progress(args) -> int:
    from bagel_world.evaluate_agents import navigate_kwargs
    from bagel_world.evaluate_progress import evaluate_progress
    from bagel_world.simulator import make_simulator

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    navigate_kwargs(args)  # checked before the model loads
    sim = make_simulator(args.checkpoint, device=args.device)
    res = evaluate_progress(sim, task=args.task, seeds=range(args.seed, args.seed + args.episodes), steps=args.steps,
                            explore=args.explore, ahead=args.ahead, layout=args.layout, success=args.success,
                            landmarks=args.landmarks, judge=args.judge)
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


def _cmd_evaluate_agent(args) -> int:
    from bagel_world.evaluate_agents import run

    return run(args)


def _cmd_dream(args) -> int:
    from bagel_world.dream import run

    return run(args)


def _cmd_scenarios(args) -> int:
    from bagel_world.evaluate_agents import real_env_kwargs
    from bagel_world.sims import real_scenarios

    kwargs = real_env_kwargs(args.task, args.layout, landmarks=args.landmarks)
    scen = real_scenarios(args.task, args.episodes, args.seed, resolution=(args.size, args.size), **kwargs)
    scen.save(args.out)
    goals = "no goals" if scen.goals is None else f"{len(scen.goals)} goals"
    print(f"wrote {len(scen)} start frames and {goals} of the real {args.task} task to {args.out}; "
          f"use it with gym.make(..., scenarios={args.out!r}) or examples/train_ppo.py --scenarios")
    return 0


def _cmd_serve(args) -> int:
    import os

    from bagel_world.model.loader import check_checkpoint
    from bagel_world.server import ServerSettings, serve
    from bagel_world.server.settings import settings_kwargs
    from bagel_world.simulator import default_checkpoint

    # Bad limits and a bad checkpoint (configs, safetensors headers) fail here, with a
    # message and exit code 2, not as a traceback from inside the server's startup.
    limits = settings_kwargs(args, os.environ)
    ServerSettings(**limits)
    check_checkpoint(args.checkpoint if args.checkpoint is not None else default_checkpoint())
    if args.ray:
        from bagel_world.server.ray_serve import serve_ray

        serve_ray(checkpoint=args.checkpoint, host=args.host, port=args.port, token=args.token, device=args.device,
                  replicas=args.replicas, **limits)
        return 0
    if args.replicas != 1:
        raise ValueError(f"--replicas {args.replicas} needs --ray (one process serves one simulator)")
    serve(checkpoint=args.checkpoint, host=args.host, port=args.port, token=args.token, device=args.device,
          **limits)
    return 0


def _add_model_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--checkpoint", help="folder or repo id (default: the shipped model)")
    sp.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")


def _add_inspect(sub) -> None:
    q = sub.add_parser("inspect", help="check a checkpoint folder against the architecture")
    q.add_argument("path", nargs="?", help="checkpoint folder or Hugging Face repo id")
    q.add_argument("--preset", choices=["bagel-7b-mot", "tiny"], help="print a preset's expected tensor layout")
    q.set_defaults(func=_cmd_inspect)


def _add_generate(sub) -> None:
    g = sub.add_parser("generate", help="text-to-image, or edit an image with --image")
    _add_model_args(g)
    g.add_argument("--prompt", required=True)
    g.add_argument("--image", help="input image to edit (PNG/JPEG)")
    g.add_argument("--out", default="out.png")
    g.add_argument("--size", help="WxH for text-to-image, e.g. 64x64 (default: input size or 1024x1024)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--shift", type=float, default=3.0)
    g.add_argument("--cfg-text", type=float, default=4.0)
    g.add_argument("--cfg-img", type=float, default=2.0)
    g.add_argument("--cfg-interval-start", type=float, default=0.0)
    g.add_argument("--renorm", default="text_channel", choices=["global", "channel", "text_channel"])
    g.add_argument("--renorm-min", type=float, default=0.0)
    g.add_argument("--think", action="store_true")
    g.set_defaults(func=_cmd_generate)


def _add_understand(sub) -> None:
    u = sub.add_parser("understand", help="answer a question about an image")
    _add_model_args(u)
    u.add_argument("--image", required=True)
    u.add_argument("--question", required=True)
    u.add_argument("--answers", help="comma-separated candidates to score instead of generating")
    u.add_argument("--max-tokens", type=int, default=512)
    u.add_argument("--think", action="store_true")
    u.set_defaults(func=_cmd_understand)


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="roll out every env on the default model and write GIFs")
    _add_model_args(d)
    d.add_argument("--out", default="out/demo")
    d.add_argument("--steps", type=int, default=8)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)


def _add_record(sub) -> None:
    from bagel_world.evaluate_agents import add_landmarks_option  # light: argparse/numpy only

    r = sub.add_parser("record", help="record exploration rollouts of the real simulators into shards")
    r.add_argument("--task", default="all", help="navigate, multiview, future_frame, manipulate, comma list or all")
    r.add_argument("--out", default="data/rec")
    r.add_argument("--episodes", type=int, default=256)
    r.add_argument("--steps", type=int, default=20, help="actions per episode")
    r.add_argument("--shard-size", type=int, default=32)
    r.add_argument("--seed", type=int, default=1000, help="episode e uses seed+e (keep evaluation seeds apart)")
    r.add_argument("--size", type=int, default=64, help="frame side in pixels")
    r.add_argument("--vary", type=float, default=0.1, help="share of actions with random amounts")
    r.add_argument("--uniform", type=float, default=0.5,
                   help="share of actions drawn uniformly from the canonical ones (the rest: the task's "
                        "exploration policy)")
    r.add_argument("--branches", type=int, default=0,
                   help="per episode, this many recorded states get the real outcome of every canonical "
                        "action (exact replay), for counterfactual training groups")
    r.add_argument("--layout", default=None, help="navigate only: the MiniWorld layout (default: the env's, four_rooms)")
    add_landmarks_option(r)
    r.add_argument("--backfill-poses", action="store_true",
                   help="record nothing: add the red box's position to the poses of navigate shards in OUT "
                        "recorded before it was kept (what --progress-rule view trains on), and their poses to "
                        "branch files recorded before branches kept them (what --step-share asks of branches)")
    r.set_defaults(func=_cmd_record)


def _add_train(sub) -> None:
    from bagel_world.training.config import TrainConfig  # light: no torch

    t = sub.add_parser("train", help="train the autoencoder and the MoT world model on recorded shards")
    add_dataclass_options(t, TrainConfig, skip=("extra",))  # every option and default from TrainConfig
    t.set_defaults(func=_cmd_train)


def _add_scenarios(sub) -> None:
    from bagel_world.evaluate_agents import add_landmarks_option  # light: argparse/numpy only

    sc = sub.add_parser("scenarios", help="save the real twin's start (and goal) frames as a scenario set "
                        "for imagined envs")
    sc.add_argument("--task", default="navigate", choices=list(TASK_NAMES))
    sc.add_argument("--episodes", type=int, default=1000)
    sc.add_argument("--seed", type=int, default=1000, help="first seed; evaluation uses 0 and up")
    sc.add_argument("--layout", default=None, help="navigate only: one_room, four_rooms (default) or maze")
    add_landmarks_option(sc)
    sc.add_argument("--size", type=int, default=64, help="frame side in pixels (the model's resolution)")
    sc.add_argument("--out", default="runs/scenarios/navigate.npz")
    sc.set_defaults(func=_cmd_scenarios)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="fidelity: imagined rollouts vs the real simulators on held-out seeds")
    _add_model_args(e)
    e.add_argument("--task", default="all")
    e.add_argument("--episodes", type=int, default=8)
    e.add_argument("--seed", type=int, default=0, help="first seed; training recordings use 1000 and up")
    e.add_argument("--horizons", default="1,4,8,16,32,64", help="comma-separated steps at which frames are compared")
    e.add_argument("--sampling", default=None,
                   help="override the checkpoint's sampling settings for every task, e.g. "
                        "'num_timesteps=3,cfg_text_scale=1.5' (the SamplingSettings field names); eval.json records them")
    e.add_argument("--episode-steps", type=int, default=64, help="actions per evaluation episode (>= every horizon)")
    e.add_argument("--control-states", type=int, default=6,
                   help="real states per episode (every 3rd step) from which every action is imagined")
    e.add_argument("--out", default="out/eval")
    e.set_defaults(func=_cmd_eval)


def _add_eval_progress(sub) -> None:
    from bagel_world.evaluate_agents import add_landmarks_option  # light: argparse/numpy only

    ep = sub.add_parser("eval-progress", help="judged progress vs real distance and success on held-out seeds "
                        "(Spearman, AUROC)")
    _add_model_args(ep)
    ep.add_argument("--task", default="navigate")
    ep.add_argument("--layout", default=None, help="navigate: one_room, four_rooms or maze (default: the twin's)")
    ep.add_argument("--success", default=None,
                    help="navigate: the success rule distances and 'reached' are measured by, 'pose' (default) or "
                         "'view' (see BagelNavigateReal-v0)")
    add_landmarks_option(ep)
    ep.add_argument("--episodes", type=int, default=8)
    ep.add_argument("--seed", type=int, default=0, help="first seed; training recordings use 1000 and up")
    ep.add_argument("--steps", type=int, default=40, help="most steps per episode (the scripted agent may end it)")
    ep.add_argument("--explore", type=float, default=0.3, help="share of random actions in the scripted walk")
    ep.add_argument("--ahead", type=int, default=4, help="steps imagined before judging")
    ep.add_argument("--judge", default="distance", choices=["distance", "located"],
                    help="distance: the progress questions with the goal image; located: where the frame and the "
                         "goal image were taken (location questions), and the distance between the two")
    ep.add_argument("--out", default=None, help="write the figures to this JSON file")
    ep.set_defaults(func=_cmd_eval_progress)


def _add_evaluate_agent(sub) -> None:
    from bagel_world.evaluate_agents import add_arguments  # light: argparse/numpy only

    ea = sub.add_parser("evaluate-agent", help="run agents (random, scripted, planner, ppo, vlm) in the real "
                        "simulator on held-out seeds")
    add_arguments(ea)  # defines its own --checkpoint/--device
    ea.set_defaults(func=_cmd_evaluate_agent)


def _add_dream(sub) -> None:
    from bagel_world.dream import add_arguments  # light: the heavy parts load when a stage runs

    d = sub.add_parser("dream", help="rounds of real episodes by the agent, world-model fine-tuning, policy "
                       "training in imagination and real evaluation (resumable)")
    add_arguments(d)
    d.set_defaults(func=_cmd_dream)


def _add_serve(sub) -> None:
    from bagel_world.server.settings import add_arguments as add_settings_arguments  # light: no FastAPI

    s = sub.add_parser("serve", help="serve the simulator over HTTP")
    _add_model_args(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token", default=None, help="bearer token (required for non-loopback hosts; "
                                                 "env BAGEL_WORLD_TOKEN)")
    s.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a Host name a server without a token answers besides localhost, 127.0.0.1 and [::1] "
                        "(repeatable; env BAGEL_WORLD_ALLOWED_HOSTS, comma-separated)")
    s.add_argument("--ray", action="store_true",
                   help="serve on Ray Serve: --replicas simulator replicas behind one router, each session kept "
                        "on its replica (needs the [ray] extra; joins RAY_ADDRESS if set, else starts Ray here)")
    s.add_argument("--replicas", type=int, default=1, help="with --ray: simulator replicas (one per GPU on cuda)")
    limits = s.add_argument_group("limits", "each also read from its environment variable; a flag wins; with --ray, "
                                            "per replica")
    add_settings_arguments(limits)
    s.set_defaults(func=_cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bagel-world", description="BAGEL world models: envs, planners, server")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    _add_inspect(sub)
    _add_generate(sub)
    _add_understand(sub)
    _add_demo(sub)
    _add_record(sub)
    _add_train(sub)
    _add_scenarios(sub)
    _add_eval(sub)
    _add_eval_progress(sub)
    _add_evaluate_agent(sub)
    _add_dream(sub)
    _add_serve(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `bagel-world inspect --preset ... | head`
        return 0
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError, RuntimeError) as e:
        print(f"bagel-world {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
