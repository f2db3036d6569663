"""The inference context: a KV cache with its length and rope position."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Context:
    """Everything the model has read so far, as keys/values per layer.

    kv[l] = (keys, values), each (num_kv_heads, length, head_dim); keys are stored after
    the k-norm and RoPE, values raw. Tensors are never modified in place (appends build new
    tensors), so `fork()` shares them and costs O(layers), not O(cache size).
    """

    kv: list[tuple[Tensor, Tensor]]
    length: int = 0
    rope: int = 0
    # (H, W) of the last image appended (VAE-resized); generation defaults to it.
    image_shape: tuple[int, int] | None = None
    # A readable log of what was appended, e.g. ["text(11)", "vae(24)", "vit(35)"].
    segments: list[str] = field(default_factory=list)
    # Cache entries of each segment, in the same order (markers included).
    segment_lengths: list[int] = field(default_factory=list)

    def fork(self) -> Context:
        """An independent copy: appending to either never changes the other."""
        return Context(
            kv=list(self.kv),
            length=self.length,
            rope=self.rope,
            image_shape=self.image_shape,
            segments=list(self.segments),
            segment_lengths=list(self.segment_lengths),
        )

    def drop_segments(self, first: int, count: int) -> Context:
        """A copy without segments [first, first + count): their cache entries are removed.

        The rope position is kept, and so are the rotated keys of what remains, so the
        relative positions that attention sees are unchanged; only the dropped tokens are
        gone. This slides a window over a long history at the cost of one copy of the
        cache, where rebuilding it would re-run the model over every kept segment.
        """
        if first < 0 or count < 1 or first + count > len(self.segments):
            raise ValueError(f"cannot drop segments [{first}, {first + count}) of a context with "
                             f"{len(self.segments)} segments")
        start = sum(self.segment_lengths[:first])
        stop = start + sum(self.segment_lengths[first : first + count])
        kv = [(torch.cat([k[:, :start], k[:, stop:]], dim=1), torch.cat([v[:, :start], v[:, stop:]], dim=1))
              for k, v in self.kv]
        return Context(
            kv=kv,
            length=self.length - (stop - start),
            rope=self.rope,
            image_shape=self.image_shape,
            segments=self.segments[:first] + self.segments[first + count :],
            segment_lengths=self.segment_lengths[:first] + self.segment_lengths[first + count :],
        )

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)

    def __repr__(self) -> str:
        segs = " ".join(self.segments[-8:])
        more = "… " if len(self.segments) > 8 else ""
        return f"Context(length={self.length}, rope={self.rope}, segments=[{more}{segs}])"
