"""The review page in a real browser: Debian's headless Chromium, driven by Selenium.

The page is opened on a real server over real GeoTIFFs and a detection
output; a screenshot is checked at known pixels (imagery drawn under the
boxes), corrections are made with clicks and keys, the page is reloaded and
the labels file is read back.  Set ``AERIALDET_REVIEW_SCREENSHOT=docs/review.png``
to keep the screenshot (the README's).  No Ray is started.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from tests.review_helpers import make_review_case, open_case_session, serving

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason=f"no Chromium: the browser test needs Debian's {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
)
UNREVIEWED_RGB = (255, 212, 0)  # review.js STYLE_COLORS.unreviewed (#ffd400)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1100,760",
        "--force-device-scale-factor=1",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    status = driver.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; page status: {status!r}")


def _ready(driver, url: str, min_tiles: int, min_features: int) -> None:
    driver.get(url)
    _wait(driver, "return document.body.dataset.ready === '1'")
    _wait(driver, f"return Number(document.body.dataset.tiles || 0) >= {min_tiles}")
    _wait(driver, f"return Number(document.body.dataset.features || 0) >= {min_features}")
    _wait(
        driver,
        "return new Promise(r => { const m = window.aerialdetReview.map; m.once('rendercomplete', () => r(true)); m.render(); })",
    )


def _screen(driver):
    from PIL import Image

    return Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")


def _pixel_of(driver, item_id: str) -> tuple[int, int]:
    at = driver.execute_script("return window.aerialdetReview.pixelOf(arguments[0])", item_id)
    if at is None:
        shown = driver.execute_script(
            "return window.aerialdetReview.source.getFeatures().map(f => f.getId())"
        )
        raise AssertionError(f"{item_id} is not on the page (it shows {shown})")
    x, y = at
    return int(round(x)), int(round(y))


def _click(driver, x: int, y: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(x, y).click()  # viewport px = map px (map at 0, 0)
    actions.perform()


def _keys(driver, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def _edit_done(driver, count: int) -> None:
    _wait(driver, f"return Number(document.body.dataset.edits || 0) >= {count}")


def _state(driver, item_id: str) -> str | None:
    return driver.execute_script(
        "const f = window.aerialdetReview.source.getFeatureById(arguments[0]); return f ? f.get('state') : null",
        item_id,
    )


def _ids(session) -> dict[tuple[str, float], str]:
    """(scene file name, score rounded) -> detection id."""
    frame = session.detections
    return {
        (Path(s).name, round(float(sc), 2)): i
        for s, sc, i in zip(frame["scene"], frame["score"], frame["id"])
    }


def test_page_renders_tiles_and_boxes_and_saves_corrections(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    from pipeline.review_store import read_labels

    case = make_review_case(tmp_path)
    labels = tmp_path / "labels.parquet"
    session = open_case_session(case, labels)
    ids = _ids(session)
    car, false_box, weak_car, building = (
        ids["scene_0.tif", 0.9],
        ids["scene_1.tif", 0.62],
        ids["scene_0.tif", 0.3],
        ids["scene_0.tif", 0.52],
    )
    with serving(session) as url:
        _ready(browser, url, min_tiles=2, min_features=7)
        shot = _screen(browser)
        if os.environ.get("AERIALDET_REVIEW_SCREENSHOT"):
            shot.save(os.environ["AERIALDET_REVIEW_SCREENSHOT"])
        shot.save(tmp_path / "review.png")
        # imagery: the painted red vehicle (band 0 = 255) at the centre of its box
        cx, cy = _pixel_of(browser, car)
        r, g, b = shot.getpixel((cx, cy))
        assert r > 200 and g < 60 and b < 60, (
            f"no red imagery under the vehicle box at {(cx, cy)}: {(r, g, b)}"
        )
        # a box: the unreviewed vehicle's top edge is drawn yellow
        top = browser.execute_script(
            "const e = window.aerialdetReview.source.getFeatureById(arguments[0]).getGeometry().getExtent();"
            "return window.aerialdetReview.map.getPixelFromCoordinate([(e[0] + e[2]) / 2, e[3]]);",
            car,
        )
        edge = shot.getpixel((int(round(top[0])), int(round(top[1]))))
        assert all(abs(c - u) < 40 for c, u in zip(edge, UNREVIEWED_RGB)), f"box edge colour {edge}"
        # empty ground between objects is black imagery, outside the scenes the map's grey
        assert max(shot.getpixel((cx + 40, cy + 60))) < 30

        _click(browser, *_pixel_of(browser, false_box))
        _wait(browser, f"return document.body.dataset.selected === '{false_box}'")
        _keys(browser, "r")  # reject
        _edit_done(browser, 1)
        _click(browser, *_pixel_of(browser, weak_car))
        _wait(browser, f"return document.body.dataset.selected === '{weak_car}'")
        _keys(browser, "a")  # accept a detection below the threshold
        _edit_done(browser, 2)
        _keys(browser, Keys.ARROW_RIGHT)  # move it right (2 screen px)
        _edit_done(browser, 3)
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ARROW_RIGHT).key_up(Keys.SHIFT).perform()
        _edit_done(browser, 4)  # ... and widen it (Shift: resize)
        _click(browser, *_pixel_of(browser, building))
        _wait(browser, f"return document.body.dataset.selected === '{building}'")
        _keys(browser, "1")  # relabel to class 1 (vehicle) ...
        _edit_done(browser, 5)
        assert _state(browser, building) == "relabeled"
        _keys(browser, "u")  # ... and undo that
        _wait(
            browser,
            f"const f = window.aerialdetReview.source.getFeatureById('{building}'); return f && f.get('label') === 'building'",
        )
        # draw a missed box on empty ground of scene 0 (px 100..130, 200..230): two clicks
        corner = browser.execute_script(
            "const m = window.aerialdetReview.map; return [m.getPixelFromCoordinate(arguments[0]), m.getPixelFromCoordinate(arguments[1])];",
            *[list(v) for v in _map_points(session, case.scenes[0], (100, 200), (130, 230))],
        )
        _keys(browser, "d")
        _wait(browser, "return document.body.dataset.drawing === '1'")
        _click(browser, int(corner[0][0]), int(corner[0][1]))
        _click(browser, int(corner[1][0]), int(corner[1][1]))
        _edit_done(browser, 6)

        browser.refresh()
        _ready(browser, url, min_tiles=2, min_features=8)
        assert _state(browser, false_box) == "rejected"
        assert _state(browser, weak_car) == "moved"
        assert _state(browser, building) == "unreviewed"
        assert _state(browser, car) == "unreviewed"

    state, crs = read_labels(labels)
    assert crs.to_epsg() == 32633
    assert false_box not in state.rows and state.rejected[false_box]["reviewer"] == "tester"
    moved = state.rows[weak_car]
    assert moved.review == "moved" and moved.label == "vehicle" and moved.source_detection == weak_car
    x_shift = moved.bounds_crs[0] - session.ctx.detections[weak_car].bounds_crs[0]
    assert 0.5 < x_shift < 10, f"moved by {x_shift} m"
    width = lambda b: b[2] - b[0]  # noqa: E731
    assert width(moved.bounds_crs) > width(session.ctx.detections[weak_car].bounds_crs) + 0.5  # resized
    assert state.rows[building].label == "building" and state.rows[building].review == "unreviewed"
    drawn = [r for r in state.rows.values() if r.review == "drawn"]
    assert len(drawn) == 1 and drawn[0].label == "vehicle" and drawn[0].scene == case.scenes[0]
    xmin, ymin, xmax, ymax = drawn[0].bounds_crs  # scene 0: x = 500000 + col, y = 4000256 - row (1 m px)
    assert (
        abs(xmin - 500100) < 3
        and abs(xmax - 500130) < 3
        and abs(ymax - 4000056) < 3
        and abs(ymin - 4000026) < 3
    )


def _map_points(session, scene: str, *cols_rows: tuple[int, int]) -> list[tuple[float, float]]:
    from pyproj import Transformer

    to_map = Transformer.from_crs(session.crs, "EPSG:3857", always_xy=True)
    return [to_map.transform(500000.0 + c, 4000256.0 - r) for c, r in cols_rows]


def test_hostile_label_is_shown_as_text(tmp_path, browser):
    hostile = "<script>alert(1)</script>"
    case = make_review_case(tmp_path, class_names=(hostile, "<img src=x onerror=alert(2)>"))
    session = open_case_session(case, tmp_path / "labels.parquet", thresholds={})
    item = session.detections["id"].iloc[0]
    with serving(session) as url:
        _ready(browser, url, min_tiles=1, min_features=7)
        _click(browser, *_pixel_of(browser, item))
        _wait(browser, f"return document.body.dataset.selected === '{item}'")
        shown = browser.execute_script("return document.querySelector('#info .info-label').textContent")
        buttons = browser.execute_script(
            "return Array.from(document.querySelectorAll('#class-buttons button')).map(b => b.textContent)"
        )
        scripts = browser.execute_script(
            "return document.querySelectorAll('#panel script, #panel img').length"
        )
    assert shown in (hostile, "<img src=x onerror=alert(2)>")
    assert any(hostile in b for b in buttons)
    assert scripts == 0
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
