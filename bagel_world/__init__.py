"""bagel-world: BAGEL Mixture-of-Transformers world models as Gymnasium environments.

`import bagel_world` registers the env ids and loads nothing heavy; `load_bagel` and
`make_simulator` import torch and the model code on first use.
"""

__version__ = "0.1.0"

from bagel_world import envs as _envs  # noqa: F401  registers the imagined env ids (string entry points: loads no model)
from bagel_world import sims as _sims  # noqa: F401  registers the real-simulator twins (imports no simulator)

__all__ = ["load_bagel", "make_simulator", "default_checkpoint", "__version__"]


def __getattr__(name: str):
    if name == "load_bagel":
        from bagel_world.inference.load import load_bagel

        return load_bagel
    if name in ("make_simulator", "default_checkpoint"):
        from bagel_world import simulator

        return getattr(simulator, name)
    raise AttributeError(f"module 'bagel_world' has no attribute {name!r}")
