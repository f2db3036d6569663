"""System prompts of the official inferencer (`inferencer.py`), character for character.

Both are two lines joined by "\\n"; the first line ends with a period and one space, and
there is no trailing newline. Check values (UTF-8 SHA-256): VLM 227 chars 5eff0088...,
GEN 209 chars 837914a3... (tests/test_transforms.py checks the full hashes).
"""

from __future__ import annotations

# Understanding with thinking: reason inside <think> ... </think>, then answer.
VLM_THINK_SYSTEM_PROMPT = (
    "You should first think about the reasoning process in the mind and then provide the user with the answer. \n"
    "The reasoning process is enclosed within <think> </think> tags, i.e. "
    "<think> reasoning process here </think> answer here"
)

# Generation / editing with thinking: plan inside <think> ... </think>, then the image.
GEN_THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in the mind and then generate the image. \n"
    "The planning process is enclosed within <think> </think> tags, i.e. "
    "<think> planning process here </think> image here"
)

__all__ = ["VLM_THINK_SYSTEM_PROMPT", "GEN_THINK_SYSTEM_PROMPT"]
