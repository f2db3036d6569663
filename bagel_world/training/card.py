"""The model card (`README.md` inside a trained checkpoint folder)."""

from __future__ import annotations

import json
from pathlib import Path

from bagel_world.config import BagelConfig
from bagel_world.model.loader import parameter_counts


def write_model_card(folder: str | Path, eval_md: str | None = None, commands: list[str] | None = None,
                     notes: str = "") -> Path:
    folder = Path(folder)
    tr = json.loads((folder / "training.json").read_text())
    cfg = BagelConfig.from_pretrained(folder)
    counts = parameter_counts(cfg)
    c, w = tr["train_config"], tr["world_args"]
    last = tr.get("last_log") or {}
    size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    resolution = tuple(json.loads((folder / "world.json").read_text())["tasks"]["navigate"]["resolution"])
    lines = [
        "# bagel-world-small",
        "",
        "A BAGEL-architecture world model (Qwen2 Mixture-of-Transformers LLM with understanding and generation "
        "experts, SigLIP NaViT encoder, FLUX autoencoder), trained on a CPU on rollouts of real simulators"
        + (f" (starting from the weights, tokenizer and autoencoder of `{Path(c['init']).name}`)" if c.get("init") else
           " from scratch")
        + ", in the official checkpoint layout: `load_bagel` and `bagel-world inspect` treat it like BAGEL-7B-MoT.",
        "",
        "## Size",
        "",
        f"- LLM: hidden {cfg.llm.hidden_size}, {cfg.llm.num_hidden_layers} layers, {cfg.llm.num_attention_heads} heads "
        f"({cfg.llm.num_key_value_heads} KV), MLP {cfg.llm.intermediate_size}, vocabulary {cfg.llm.vocab_size}",
        f"- ViT: hidden {cfg.vit.hidden_size}, {cfg.vit.num_hidden_layers} layers, patch {cfg.vit.patch_size}",
        f"- autoencoder: ch {cfg.vae.ch}, ch_mult {cfg.vae.ch_mult}, z {cfg.vae.z_channels}, scale "
        f"{cfg.vae.scale_factor:.4f}, shift {cfg.vae.shift_factor:.4f}",
        f"- parameters: {counts['ema total']:,} in `ema.safetensors` (bf16), {counts['autoencoder']:,} in "
        f"`ae.safetensors`; {size_mb:.1f} MB on disk in all",
        "",
        "## Data",
        "",
        f"- {tr['frames']:,} frames at {resolution} "
        "from `bagel-world record` (exploration policies in MiniWorld, MuJoCo and Fetch; seeds as in the commands "
        "below, all above the evaluation seeds), "
        f"{c['holdout_episodes']} episodes per task held out (their start frames and final frames are the "
        "scenario sets in `scenarios/`).",
        "",
        "## Training",
        "",
        (f"- autoencoder: the init's, kept frozen; reconstruction PSNR {tr['ae_metrics']['recon_psnr_db']:.1f} dB "
         "on its training frames" if c.get("init") else
         f"- autoencoder: {c['ae_steps']} steps, batch {c.get('ae_batch_size', 16)}, L1 + MSE + 1e-6 KL; "
         f"reconstruction PSNR {tr['ae_metrics']['recon_psnr_db']:.1f} dB on training frames"),
        f"- world model: {tr['step']} of {w['steps']} AdamW steps (cosine from {w['lr']} to {w['min_lr']}), batch "
        f"{w['batch_size']} clips of up to {c['window'] + 1} frames, flow-matching velocity MSE on each next frame's "
        f"latent tokens + {w['ce_weight']} x cross-entropy on simulator-state answers"
        + (f" and goal-progress answers ({c['progress_share']} of the clips with goals"
           + (f", {c['judge_share']} of those asked of the last frame alone" if c.get("judge_share") else "")
           + (f", {c['step_share']} of those about the last step" if c.get("step_share") else "") + ")"
           if c.get("progress_share") else "")
        + (f"; location questions ({c['locate_share']} of the clips: where the last frame was taken"
           + (f", {c['locate_goal_share']} of them of the episode's goal image" if c.get("locate_goal_share") else "")
           + ")" if c.get("locate_share") else "")
        + f", EMA {w['ema_decay']}, "
        + ("bf16 autocast" if w.get("bf16") else "fp32"),
        f"- levers: action dropout {w.get('action_dropout', 0)} (for text guidance), context-noise augmentation up "
        f"to t = {w.get('context_noise', 0)}, random rope gap up to {w.get('rope_gap', 0)} after the task text "
        f"(for the sliding window), change-weighted flow loss ({w.get('change_weight', 0)}), training timestep "
        f"shift {w.get('timestep_shift', 1.0)}"
        + (f"; counterfactual groups (`record --branches`, {tr['branch_points']:,} recorded states): "
           f"{c['branch_share']} of each batch in groups of {c['branch_group']} clips from one state with "
           "different actions" if tr.get("branch_points") else ""),
        f"- last logged losses: MSE {last.get('mse', float('nan')):.3f}, CE {last.get('ce', float('nan')):.3f} "
        f"at {last.get('tokens_per_s', float('nan')):.0f} tokens/s",
        f"- wall time {tr['elapsed_s'] / 3600:.2f} h on {tr['hardware']}",
        "",
        "## Reproduce",
        "",
        "```bash",
        *(commands or []),
        "```",
        "",
    ]
    if eval_md:
        lines += ["## Fidelity, persistence and controllability (imagined vs real, held-out seeds)", "",
                  eval_md.strip(), ""]
    if notes:
        lines += ["## Limits", "", notes.strip(), ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path
