"""``clickmask demo`` in a real headless Chromium, against a real tritonserver (the session fixture).

The demo runs as its own process (``python -m clickmask.cli demo``), exactly as a person
starts it; the browser opens the page, clicks on the canvas with real mouse events, and
reads back what the page shows (its state, the canvas pixels, the downloaded files).
The tests that need the browser skip, with the reason, where Chromium or chromedriver is
not installed (``apt-get install chromium chromium-driver``; ``make system-deps`` does it).
"""
from __future__ import annotations

import json
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from ..conftest import free_port, runs_to_mask

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:  # pragma: no cover - the dev extra has it
    selenium = None

NO_BROWSER = (
    "headless browser tests need Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver, or make system-deps) and the python package selenium (the dev extra)"
    if CHROMIUM is None or CHROMEDRIVER is None or selenium is None else None
)
needs_browser = pytest.mark.skipif(NO_BROWSER is not None, reason=NO_BROWSER or "")

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "clickmask" / "web" / "static" / "samples"
CUP = (250, 160)  # the coffee cup in samples/coffee.jpg (600x400)
SAUCER = (250, 320)  # the saucer below it
TABLE = (560, 60)  # the table top, upper right


# ----------------------------------------------------------------------------- processes
class DemoProcess:
    """``clickmask demo --port 0 ...`` as a child process; ``url`` is the page it prints."""

    def __init__(self, *args: str, timeout_s: float = 240.0) -> None:
        cmd = [sys.executable, "-m", "clickmask.cli", "demo", "--port", "0", *args]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(r"clickmask demo on (http://\S+/)", timeout_s).group(1)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        for line in self.lines:
            if match := re.search(pattern, line):
                return match
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            if match := re.search(pattern, line):
                return match
        self.stop()
        raise AssertionError(f"clickmask demo never printed {pattern!r}:\n" + "\n".join(self.lines[-40:]))

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=30) as response:
            return json.loads(response.read())

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def demo_app(grpc_url):
    demo = DemoProcess("--url", grpc_url)
    yield demo
    assert demo.stop() == 0, "\n".join(demo.lines[-40:])


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    # The page's viewport exactly (the window size includes the browser's own bars).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


# ----------------------------------------------------------------------------- page helpers
def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def idle(driver) -> None:
    driver.execute_async_script("window.clickmaskDemo.idle().then(arguments[0])")


def page_state(driver) -> dict:
    return driver.execute_script(
        "const s = window.clickmaskDemo.state;"
        "return {tab: s.tab, width: s.width, height: s.height, name: s.name, objects: s.objects, current: s.current};")


def load(driver, url: str) -> None:
    driver.get(url)
    wait_until(lambda: driver.execute_script("return !!window.clickmaskDemo"), what="the page script")


def open_sample(driver, name: str) -> dict:
    from selenium.webdriver.common.by import By

    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, f"#samples button[data-sample={name}]"),
               what="the sample buttons")
    driver.find_element(By.CSS_SELECTOR, f"#samples button[data-sample={name}]").click()
    idle(driver)
    return page_state(driver)


def canvas_click(driver, x: float, y: float, *, right: bool = False, shift: bool = False) -> dict:
    """A real mouse click on image pixel (x, y) of the canvas; waits for the answer."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    canvas = driver.find_element(By.ID, "canvas")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    state = page_state(driver)
    scale = rect[0] / state["width"]
    # Selenium offsets are from the element's centre, in whole CSS pixels.
    dx, dy = round((x + 0.5) * scale - rect[0] / 2), round((y + 0.5) * scale - rect[1] / 2)
    chain = ActionChains(driver).move_to_element_with_offset(canvas, dx, dy)
    if shift:
        chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    elif right:
        chain = chain.context_click()
    else:
        chain = chain.click()
    chain.perform()
    idle(driver)
    return page_state(driver)


def current_mask(state: dict) -> np.ndarray:
    return runs_to_mask(state["current"]["runs"], state["height"], state["width"])


def canvas_and_image_pixels(driver) -> tuple[np.ndarray, np.ndarray]:
    """The canvas as drawn (image + overlays) and the bare image, both HxWx3 uint8 RGB."""
    data = driver.execute_script("""
        const canvas = document.getElementById('canvas');
        const s = window.clickmaskDemo.state;
        const bare = document.createElement('canvas');
        bare.width = s.width; bare.height = s.height;
        bare.getContext('2d').drawImage(s.image, 0, 0, s.width, s.height);
        return [canvas.toDataURL('image/png'), bare.toDataURL('image/png')];
    """)
    arrays = []
    for url in data:
        raw = np.frombuffer(__import__("base64").b64decode(url.split(",", 1)[1]), np.uint8)
        arrays.append(cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return arrays[0], arrays[1]


def message(driver) -> tuple[bool, str, str]:
    """(visible, kind, text) of the page's message bar."""
    return tuple(driver.execute_script(
        "const m = document.getElementById('message');"
        "return [!m.hidden, m.className, document.getElementById('message-text').textContent];"))


def download(driver, downloads: pathlib.Path, fmt: str, name: str) -> pathlib.Path:
    from selenium.webdriver.common.by import By

    target = downloads / name
    if target.exists():
        target.unlink()
    driver.find_element(By.CSS_SELECTOR, f"button.download[data-format={fmt}]").click()
    idle(driver)
    wait_until(lambda: target.is_file() and target.stat().st_size > 0
               and not list(downloads.glob("*.crdownload")), what=f"the download {name}")
    return target


def js_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]]


# ----------------------------------------------------------------------------- tests
@needs_browser
def test_click_negative_undo_and_downloads_in_a_real_browser(browser, demo_app, downloads):
    driver = browser
    load(driver, demo_app.url)
    wait_until(lambda: "ok" in driver.find_element("id", "server-status").get_attribute("class"),
               what="the server badge to say ready")
    state = open_sample(driver, "coffee")
    assert (state["width"], state["height"], state["name"]) == (600, 400, "coffee.jpg")

    # A positive click on the cup: a mask of plausible size appears where clicked.
    first = canvas_click(driver, *CUP)
    (click,) = first["current"]["clicks"]
    assert click["positive"] and abs(click["x"] - CUP[0]) <= 1 and abs(click["y"] - CUP[1]) <= 1
    mask = current_mask(first)
    assert mask[CUP[1], CUP[0]] and 0.05 < mask.mean() < 0.5, f"area {mask.mean():.1%}"
    # ... and is drawn: inside it the canvas is tinted, far outside it shows the bare image.
    drawn, bare = canvas_and_image_pixels(driver)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
    inner[CUP[1] - 15:CUP[1] + 16, CUP[0] - 15:CUP[0] + 16] = False  # not the click dot
    outer = cv2.erode((~mask).astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
    swatch = driver.find_element("css selector", "#objects li.current .swatch").value_of_css_property("background-color")
    colour = np.array([int(v) for v in re.findall(r"\d+", swatch)[:3]], float)
    tinted = 0.5 * bare + 0.5 * colour  # the current object is drawn at 50 % opacity in its colour
    assert inner.sum() > 1000 and (np.abs(drawn - tinted).max(axis=2)[inner] <= 3).mean() > 0.99
    assert (np.abs(drawn.astype(int) - bare.astype(int)).max(axis=2)[inner] > 20).mean() > 0.8
    assert outer.sum() > 1000 and (np.abs(drawn.astype(int) - bare.astype(int)).max(axis=2)[outer] <= 2).mean() > 0.99
    # ... and its latency shows, split.
    latency = driver.find_element("id", "latency").text
    assert "round trip" in latency and "inference" in latency and "encode" in latency

    # A negative (right) click on the saucer shrinks the mask; undo restores it exactly.
    second = canvas_click(driver, *SAUCER, right=True)
    assert [c["positive"] for c in second["current"]["clicks"]] == [True, False]
    assert second["current"]["area"] < first["current"]["area"]
    assert not current_mask(second)[SAUCER[1], SAUCER[0]]
    driver.find_element("id", "undo").click()
    idle(driver)
    undone = page_state(driver)
    assert undone["current"]["runs"] == first["current"]["runs"]
    # Shift-click is a negative click too: the same click gives the same mask.
    shifted = canvas_click(driver, *SAUCER, shift=True)
    assert [c["positive"] for c in shifted["current"]["clicks"]] == [True, False]
    assert shifted["current"]["runs"] == second["current"]["runs"]

    # The mask PNG downloads and matches the mask on the page.
    png = cv2.imread(str(download(driver, downloads, "mask", "coffee_mask.png")), cv2.IMREAD_UNCHANGED)
    assert png.shape == (400, 600) and set(np.unique(png)) <= {0, 255}
    np.testing.assert_array_equal(png > 0, current_mask(shifted))

    # Next object: the table top; the instance map and the COCO file hold both.
    driver.find_element("id", "next").click()
    idle(driver)
    table = canvas_click(driver, *TABLE)
    assert len(table["objects"]) == 1 and table["current"]["id"] == 2 and table["current"]["area"] > 0
    instances = cv2.imread(str(download(driver, downloads, "instances", "coffee_instances.png")), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(instances)) == {0, 1, 2}
    np.testing.assert_array_equal(instances == 2, current_mask(table))
    coco = json.loads(download(driver, downloads, "coco", "coffee_coco.json").read_text())
    assert [a["id"] for a in coco["annotations"]] == [1, 2]
    assert coco["annotations"][0]["area"] == shifted["current"]["area"]
    assert message(driver)[0] is False
    assert js_errors(driver) == []


@needs_browser
def test_start_from_a_mask_and_refine_it(browser, demo_app, tmp_path):
    driver = browser
    load(driver, demo_app.url)
    open_sample(driver, "coffee")
    seed = np.zeros((400, 600), np.uint8)
    seed[40:260, 170:330] = 255
    path = tmp_path / "cup_box.png"
    cv2.imwrite(str(path), seed)
    driver.find_element("id", "seed-input").send_keys(str(path))
    idle(driver)
    state = page_state(driver)
    assert state["current"]["seeded"] and state["current"]["area"] == 220 * 160
    visible, kind, text = message(driver)
    assert visible and kind == "info" and "cup_box.png" in text
    refined = canvas_click(driver, 180, 250, right=True)
    assert refined["current"]["seeded"] and refined["current"]["area"] != 220 * 160


@needs_browser
def test_a_non_image_file_shows_a_message_and_the_page_keeps_working(browser, demo_app, tmp_path):
    driver = browser
    load(driver, demo_app.url)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    driver.find_element("id", "file-input").send_keys(str(notes))
    idle(driver)
    visible, kind, text = message(driver)
    assert visible and kind == "error"
    assert "'notes.txt' is not an image" in text and "JPEG, PNG" in text
    assert page_state(driver)["tab"] is None
    # The page still works: a real image opens and segments, and the message goes away.
    photo = tmp_path / "cup photo.jpg"
    shutil.copy(SAMPLES / "coffee.jpg", photo)
    driver.find_element("id", "file-input").send_keys(str(photo))
    idle(driver)
    assert page_state(driver)["name"] == "cup photo.jpg"
    assert canvas_click(driver, *CUP)["current"]["area"] > 0
    assert message(driver)[0] is False
    # Drag and drop: a file dropped on the canvas area opens too (the drop event a browser
    # fires, with the file in its DataTransfer).
    driver.execute_async_script("""
        const done = arguments[0];
        fetch('/static/samples/astronaut.jpg').then((r) => r.blob()).then((blob) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([blob], 'dropped.jpg', {type: 'image/jpeg'}));
            const stage = document.getElementById('stage');
            stage.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
            stage.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
            window.clickmaskDemo.idle().then(done);
        });
    """)
    idle(driver)
    dropped = page_state(driver)
    assert (dropped["name"], dropped["width"], dropped["height"]) == ("dropped.jpg", 512, 512)
    assert canvas_click(driver, 110, 350)["current"]["area"] > 0


@needs_browser
def test_a_server_that_is_down_is_reported_on_the_page(browser):
    demo = DemoProcess("--url", f"127.0.0.1:{free_port()}", "--timeout", "2")
    try:
        driver = browser
        load(driver, demo.url)
        wait_until(lambda: "down" in driver.find_element("id", "server-status").get_attribute("class"),
                   what="the server badge to say down")
        assert "not reachable" in driver.find_element("id", "server-status").text
        open_sample(driver, "coffee")
        visible, kind, text = message(driver)
        assert visible and kind == "error"
        assert "Cannot reach the segmentation server" in text and "clickmask serve" in text
        assert driver.find_elements("css selector", "#samples button")  # the page is still usable
    finally:
        assert demo.stop() == 0


@needs_browser
def test_an_expired_session_is_reopened_and_replayed(browser, grpc_url):
    demo = DemoProcess("--url", grpc_url, "--session-ttl", "1")
    try:
        driver = browser
        load(driver, demo.url)
        open_sample(driver, "coffee")
        first = canvas_click(driver, *CUP)
        old_tab = first["tab"]
        time.sleep(1.5)
        second = canvas_click(driver, *SAUCER, right=True)
        assert second["tab"] != old_tab
        assert [c["positive"] for c in second["current"]["clicks"]] == [True, False]
        assert 0 < second["current"]["area"] < first["current"]["area"]
        visible, kind, text = message(driver)
        assert visible and kind == "info" and "replayed" in text
    finally:
        assert demo.stop() == 0


@needs_browser
def test_screenshot_of_a_real_run(browser, demo_app, tmp_path):
    """The README's screenshot: CLICKMASK_DEMO_SCREENSHOT=docs/images/demo.png keeps it."""
    driver = browser
    load(driver, demo_app.url)
    open_sample(driver, "chelsea")
    state = canvas_click(driver, 230, 150)
    assert 0.3 < current_mask(state).mean() < 0.95  # the cat fills much of the picture
    canvas_click(driver, 430, 60, right=True)
    canvas_click(driver, 420, 250, right=True)
    canvas_click(driver, 300, 60)
    raw = tmp_path / "demo.png"
    driver.save_screenshot(str(raw))
    shot = cv2.imread(str(raw))
    assert shot is not None and shot.shape[:2] == (900, 1440)
    assert (np.abs(shot.astype(int) - (64, 156, 255)[::-1]).max(axis=2) < 120).mean() > 0.1  # the blue mask shows
    keep = os.environ.get("CLICKMASK_DEMO_SCREENSHOT")
    if keep:  # 6 bits per channel (invisible here) keeps the PNG under 500 KB for the repository
        reduced = (shot & 0xFC) | (shot >> 6)
        assert cv2.imwrite(keep, reduced, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def test_demo_start_server_runs_and_stops_its_own_tritonserver(tmp_path):
    grpc_port = free_port()
    demo = DemoProcess("--start-server", "--url", f"127.0.0.1:{grpc_port}")
    try:
        pid = int(demo.wait_for(r"tritonserver pid (\d+)", 5).group(1))
        assert demo.get_json("/api/health")["ready"] is True
        boundary = "----clickmask"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sample\"\r\n\r\ncoffee\r\n--{boundary}--\r\n")
        request = urllib.request.Request(demo.url + "api/open", data=body.encode(), method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            tab = json.loads(response.read())["tab"]
        request = urllib.request.Request(demo.url + "api/click", method="POST",
                                         data=json.dumps({"tab": tab, "x": CUP[0], "y": CUP[1]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["current"]["area"] > 0
    finally:
        code = demo.stop()
    assert code == 0, "\n".join(demo.lines[-40:])
    assert "stopping tritonserver" in "\n".join(demo.lines)
    wait_until(lambda: not pathlib.Path(f"/proc/{pid}").exists()
               or "zombie" in pathlib.Path(f"/proc/{pid}/status").read_text(errors="replace").lower(),
               timeout_s=10, what=f"tritonserver pid {pid} to exit")
