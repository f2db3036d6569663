"""Load a BAGEL checkpoint folder (or Hugging Face repo) into a ready `BagelInference`.

Build on the meta device, memory-map the safetensors files, check every tensor's name and
shape against the architecture, then assign. Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from bagel_world.config import BagelConfig
from bagel_world.model.autoencoder import AutoEncoder
from bagel_world.model.bagel import Bagel
from bagel_world.model.qwen2_mot import RotaryEmbedding

log = logging.getLogger(__name__)

# Files of the official repo that loading needs (the official download instructions'
# patterns, minus code and docs we never read).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.md", "policies/*.zip"]  # + PPO policies shipped beside
REQUIRED_FILES = ("llm_config.json", "vit_config.json", "ema.safetensors", "ae.safetensors")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A checkpoint does not match the architecture; the message names every bad tensor."""


@dataclass
class CheckReport:
    file: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # name, expected, found

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 50) -> str:
        lines = []
        for n in self.missing[:limit]:
            lines.append(f"  missing    {n}")
        for n in self.unexpected[:limit]:
            lines.append(f"  unexpected {n}")
        for n, e, f in self.mismatched[:limit]:
            lines.append(f"  shape      {n}: expected {list(e)}, found {list(f)}")
        total = len(self.missing) + len(self.unexpected) + len(self.mismatched)
        if total > 3 * limit:
            lines.append(f"  ... {total} problems in all")
        return f"{self.file}:\n" + "\n".join(lines)


def resolve_checkpoint(path_or_repo_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hugging Face repo id fetched with snapshot_download."""
    p = Path(path_or_repo_id).expanduser()
    if p.is_dir():
        return p
    s = str(path_or_repo_id)
    if p.exists():
        raise NotADirectoryError(f"{s} is a file; give the checkpoint folder that holds {', '.join(REQUIRED_FILES)}")
    if not _REPO_ID.match(s) or s.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"no checkpoint folder at {s!r}, and it is not a Hugging Face repo id of the form 'owner/name'"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=s, allow_patterns=ALLOW_PATTERNS))
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"{s!r} is not a local folder and its files are not in the Hugging Face cache; offline mode "
            "(HF_HUB_OFFLINE=1) or no network prevents downloading it. Download it once with "
            f"`huggingface-cli download {s}` or pass a local folder."
        ) from e


def expected_state(config: BagelConfig) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(ema, ae) name -> shape, from the architecture on the meta device (no memory)."""
    with torch.device("meta"):
        model, vae = Bagel(config), AutoEncoder(config.vae)
    return ({k: tuple(v.shape) for k, v in model.state_dict().items()},
            {k: tuple(v.shape) for k, v in vae.state_dict().items()})


def _open_safetensors(path: Path) -> Any:
    """safe_open, or a CheckpointError naming the file when it is not a complete safetensors file.

    safetensors checks the header and that the file holds every byte the header promises,
    so a truncated download fails here, before any tensor is read.
    """
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # noqa: BLE001 - SafetensorError and OSError, re-raised with the file named
        size = path.stat().st_size if path.is_file() else 0
        raise CheckpointError(f"{path} ({size:,} bytes) is not a readable safetensors file: {e}; accepted: a "
                              "complete safetensors file (re-download it if it was cut short)") from None


def check_file(path: Path, expected: dict[str, tuple]) -> CheckReport:
    """Compare a safetensors file's names and shapes with `expected` (reads headers only)."""
    found = {}
    with _open_safetensors(path) as f:
        for k in f.keys():
            found[k] = tuple(f.get_slice(k).get_shape())
    rep = CheckReport(file=path.name)
    rep.missing = sorted(set(expected) - set(found))
    rep.unexpected = sorted(set(found) - set(expected))
    rep.mismatched = [(k, expected[k], found[k]) for k in sorted(set(expected) & set(found)) if expected[k] != found[k]]
    return rep


def _load_tensors(path: Path, device: torch.device, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out = {}
    with _open_safetensors(path) as f:  # memory-mapped
        for k in f.keys():
            t = f.get_tensor(k)
            out[k] = t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)
    return out


def default_device_dtype(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.device, torch.dtype]:
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


def check_checkpoint(path_or_repo_id: str | os.PathLike[str]) -> tuple[Path, BagelConfig]:
    """(folder, config) of a checkpoint whose files, configs and tensor layout are all right.

    Reads the json files and the safetensors headers only (seconds, even for 7B), so a
    server can refuse a bad checkpoint before it starts. Raises FileNotFoundError,
    ConfigError or CheckpointError, each naming the file.
    """
    folder = resolve_checkpoint(path_or_repo_id)
    missing = [n for n in REQUIRED_FILES if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; a BAGEL checkpoint needs {', '.join(REQUIRED_FILES)}")
    config = BagelConfig.from_pretrained(folder)
    exp_ema, exp_ae = expected_state(config)
    reports = [check_file(folder / "ema.safetensors", exp_ema), check_file(folder / "ae.safetensors", exp_ae)]
    bad = [r for r in reports if not r.ok]
    if bad:
        raise CheckpointError(
            f"checkpoint {folder} does not match the architecture of its config:\n"
            + "\n".join(r.describe() for r in bad)
        )
    return folder, config


@dataclass
class LoadedCheckpoint:
    """The weights and files of one checkpoint, ready on their device (see `load_checkpoint`)."""

    folder: Path
    config: BagelConfig
    model: Bagel
    vae: AutoEncoder
    tokenizer: object  # a transformers tokenizer


def load_checkpoint(
    path_or_repo_id: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedCheckpoint:
    """Check a checkpoint (`check_checkpoint`), then load its model (`strict=True`),
    autoencoder (always fp32, as the official code keeps it) and tokenizer.

    device: default CUDA when available, else CPU. dtype: default bf16 on CUDA, fp32 on CPU.
    `bagel_world.inference.load_bagel` wraps the result in a ready `BagelInference`.
    """
    from transformers import AutoTokenizer

    folder, config = check_checkpoint(path_or_repo_id)
    device, dtype = default_device_dtype(device, dtype)
    with torch.device("meta"):
        model, vae = Bagel(config), AutoEncoder(config.vae)
    model.load_state_dict(_load_tensors(folder / "ema.safetensors", device, dtype), strict=True, assign=True)
    vae.load_state_dict(_load_tensors(folder / "ae.safetensors", device, torch.float32), strict=True, assign=True)
    # Non-persistent buffers are not in the file: rebuild them on the real device.
    lm = model.language_model.model
    lm.rotary_emb = RotaryEmbedding(config.llm.head_dim, config.llm.rope_theta).to(device)
    for p in (model.vit_pos_embed.pos_embed, model.latent_pos_embed.pos_embed):
        p.requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - re-raised with the folder named
        raise CheckpointError(f"could not load the tokenizer from {folder}: {e}") from e
    log.info("loaded %s on %s (%s)", folder, device, dtype)
    return LoadedCheckpoint(folder, config, model, vae, tokenizer)


def parameter_counts(config: BagelConfig) -> dict[str, int]:
    """Parameters per component for a config (meta device)."""
    with torch.device("meta"):
        model, vae = Bagel(config), AutoEncoder(config.vae)
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if name.startswith("language_model."):
            key = "llm (gen expert)" if "_moe_gen" in name else "llm (und expert + shared)"
        elif name.startswith("vit_model."):
            key = "vit"
        else:
            key = name.split(".")[0]
        counts[key] = counts.get(key, 0) + p.numel()
    counts["ema total"] = sum(p.numel() for p in model.parameters())
    counts["autoencoder"] = sum(p.numel() for p in vae.parameters())
    return counts
