"""The demo page in headless Chromium: upload a photo and a shape, see labels, heat map and errors."""

import shutil

import numpy as np
import pytest

from models.shapes import sample
from tests.conftest import IMAGES, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(url):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(f"{url}/ui")
        page.wait_for_selector("#model option", state="attached")
        yield page
        browser.close()


def test_photo_shows_labels_and_heatmap(page) -> None:
    page.set_input_files("#file", str(IMAGES / "chelsea.png"))
    page.wait_for_selector(".bar")
    assert page.locator(".bar").count() == 5
    assert page.get_attribute("#heat", "src").startswith("data:image/png;base64,")
    assert "preprocess" in page.inner_text("#timing") and page.inner_text("#error") == ""
    assert page.inner_text("#ood").startswith("Out of distribution"), "a cat is not a shape"


def test_generated_shape_is_named(page, tmp_path) -> None:
    s = sample(np.random.default_rng(12), size=(320, 240), label=4)
    path = tmp_path / "star.png"
    s.image.save(path)
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelector('.bar')?.dataset.label === 'star'")
    assert page.inner_text("#ood").startswith("In distribution")
    page.uncheck("#show")
    assert page.eval_on_selector("#heat", "e => getComputedStyle(e).display") == "none"
    page.check("#show")
    shot = ROOT / "reports" / "ui.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_non_image_is_rejected_clearly(page, tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not an image")
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelector('#error').textContent.length > 0")
    assert "Rejected (415)" in page.inner_text("#error")
    assert page.locator(".bar").count() == 0
