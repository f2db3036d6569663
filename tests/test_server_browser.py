"""The browser playground in headless Chromium (Debian's chromium driven by Playwright).

Skips cleanly without the `playwright` package or a chromium binary. Run with:
    apt-get install -y chromium && pip install playwright   # no `playwright install`
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from fakes import FakeSimulator  # noqa: E402

from bagel_world.server import ServerSettings, create_app  # noqa: E402
from bagel_world.server.testing import run_in_thread  # noqa: E402
from bagel_world.simulator.tasks import default_templates  # noqa: E402

CHROMIUM = os.environ.get("BAGEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install -y chromium, or set BAGEL_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        except Exception as exc:  # a broken or incompatible browser is an environment problem
            pytest.skip(f"chromium at {CHROMIUM} does not start under Playwright: {exc}")
        yield b
        b.close()


def png_frame(path, h=64, w=64, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_playground_reset_step_and_gif(browser, tmp_path):
    sim = FakeSimulator(default_templates(large=False))
    with run_in_thread(create_app(sim, ServerSettings(token="tok"))) as url:
        page = browser.new_page(accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        assert page.url.endswith("/playground/")
        # Without the token the page says so; with it, the env list loads.
        sync_api.expect(page.locator("#status")).to_contain_text("401")
        page.fill("#token", "tok")
        page.dispatch_event("#token", "change")
        sync_api.expect(page.locator("#env option")).to_have_count(4)
        # Before the first reset: a placeholder, no image element (a src-less <img> is a broken icon).
        assert page.is_visible("#frame-placeholder") and not page.is_visible("#frame")
        assert not page.is_visible("#goal-figure")
        assert page.evaluate("[...document.images].every((img) => img.hidden || img.closest('[hidden]') "
                             "|| (img.complete && img.naturalWidth > 0))")
        # Reset a goal env with a seed: frame and goal appear, canonical action buttons too.
        page.select_option("#env", "BagelNavigate-v0")
        page.fill("#seed", "3")
        page.click("#reset")
        sync_api.expect(page.locator("#status")).to_contain_text("started")
        assert page.get_attribute("#frame", "src").startswith("data:image/png;base64,")
        assert page.is_visible("#frame") and not page.is_visible("#frame-placeholder")
        assert page.is_visible("#goal")
        assert page.evaluate("[...document.images].filter((img) => !img.closest('[hidden]'))"
                             ".every((img) => img.complete && img.naturalWidth > 0)")
        sync_api.expect(page.locator("#actions button.action")).to_have_count(6)
        first = page.get_attribute("#frame", "src")
        # Click an action, then type one.
        page.click("#actions button.action >> nth=0")
        sync_api.expect(page.locator("#log tbody tr")).to_have_count(1)
        page.fill("#action-text", "turn left 45 degrees")
        page.press("#action-text", "Enter")
        sync_api.expect(page.locator("#log tbody tr")).to_have_count(2)
        sync_api.expect(page.locator("#step-count")).to_have_text("2")
        assert page.get_attribute("#frame", "src") != first
        assert "move forward 0.5 m" in page.inner_text("#log tbody tr >> nth=0")
        float(page.inner_text("#return"))
        # The episode as a GIF.
        with page.expect_download() as dl:
            page.click("#gif")
        gif = Image.open(io.BytesIO(open(dl.value.path(), "rb").read()))
        assert gif.format == "GIF" and gif.n_frames == 3
        # Server errors are shown, not swallowed.
        page.fill("#action-text", "x" * 300)
        page.press("#action-text", "Enter")
        sync_api.expect(page.locator("#status")).to_contain_text("action_too_long")
        # Reset from an uploaded image (multiview needs no goal).
        page.select_option("#env", "BagelMultiview-v0")
        assert not page.is_visible("#goal-row")
        page.set_input_files("#start-image", png_frame(tmp_path / "start.png", 100, 80))
        page.fill("#seed", "")
        page.click("#reset")
        sync_api.expect(page.locator("#status")).to_contain_text("started")
        assert not page.is_visible("#goal-figure")
        sync_api.expect(page.locator("#log tbody tr")).to_have_count(0)
        assert errors == []
        page.close()
