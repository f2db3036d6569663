"""Write checkpoints in the official layout: random ones for tests, trained ones for shipping.

Layout: `ema.safetensors` (the Bagel state dict), `ae.safetensors` (the autoencoder),
`llm_config.json`, `vit_config.json`, plus our `bagel_config.json` / `ae_config.json`
and a Qwen2-format byte-level BPE tokenizer (`tokenizer.json`, `vocab.json`,
`merges.txt`, `tokenizer_config.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from bagel_world.config import BagelConfig, preset
from bagel_world.model.autoencoder import AutoEncoder
from bagel_world.model.bagel import Bagel, PositionEmbedding
from bagel_world.model.tokens import SPECIAL_TOKENS

# Qwen2's pre-tokenisation regex.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_alphabet() -> list[str]:
    """The byte-level BPE printable stand-in for each byte value 0..255 (id = byte value)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _configure(tok) -> None:
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()


def build_tokenizer(folder: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 261) -> int:
    """Write a Qwen2-format byte-level BPE tokenizer; returns its length.

    Without `texts`: the 256 byte tokens and the special tokens only. With `texts`: BPE
    merges are learned with the `tokenizers` trainer up to `vocab_size`.
    """
    from tokenizers import Tokenizer, models, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    if texts is None:
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
        _configure(tok)
    else:
        tok = Tokenizer(models.BPE())
        _configure(tok)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - len(SPECIAL_TOKENS), initial_alphabet=alphabet, special_tokens=[], show_progress=False
        )
        tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.save(str(folder / "tokenizer.json"))
    tok.model.save(str(folder))  # vocab.json + merges.txt for the slow Qwen2Tokenizer
    added = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "added_tokens_decoder": {
                    str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
                    for t, i in added.items()
                },
                "additional_special_tokens": SPECIAL_TOKENS[1:],
                "bos_token": None,
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "clean_up_tokenization_spaces": False,
                "errors": "replace",
                "split_special_tokens": False,
                "model_max_length": 32768,
            },
            indent=2,
        )
    )
    return tok.get_vocab_size()


@torch.no_grad()
def init_random(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Random weights like the conformance kit's: N(0, std) matrices, norms 1 + 0.1 N(0,1).

    Norm weights are not 1 and the two experts differ, so mixing them up shows in tests.
    Position tables keep their sin-cos values.
    """
    g = torch.Generator().manual_seed(seed)
    fixed = {id(m.pos_embed) for m in model.modules() if isinstance(m, PositionEmbedding)}
    for name, p in model.named_parameters():
        if id(p) in fixed:
            continue
        if p.dim() == 1 and ("norm" in name or name.endswith("weight")):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif p.dim() == 1:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(std * torch.randn(p.shape, generator=g))


def save_checkpoint(
    folder: str | Path, config: BagelConfig, model: Bagel, vae: AutoEncoder, dtype: torch.dtype | None = None
) -> Path:
    """Write model + autoencoder + configs (not the tokenizer) in the official layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)

    def cast(sd):
        return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous() for k, v in sd.items()}

    save_file(cast(model.state_dict()), str(folder / "ema.safetensors"), metadata={"format": "pt"})
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / "ae.safetensors"), metadata={"format": "pt"})
    return folder


def write_random_checkpoint(folder: str | Path, config: BagelConfig | str = "tiny", seed: int = 0) -> Path:
    """A random-weight checkpoint in the official layout with a byte-level tokenizer."""
    config = preset(config) if isinstance(config, str) else config
    n_tok = build_tokenizer(folder)
    if n_tok > config.llm.vocab_size:
        raise ValueError(f"tokenizer needs {n_tok} ids but vocab_size is {config.llm.vocab_size}")
    model, vae = Bagel(config), AutoEncoder(config.vae)
    init_random(model, seed)
    init_random(vae, seed + 1)
    return save_checkpoint(folder, config, model, vae)
