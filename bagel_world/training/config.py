"""`TrainConfig`: everything `bagel-world train` takes, and the one home of its defaults.

Light (no torch): the CLI builds its options from it before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields

DEFAULT_WORLD_STEPS = 6000  # about 2 h on a 2-core CPU at batch 8
DEFAULT_AE_STEPS = 1500
DEFAULT_AE_BATCH_SIZE = 16  # frames


def _opt(default, help: str, flag: str | None = None):
    """A TrainConfig field: its default and help are the one source of `bagel-world train`'s option."""
    meta = {"help": help, **({"flag": flag} if flag else {})}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def option_flag(f: Field) -> str:
    """The command-line flag of a dataclass field: its metadata "flag", else `--field-name`."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


@dataclass
class TrainConfig:
    """Everything `bagel-world train` takes. The CLI options are generated from these fields
    (`--field-name`, or the field's `flag`), so each default lives here and only here."""

    data: str = _opt("data/rec", "recorded shards (`bagel-world record --out`)")
    out: str = _opt("checkpoints/bagel-world-small", "the exported checkpoint folder")
    work: str | None = _opt(None, "resumable state and logs (default: OUT-work)")
    ae_steps: int = _opt(DEFAULT_AE_STEPS, "autoencoder optimiser steps")
    ae_batch_size: int = _opt(DEFAULT_AE_BATCH_SIZE, "autoencoder batch size (frames)")
    ae_finetune: int = _opt(0, "with --init: first fine-tune the init's autoencoder on DATA's frames for this many "
                               "steps (for frames it reconstructs badly; the world model then trains on the "
                               "shifted latents). 0 keeps it frozen")
    world_steps: int = _opt(DEFAULT_WORLD_STEPS, "world-model optimiser steps", flag="--steps")
    batch_size: int = _opt(8, "world-model batch size (clips)")
    window: int = _opt(4, "context frames per clip, and the exported tasks' window")
    hidden: int = _opt(256, "LLM hidden size (a new model; --init keeps the init's)")
    layers: int = _opt(6, "LLM layers")
    heads: int = _opt(4, "LLM attention heads")
    kv_heads: int = _opt(2, "LLM key/value heads")
    intermediate: int = _opt(768, "LLM MLP size")
    vocab_size: int = _opt(512, "tokenizer vocabulary of a new model")
    lr: float = _opt(3e-4, "peak learning rate (cosine to a tenth)")
    seed: int = _opt(0, "seed of data order, noise and initialisation")
    holdout_episodes: int = _opt(8, "episodes per task kept out of training (the scenario sets)")
    bf16: bool | None = _opt(None, "bf16 autocast (default: on CUDA and on CPUs with bf16 instructions; "
                                   "elsewhere fp32)")
    device: str | None = _opt(None, "cpu, cuda, cuda:1 (default: cuda if available)")
    init: str | None = _opt(None, "start from this checkpoint (its tokenizer, autoencoder, weights)")
    # World-model levers (see WorldTrainArgs) and the sampling settings written to world.json.
    action_dropout: float = _opt(0.1, "share of actions left out in training, so sampling can use "
                                      "cfg_text_scale > 1")
    context_noise: float = _opt(0.2, "max noise level of context frames in training")
    rope_gap: int = _opt(1024, "max random rope gap after the task text")
    change_weight: float = _opt(2.0, "extra flow-loss weight on latent tokens that change from the previous frame")
    timestep_shift: float = _opt(1.0, "shift of training and sampling timesteps")
    sample_steps: int = _opt(5, "num_timesteps in world.json (n-1 flow evaluations)")
    cfg_text_scale: float = _opt(1.0, "cfg_text_scale in world.json", flag="--cfg-text")
    # Counterfactual groups from `record --branches` (used when the data folder has them).
    branch_share: float = _opt(0.5, "share of each batch made of counterfactual groups (when DATA has branch "
                                    "recordings)")
    branch_group: int = _opt(4, "clips per counterfactual group: one state, different actions")
    progress_share: float = _opt(0.5, "share of clips that ask a goal-conditioned progress question "
                                      "(recordings with goals)")
    progress_rule: str = _opt("pose", "what reaching the goal means in the progress questions: 'pose' (the goal "
                                      "pose) or 'view' (a pose whose view matches the goal image), as the real "
                                      "env's success option")
    judge_share: float = _opt(0.0, "share of the progress questions asked of one frame alone (the judge's "
                                    "layout: no history, nothing to predict; only the answer's loss)")
    step_share: float = _opt(0.0, "share of the progress questions that ask how much closer the clip's last step "
                                   "brought the agent (the learned reward head of `--metric step` planners)")
    locate_share: float = _opt(0.0, "share of clips that ask where their last frame was taken (x, z, heading; "
                                     "the location judge of `--metric located` planners; one-room recordings)")
    locate_goal_share: float = _opt(0.0, "share of the location questions asked of the episode's goal image at its "
                                          "goal pose instead of a walk frame (the view a located planner must place)")
    ce_weight: float = _opt(0.25, "weight of the answers' cross-entropy beside the flow loss")
    mirror: float = _opt(0.0, "share of navigate and multiview clips seen mirrored (frames flipped left-right, "
                              "left and right swapped in actions and answers)")
    ema_decay: float = _opt(0.999, "decay of the exported EMA weights (a short fine-tune wants a shorter average)")
    warmup: int = _opt(500, "linear learning-rate warm-up steps")
    ckpt_every: int = _opt(500, "steps between resumable states and exports")
    # Several processes (`torchrun --nproc-per-node N -m bagel_world.cli train ... --distributed`).
    distributed: bool = _opt(False, "one rank of a torchrun group: FSDP2-sharded world model, each rank on its own "
                                    "episodes with batch/N clips (gloo on CPU, nccl on CUDA)")
    activation_checkpointing: bool = _opt(False, "recompute each decoder layer's activations in the backward "
                                                 "instead of keeping them (less memory, same losses)")
    extra: dict = _opt({}, "free-form notes written into training.json")

    def __post_init__(self) -> None:
        flag = {f.name: option_flag(f) for f in fields(self)}
        for name in ("action_dropout", "branch_share", "progress_share", "judge_share", "step_share", "locate_share",
                     "locate_goal_share", "mirror"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{flag[name]} must be in [0, 1], got {v}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"{flag['ema_decay']} must be in [0, 1), got {self.ema_decay}")
        from bagel_world.sims import PROGRESS_RULES

        if self.progress_rule not in PROGRESS_RULES:
            raise ValueError(f"{flag['progress_rule']} must be one of {list(PROGRESS_RULES)}, got {self.progress_rule!r}")
        if self.locate_goal_share > 0 and self.locate_share == 0:
            raise ValueError(f"{flag['locate_goal_share']} is a share of the location questions, and "
                             f"{flag['locate_share']} is 0 (none are asked); set {flag['locate_share']} > 0 as well")
        if self.ce_weight < 0:
            raise ValueError(f"{flag['ce_weight']} must be >= 0, got {self.ce_weight}")
        if self.ae_finetune < 0:
            raise ValueError(f"{flag['ae_finetune']} must be >= 0, got {self.ae_finetune}")
        if self.ae_finetune and not self.init:
            raise ValueError(f"{flag['ae_finetune']} fine-tunes the autoencoder of --init; without --init use "
                             f"{flag['ae_steps']} (a new autoencoder is trained)")
        for name in ("world_steps", "batch_size", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag[name]} must be >= 1, got {getattr(self, name)}")
