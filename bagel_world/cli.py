"""The `bagel-world` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _cmd_inspect(args) -> int:
    from bagel_world.config import BagelConfig, preset
    from bagel_world.model.loader import check_file, expected_state, parameter_counts, resolve_checkpoint

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
        rep = check_file(path, layout)
        if rep.ok:
            print(f"{fname}: OK ({len(layout)} tensors match)")
        else:
            print(rep.describe(limit=10_000))
            bad += 1
    return 1 if bad else 0


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _settings_from_args(args):
    from bagel_world.simulator.base import SamplingSettings

    return SamplingSettings(
        num_timesteps=args.steps, timestep_shift=args.shift, cfg_text_scale=args.cfg_text,
        cfg_img_scale=args.cfg_img, cfg_interval=(args.cfg_interval_start, 1.0),
        cfg_renorm_type=args.renorm, cfg_renorm_min=args.renorm_min,
    )


def _cmd_generate(args) -> int:
    import torch
    from PIL import Image

    from bagel_world.model.loader import load_bagel
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

    from bagel_world.model.loader import load_bagel
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
    from examples_runner import run_quickstart  # noqa: F401 - replaced below

    return 0


def _cmd_serve(args) -> int:
    from bagel_world.server import serve

    serve(checkpoint=args.checkpoint, host=args.host, port=args.port, token=args.token, device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bagel-world", description="BAGEL world models: envs, planners, server")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("inspect", help="check a checkpoint folder against the architecture")
    q.add_argument("path", nargs="?", help="checkpoint folder or Hugging Face repo id")
    q.add_argument("--preset", choices=["bagel-7b-mot", "tiny"], help="print a preset's expected tensor layout")
    q.set_defaults(func=_cmd_inspect)

    def add_model_args(sp):
        sp.add_argument("--checkpoint", help="folder or repo id (default: the shipped model)")
        sp.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")

    g = sub.add_parser("generate", help="text-to-image, or edit an image with --image")
    add_model_args(g)
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

    u = sub.add_parser("understand", help="answer a question about an image")
    add_model_args(u)
    u.add_argument("--image", required=True)
    u.add_argument("--question", required=True)
    u.add_argument("--answers", help="comma-separated candidates to score instead of generating")
    u.add_argument("--max-tokens", type=int, default=512)
    u.add_argument("--think", action="store_true")
    u.set_defaults(func=_cmd_understand)

    d = sub.add_parser("demo", help="roll out every env on the default model and write GIFs")
    add_model_args(d)
    d.add_argument("--out", default="out/demo")
    d.add_argument("--steps", type=int, default=8)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("serve", help="serve the simulator over HTTP")
    add_model_args(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token", default=None, help="bearer token (required for non-loopback hosts)")
    s.set_defaults(func=_cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError) as e:
        print(f"bagel-world {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
