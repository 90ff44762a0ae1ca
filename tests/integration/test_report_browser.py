"""OUT/_report.html in a real browser: Debian's headless Chromium (as the review page's test drives it).

The run is the unit tests' (``run_out``: an in-process detect run with a
``<script>`` class and an ``<img onerror>`` scene name, two scenes failing);
no Ray is started.  The page must parse to no script element and no image,
show the hostile names as text, and draw its charts and map.
"""

from __future__ import annotations

import os

import pytest

from pipeline.run_report_html import REPORT_HTML
from tests.integration.test_review_browser import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401  (fixture)
from tests.unit.pipeline.test_run_report_html import HOSTILE_LABEL, HOSTILE_SCENE, run_out  # noqa: F401

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason=f"no Chromium: the browser test needs Debian's {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
)


def test_the_report_opens_with_no_script_and_shows_hostile_names_as_text(browser, run_out):  # noqa: F811
    browser.get((run_out / REPORT_HTML).resolve().as_uri())
    page = browser.execute_script(
        "return {scripts: document.scripts.length, images: document.images.length,"
        " svgs: document.querySelectorAll('svg').length, bars: document.querySelectorAll('svg rect').length,"
        " polygons: document.querySelectorAll('svg polygon').length, text: document.body.innerText,"
        " title: document.title}"
    )
    assert page["scripts"] == 0 and page["images"] == 0  # the hostile names stayed text
    assert HOSTILE_LABEL in page["text"] and HOSTILE_SCENE in page["text"]
    assert "2 scene(s) failed" in page["text"] and "bad.tif" in page["text"]
    assert page["svgs"] >= 2 and page["bars"] > 0 and page["polygons"] == 2  # histograms, density, footprints
    assert str(run_out) in page["title"]
