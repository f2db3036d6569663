"""BAGEL's special tokens (Qwen2 chat markers plus the vision delimiters): one home for the
names, shared by the tokenizer writer, inference and training."""

from __future__ import annotations

from typing import Any

# Written into tiny tokenizers by `checkpoint_io`, in this order; the published tokenizer has them all.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]

# What the packed sequences use them for (upstream `data/data_utils.py` and `inferencer.py`).
SPECIAL_TOKEN_ROLES = {
    "bos": "<|im_start|>",  # opens every text segment
    "eos": "<|im_end|>",  # closes it (and ends generated text)
    "start_of_image": "<|vision_start|>",  # opens an image block (VAE latents or ViT patches)
    "end_of_image": "<|vision_end|>",  # closes it
}


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of `SPECIAL_TOKEN_ROLES` in `tokenizer`; a ValueError names any that is missing."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKEN_ROLES.values() if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer has no {', '.join(missing)} token; BAGEL needs "
                         f"{', '.join(SPECIAL_TOKEN_ROLES.values())}")
    return {role: int(vocab[tok]) for role, tok in SPECIAL_TOKEN_ROLES.items()}
