"""`bagel-world train`: tokenizer, autoencoder, then the MoT world model, then export.

Every stage resumes from its state file in the work directory, and the exported
checkpoint (official layout + our json files + scenarios + model card) is refreshed at
every world-model checkpoint, so a usable model exists whenever the run is stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bagel_world.config import AutoEncoderConfig, BagelConfig, Qwen2MoTConfig, SiglipConfig
from bagel_world.model.autoencoder import AutoEncoder
from bagel_world.model.bagel import Bagel
from bagel_world.model.checkpoint_io import build_tokenizer, init_random, save_checkpoint
from bagel_world.simulator.progress import (
    DISTANCE_BINS,
    DISTANCE_QUESTION,
    REACHED_ANSWERS,
    REACHED_QUESTION,
    STEP_BINS,
    STEP_QUESTION,
)
from bagel_world.simulator.scenarios import ScenarioSet
from bagel_world.simulator.tasks import TASK_NAMES, default_templates, template_to_json
from bagel_world.training.autoencoder import AE_FINETUNE_LR, AETrainArgs, calibrate_latents, train_autoencoder
from bagel_world.training.config import TrainConfig
from bagel_world.training.data import Branches, BranchSampler, ClipSampler, Shard, list_branches, list_shards
from bagel_world.training.world import WorldTrainArgs, WorldTrainer, train_world

log = logging.getLogger(__name__)

# The text heading every training sequence of a task, and the system prompt at inference.
TASK_PROMPTS = {t: f"task: {t.replace('_', ' ')}" for t in TASK_NAMES}


def resolve_defaults(c: TrainConfig) -> TrainConfig:
    """Fill the defaults that depend on other values or the machine: work, device, bf16."""
    work = c.work or str(Path(c.out).with_name(Path(c.out).name + "-work"))
    device = c.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = bf16_is_fast(device) if c.bf16 is None else c.bf16
    return replace(c, work=work, device=device, bf16=bf16)


def bf16_is_fast(device: str) -> bool:
    """bf16 autocast helps on CUDA and on CPUs with bf16 instructions; elsewhere (AVX2 only)
    oneDNN emulates it and a matmul is ~100x slower than fp32."""
    if str(device).startswith("cuda"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the machine architecture;
    `platform.processor()` is empty on many Linux systems."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def small_config(c: TrainConfig, vocab: int, resolution: tuple[int, int]) -> BagelConfig:
    side = max(resolution)
    return BagelConfig(
        llm=Qwen2MoTConfig(hidden_size=c.hidden, intermediate_size=c.intermediate, num_hidden_layers=c.layers,
                           num_attention_heads=c.heads, num_key_value_heads=c.kv_heads, vocab_size=vocab,
                           max_position_embeddings=8192),
        vit=SiglipConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                         patch_size=16, image_size=2 * side),
        vae=AutoEncoderConfig(ch=32, ch_mult=[1, 2, 2, 2], num_res_blocks=1, z_channels=16),
        max_latent_size=2 * side // 16,
        vit_max_num_patch_per_side=2 * side // 16,
        vae_transform=(2 * side, side, 16),
        vit_transform=(2 * side, side, 16),
    )


def load_training_shards(data: Path, holdout: int) -> tuple[list[Shard], dict[str, Shard]]:
    """All shards; the last `holdout` episodes of each task's last shard are held out."""
    train, held = [], {}
    for task in TASK_NAMES:
        paths = list_shards(data, task)
        if not paths:
            continue
        shards = [Shard.load(p) for p in paths]
        last = shards[-1]
        k = min(holdout, last.num_episodes - 1) if len(shards) == 1 else min(holdout, last.num_episodes)
        if k > 0:
            cut = last.num_episodes - k
            held[task] = last.episodes(slice(cut, None))
            shards[-1] = last.episodes(slice(None, cut))
        train += [s for s in shards if s.num_episodes]
    if not train:
        raise FileNotFoundError(f"no trajectory shards under {data}; run `bagel-world record --out {data}` first")
    return train, held


def load_training_branches(data: Path, held: dict[str, Shard]) -> list[Branches]:
    """Every branch recording under `data`, less the points of held-out episodes."""
    out = []
    for task in TASK_NAMES:
        for p in list_branches(data, task):
            b = Branches.load(p)
            if task in held:
                keep = ~np.isin(b.seeds, held[task].seeds)
                b = b.select(keep)
            if b.num_points:
                out.append(b)
    return out


def _texts(shards: list[Shard]) -> list[str]:
    out = list(TASK_PROMPTS.values())
    for s in shards:
        out += list(np.unique(s.actions)) + list(np.unique(s.qa_q)) + list(np.unique(s.qa_a))
    for t in TASK_NAMES:  # canonical actions even if a recording never used one
        out += list(default_templates(False)[t].canonical_actions)
    out += [DISTANCE_QUESTION, REACHED_QUESTION, STEP_QUESTION, *REACHED_ANSWERS]
    out += [a for table in (DISTANCE_BINS, STEP_BINS) for bins in table.values() for a in bins.answers]
    return out


def run_training(c: TrainConfig, progress: bool = True) -> Path:
    """Train and export; with c.distributed, as one rank of its torchrun group (training/distributed.py)."""
    if not c.distributed:
        return _train(c, progress)
    from bagel_world.training.distributed import torchrun_group

    with torchrun_group(c.device) as device:
        return _train(replace(c, device=str(device)), progress)


def _rank_zero_first(distributed: bool):
    if not distributed:
        return contextlib.nullcontext()
    from bagel_world.training.distributed import rank_zero_first

    return rank_zero_first()


def _train(c: TrainConfig, progress: bool) -> Path:
    from transformers import AutoTokenizer

    t_start = time.perf_counter()
    c = resolve_defaults(c)
    data, out, work = Path(c.data), Path(c.out), Path(c.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(c.seed)
    shards, held = load_training_shards(data, c.holdout_episodes)
    if c.locate_share > 0:
        from bagel_world.simulator.progress import LOCATION_BINS
        from bagel_world.training.recorder import _env_kwargs_of

        for task, bins in LOCATION_BINS.items():
            if not (data / task).is_dir():
                continue
            env = _env_kwargs_of(data / task, None)
            layout = env.get("layout", "the env's default")
            if layout != bins.layout or not env.get("landmarks"):
                raise ValueError(f"--locate-share asks where {task} frames were taken, in bins for the {bins.layout!r} "
                                 f"layout with its coloured wall panels (landmarks), but {data / task} was recorded "
                                 f"in layout {layout!r}, landmarks {bool(env.get('landmarks'))}")
    resolution = tuple(shards[0].frames.shape[2:4])
    tasks = sorted({s.task for s in shards})
    n_frames = sum(s.frames.shape[0] * s.frames.shape[1] for s in shards)
    log.info("training on %d shards, %d frames, tasks %s, resolution %s", len(shards), n_frames, tasks, resolution)

    init = _load_init(c.init) if c.init else None

    # Rank 0 of a distributed run writes the tokenizer and autoencoder; the others then load them.
    with _rank_zero_first(c.distributed):
        # 1. Tokenizer: byte-level BPE learned on the action/question vocabulary (or the init's).
        tok_dir = work / "tokenizer"
        if not (tok_dir / "tokenizer.json").is_file():
            if init is not None:
                tok_dir.mkdir(parents=True, exist_ok=True)
                for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
                    if (Path(c.init) / name).is_file():
                        shutil.copy(Path(c.init) / name, tok_dir / name)
            else:
                build_tokenizer(tok_dir, texts=_texts(shards), vocab_size=c.vocab_size)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        vocab = int(np.ceil(len(tokenizer) / 64) * 64)
        config = copy.deepcopy(init.config) if init is not None else small_config(c, vocab, resolution)

        # 2. Autoencoder.
        device = torch.device(c.device)
        vae = AutoEncoder(copy.deepcopy(config.vae)).to(device)
        init_ae = work / "ae_init.pt"
        if init_ae.is_file():
            vae.load_state_dict(torch.load(init_ae, map_location=device))
        else:
            torch.save(vae.state_dict(), init_ae)
        all_frames = np.concatenate([s.frames.reshape(-1, *s.frames.shape[2:]) for s in shards])
        ae_metrics_path = work / "ae_metrics.json"
        if init is not None and not ae_metrics_path.is_file():
            vae.load_state_dict(init.vae.state_dict())
            if c.ae_finetune:
                # Fine-tuned on this data (resumes from ae_state.pt), then its latents recalibrated; the
                # world model's weights start from the init's and learn the shifted latents.
                ae_args = AETrainArgs(steps=c.ae_finetune, batch_size=c.ae_batch_size, seed=c.seed,
                                      lr=AE_FINETUNE_LR, warmup=min(200, c.ae_finetune // 5),
                                      run=f"fine-tune of {c.init}")
                before = calibrate_latents(vae, all_frames, c.seed)["recon_psnr_db"]
                metrics = train_autoencoder(vae, all_frames, ae_args, work, progress)
                log.info("autoencoder fine-tuned on %s: reconstruction %.2f -> %.2f dB", c.data, before,
                         metrics["recon_psnr_db"])
                ae_metrics_path.write_text(json.dumps({**metrics, "from": str(c.init), "finetune_steps": c.ae_finetune,
                                                       "recon_psnr_db_before": before}, indent=2))
            else:
                # The init's autoencoder is kept frozen as it is: its latents are what its weights read.
                torch.save({"vae": vae.state_dict()}, work / "ae_state.pt")
                ae_metrics_path.write_text(json.dumps({
                    "shift_factor": init.config.vae.shift_factor, "scale_factor": init.config.vae.scale_factor,
                    "from": str(c.init), **init.ae_metrics}, indent=2))
        if ae_metrics_path.is_file():
            ae_metrics = json.loads(ae_metrics_path.read_text())
            done = ae_metrics.get("finetune_steps", 0)
            if init is not None and done != c.ae_finetune:
                held = f"fine-tuned {done} steps" if done else "kept frozen"
                raise ValueError(f"the work folder {work} holds the init's autoencoder {held}, not what "
                                 f"--ae-finetune {c.ae_finetune} asks; use a new --work folder")
            vae.load_state_dict(torch.load(work / "ae_state.pt", weights_only=False, map_location=device)["vae"])
        else:
            ae_args = AETrainArgs(steps=c.ae_steps, batch_size=c.ae_batch_size, seed=c.seed)
            ae_metrics = train_autoencoder(vae, all_frames, ae_args, work, progress)
            ae_metrics_path.write_text(json.dumps(ae_metrics, indent=2))
        vae.scale_factor, vae.shift_factor = ae_metrics["scale_factor"], ae_metrics["shift_factor"]
        config.vae.scale_factor, config.vae.shift_factor = ae_metrics["scale_factor"], ae_metrics["shift_factor"]
        vae.config = config.vae
        del all_frames

    # 3. The MoT world model. The gen expert starts as a copy of the und expert (official init).
    model = Bagel(config)
    if init is not None:
        model.load_state_dict({k: v.float() for k, v in init.model.state_dict().items()}, strict=True)
    else:
        init_random(model, c.seed)
        copy_und_to_gen(model)
    model.to(device)
    model.language_model.checkpoint_layers = c.activation_checkpointing
    args = WorldTrainArgs(steps=c.world_steps, batch_size=c.batch_size, lr=c.lr, seed=c.seed,
                          bf16=bool(c.bf16), task_prompts=TASK_PROMPTS, action_dropout=c.action_dropout,
                          context_noise=c.context_noise, rope_gap=c.rope_gap, change_weight=c.change_weight,
                          timestep_shift=c.timestep_shift, ckpt_every=c.ckpt_every,
                          warmup=c.warmup, ce_weight=c.ce_weight, ema_decay=c.ema_decay)
    if c.distributed:
        from bagel_world.training.distributed import ShardedWorldTrainer

        trainer = ShardedWorldTrainer(config, model, vae, tokenizer, args)
    else:
        trainer = WorldTrainer(config, model, vae, tokenizer, args)
    # Each rank of a distributed run: its own episodes and sampler seed.
    sampler = ClipSampler(shards, c.window, np.random.default_rng(c.seed + trainer.rank),
                          progress_share=c.progress_share, part=(trainer.rank, trainer.world), mirror=c.mirror,
                          judge_share=c.judge_share, progress_rule=c.progress_rule,
                          step_share=c.step_share, locate_share=c.locate_share,
                          locate_goal_share=c.locate_goal_share)
    branches = load_training_branches(data, held) if c.branch_share > 0 else []
    if branches:
        log.info("branch groups: %d states, share %.2f, group %d", sum(b.num_points for b in branches),
                 c.branch_share, c.branch_group)
        sampler = BranchSampler(sampler, branches, c.branch_share, c.branch_group)

    def export(tr: WorldTrainer) -> None:
        ema = tr.full_ema()  # every rank takes part; only the main rank gets the weights
        if ema is not None:
            export_checkpoint(out, config, tr, ema, vae, tok_dir, held, c, ae_metrics, n_frames,
                              time.perf_counter() - t_start, branch_points=sum(b.num_points for b in branches))

    train_world(trainer, sampler, work, on_checkpoint=export, progress=progress)
    export(trainer)
    return out


@dataclass
class _Init:
    config: BagelConfig
    model: Bagel
    vae: AutoEncoder
    ae_metrics: dict


def _load_init(folder: str) -> _Init:
    """A checkpoint to start from (strict load, as for inference), in fp32 on the CPU."""
    from bagel_world.inference.load import load_bagel

    eng = load_bagel(folder, device="cpu", dtype=torch.float32)
    meta = Path(folder) / "training.json"
    ae = json.loads(meta.read_text()).get("ae_metrics", {}) if meta.is_file() else {}
    return _Init(eng.config, eng.model, eng.vae, {k: v for k, v in ae.items() if k == "recon_psnr_db"})


@torch.no_grad()
def copy_und_to_gen(model: Bagel) -> None:
    sd = model.state_dict()
    for k in sd:
        if "_moe_gen" in k:
            und = k.replace("mlp_moe_gen", "mlp").replace("_moe_gen", "")
            sd[k].copy_(sd[und])


def export_checkpoint(out: Path, config: BagelConfig, trainer: WorldTrainer, ema: dict[str, torch.Tensor],
                      vae: AutoEncoder, tok_dir: Path, held: dict[str, Shard], c: TrainConfig, ae_metrics: dict,
                      n_frames: int, elapsed_s: float, branch_points: int = 0) -> None:
    """Write the EMA weights `ema` (whole, on the CPU) in bf16 in the official layout, plus
    world.json, scenarios and training.json (what `write_model_card` reads)."""
    ema_model = Bagel(config)
    ema_model.load_state_dict(ema)
    vae = copy.deepcopy(vae).cpu()
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_checkpoint(tmp, config, ema_model, vae, dtype=torch.bfloat16)
    for f in tok_dir.iterdir():
        shutil.copy(f, tmp / f.name)
    templates = {t: replace(tpl, sampling=replace(tpl.sampling, num_timesteps=c.sample_steps,
                                                      timestep_shift=c.timestep_shift,
                                                      cfg_text_scale=c.cfg_text_scale))
                 for t, tpl in default_templates(False).items()}
    world = {"tasks": {}}
    for t in TASK_NAMES:
        tpl = template_to_json(templates[t])
        world["tasks"][t] = {"system_prompt": TASK_PROMPTS[t], "resolution": list(config_resolution(held, t, tpl)),
                             "window": c.window, "slide_window": c.rope_gap > 0, "sampling": tpl["sampling"]}
    (tmp / "world.json").write_text(json.dumps(world, indent=2) + "\n")
    for task, sh in held.items():
        # No instructions: the small model is trained without a task prompt, so the envs
        # must not add one (the goal is the image; the question is per-episode).
        ScenarioSet(frames=sh.frames[:, 0], goals=sh.frames[:, -1], instructions=None,
                    questions=[str(q[0, 0]) for q in sh.qa_q]).save(tmp / "scenarios" / f"{task}.npz")
    (tmp / "training.json").write_text(json.dumps({
        "train_config": asdict(c), "world_args": asdict(trainer.args), "step": trainer.step,
        "ae_metrics": ae_metrics, "frames": n_frames, "branch_points": branch_points, "elapsed_s": elapsed_s,
        "world_size": trainer.world,
        "hardware": f"{_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "last_log": trainer.history[-1] if trainer.history else None,
    }, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def config_resolution(held, task, tpl) -> tuple[int, int]:
    if task in held:
        return tuple(held[task].frames.shape[2:4])
    return tuple(tpl["resolution"])
