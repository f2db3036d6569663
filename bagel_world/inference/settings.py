"""Flow-sampler and guidance settings: the knobs of one generated frame.

They belong to the sampler (`bagel_world.inference.sampler`, `BagelInference.generate_image`);
the simulator layer names them per task in `TaskTemplate.sampling`. No torch here, so the
simulator API imports without the model code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


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

    def overridden(self, spec: str) -> SamplingSettings:
        """A copy with the fields named in `spec` changed: "name=value,name=value" with the
        field names above, e.g. "num_timesteps=3,cfg_text_scale=1.5" or "cfg_interval=0.4:1".
        Unknown names and unreadable values are errors that name what is accepted."""
        names = [f.name for f in fields(self)]
        changes: dict[str, Any] = {}
        for item in filter(None, (x.strip() for x in spec.split(","))):
            name, sep, value = item.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or name not in names:
                raise ValueError(f"sampling override {item!r} is not NAME=VALUE with NAME one of {', '.join(names)}")
            try:
                if name == "num_timesteps":
                    changes[name] = int(value)
                elif name == "cfg_renorm_type":
                    changes[name] = value
                elif name == "cfg_interval":
                    lo, hi = value.split(":")
                    changes[name] = (float(lo), float(hi))
                else:
                    changes[name] = float(value)
            except ValueError:
                form = {"num_timesteps": "a whole number", "cfg_interval": "LO:HI",
                        "cfg_renorm_type": "a name"}.get(name, "a number")
                raise ValueError(f"sampling override {item!r}: {name} takes {form}, got {value!r}") from None
        if not changes:
            raise ValueError(f"empty sampling override {spec!r}; give NAME=VALUE with NAME one of {', '.join(names)}")
        return replace(self, **changes)  # __post_init__ checks the ranges
