"""The web UI in a real headless Chromium: it renders, and the main parts are on the page."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image

from core.settings import Settings
from quire.api import Quire
from tests.servers import start_app, stop_app
from tests.test_ui import seed_pdf, seed_text

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.browser


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.fail("headless Chromium is not at /usr/bin/chromium: `apt-get install chromium` "
                    "(python3 bootstrap.py test does it when run as root)")
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=10000", *args, url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-home")
    with Quire(Settings(home=home)) as q:
        seed_text(q, "demo")
        seed_pdf(q, "demo")
    proc, url = start_app(home)
    yield url + "/"
    stop_app(proc)


@pytest.mark.parametrize("tab", ["chat", "documents"])
def test_screenshot_is_rendered(app_url, tmp_path, tab):
    shot = tmp_path / f"{tab}.png"
    result = chromium(f"{app_url}?tab={tab}", tmp_path / "profile", f"--screenshot={shot}")
    assert shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "the screenshot is blank"


def test_dom_has_the_main_components(app_url, tmp_path):
    result = chromium(app_url, tmp_path / "profile", "--dump-dom")
    dom = result.stdout
    for label in ("Quire", "Session", "Conversation", "Question", "Citations", "Documents", "Export", "Settings"):
        assert label in dom, f"{label!r} is missing from the page"
    assert "2 documents" in dom  # the session was picked on load and its summary shown
