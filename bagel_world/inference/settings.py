"""Flow-sampler and guidance settings: the knobs of one generated frame.

They belong to the sampler (`bagel_world.inference.sampler`, `BagelInference.generate_image`);
the simulator layer names them per task in `TaskTemplate.sampling`. No torch here, so the
simulator API imports without the model code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSettings:
    """Flow sampler and guidance settings for one step (official names, section 8)."""

    num_timesteps: int = 50
    timestep_shift: float = 3.0
    cfg_text_scale: float = 4.0
    cfg_img_scale: float = 2.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    cfg_renorm_type: str = "text_channel"
    cfg_renorm_min: float = 0.0

    def __post_init__(self) -> None:
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2 (n-1 Euler steps), got {self.num_timesteps}")
        if self.timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be > 0, got {self.timestep_shift}")
        if self.cfg_renorm_type not in ("global", "channel", "text_channel"):
            raise ValueError(
                f"cfg_renorm_type {self.cfg_renorm_type!r} is not one of 'global', 'channel', 'text_channel'"
            )
        lo, hi = self.cfg_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"cfg_interval must satisfy 0 <= lo <= hi <= 1, got {self.cfg_interval}")
        if not 0.0 <= self.cfg_renorm_min <= 1.0:
            raise ValueError(f"cfg_renorm_min must be in [0, 1], got {self.cfg_renorm_min}")
