"""The conformance kit lookup warns about a BAGEL_CONFORMANCE_DIR it cannot use."""

from __future__ import annotations

import pytest
from conftest import _conformance_dir


def test_missing_conformance_dir_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("BAGEL_CONFORMANCE_DIR", str(tmp_path / "nowhere"))
    with pytest.warns(UserWarning, match=r"BAGEL_CONFORMANCE_DIR=.*nowhere.* is not a folder"):
        _conformance_dir()
    monkeypatch.setenv("BAGEL_CONFORMANCE_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match=r"has no model/ema.safetensors"):
        _conformance_dir()
