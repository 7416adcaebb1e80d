"""The README's picture of the overview: demo history, 1440 px wide, taken by the browser tests' Chromium.

`OREE_SCREENSHOT=docs/dashboard-overview.png bin/test tests/web/test_screenshot.py` refreshes the
README's file; without the variable the picture goes to a temporary folder and is only checked.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from email_service.demo.stack import DEMO_EMAIL, DEMO_PASSWORD, ensure_demo_client
from tests.conftest import dashboard_api
from tests.web.conftest import requires_chromium, sign_in

pytestmark = [pytest.mark.slow, requires_chromium]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_the_overview_with_the_demo_history_is_photographed_at_1440_pixels(page, assert_clean_page, tmp_path):
    demo = ensure_demo_client()  # what `bin/run` creates
    stats = dashboard_api(demo).get("/api/client/stats").json()

    sign_in(page, email=DEMO_EMAIL, password=DEMO_PASSWORD)
    figures = page.locator("[data-figures]")
    expect(figures.locator('[data-metric="emails_sent"] [data-value]')).to_have_text(
        f"{stats['last_30_days']['emails_sent']:,}"
    )
    page.mouse.move(1040, 560)  # show the chart's tooltip on a day, as a user hovering would
    page.locator(".chart-tip").wait_for()

    target = Path(os.environ.get("OREE_SCREENSHOT") or tmp_path / "dashboard-overview.png")
    if not target.is_absolute():
        target = Path(settings.BASE_DIR) / target
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    width, height = png_size(target)
    assert width == 1440 and 700 <= height <= 1400
    assert target.stat().st_size < 400_000

    # The same page on a phone: readable, nothing wider than the screen.
    page.set_viewport_size({"width": 375, "height": 812})
    page.mouse.move(0, 0)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(tmp_path / "dashboard-overview-375.png"), full_page=True)
    if os.environ.get("OREE_SCREENSHOT_PHONE"):
        page.screenshot(path=os.environ["OREE_SCREENSHOT_PHONE"], full_page=True)
