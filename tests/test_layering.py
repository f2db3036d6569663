"""The layers point one way: model -> inference -> simulator -> envs / agents / server.

Each layer's every module is imported in a fresh interpreter, and none of the layers above
it may appear in `sys.modules` afterwards.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

ABOVE = {
    "bagel_world.model": ["bagel_world.inference", "bagel_world.simulator", "bagel_world.envs",
                          "bagel_world.agents", "bagel_world.server", "bagel_world.training"],
    "bagel_world.inference": ["bagel_world.simulator", "bagel_world.envs", "bagel_world.agents",
                              "bagel_world.server", "bagel_world.training"],
    "bagel_world.simulator": ["bagel_world.envs", "bagel_world.agents", "bagel_world.server",
                              "bagel_world.training"],
}

PROBE = """
import importlib, pkgutil, sys
import bagel_world  # registers the env ids by name (bagel_world.envs, .sims): no env code
base = set(sys.modules)
pkg = importlib.import_module({layer!r})
for m in pkgutil.walk_packages(pkg.__path__, {layer!r} + "."):
    importlib.import_module(m.name)
print(sorted(m for m in set(sys.modules) - base if m.startswith(tuple({above!r}))))
"""


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_a_layer_imports_nothing_from_the_layers_above_it(layer):
    out = subprocess.run([sys.executable, "-c", PROBE.format(layer=layer, above=ABOVE[layer])],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"{layer} imports {out.stdout.strip()}"
