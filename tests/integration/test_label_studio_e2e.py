"""End to end: a real Label Studio calls ``clickmask label-studio-backend`` over a real tritonserver.

Label Studio (PyPI ``label-studio``, in ``.venv-labelstudio``) runs bound to loopback with a
temporary data dir, a legacy API token and local-files serving on a temporary folder. The
backend is started as ``.venv/bin/clickmask label-studio-backend``, which hands over to the
adapter's own environment ``.venv-ls`` (numpy 2 for label-studio-sdk). The test creates a
project, imports a COCO_MVal (training set) image twice - from local-files storage and as an
uploaded file -, connects the backend with ``is_interactive: true`` and sends smart keypoints
through ``POST /api/ml/{id}/interactive-annotating``, as the labeling UI does. The returned
brush RLE is decoded with label-studio-sdk's own decoder.

Label Studio refuses ML backends on loopback or private addresses unless it is started with
``ML_BLOCK_LOCAL_IP=false`` and ``SSRF_PROTECTION_ENABLED=false``: set here for this test
instance only (docs/integrations.md says what a deployment does instead).

``make test`` installs both environments (``make venv-ls venv-labelstudio``); where they could
not be installed this test skips and says so.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
import requests

from clickmask.client import iou, load_gt, next_click

from ..conftest import DATASETS, REPO_ROOT, free_port

pytestmark = pytest.mark.slow

LABEL_STUDIO = REPO_ROOT / ".venv-labelstudio" / "bin" / "label-studio"
ADAPTER_PYTHON = REPO_ROOT / ".venv-ls" / "bin" / "python"
CLICKMASK = REPO_ROOT / ".venv" / "bin" / "clickmask"
SAMPLE = "apple04_000000562059"  # COCO_MVal, a training set (never GrabCut/Berkeley here)
TOKEN = "clickmask-e2e-legacy-token-0123456789"
USER, PASSWORD = "e2e@example.com", "e2e-password-123"
IOU_BOUND = 0.8  # one positive click on this apple: 0.93 measured with the shipped model
STARTUP_S = 600.0  # the first start migrates a fresh database: minutes on 2 busy cores

ADAPTER_CLICKMASK = REPO_ROOT / ".venv-ls" / "bin" / "clickmask"  # the last thing its install writes
for path, fix in ((LABEL_STUDIO, "make venv-labelstudio"), (ADAPTER_CLICKMASK, "make venv-ls")):
    if not path.exists():
        pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=f"{path} is not installed ({fix}; make test "
                                                                f"runs it, and it failed or was not run here)")]


def _wait_http(url: str, process: subprocess.Popen, log: pathlib.Path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode} before answering {url}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    pytest.fail(f"{what} did not answer {url} within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop a child started in its own process group, the whole group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def sample():
    root = DATASETS / "COCO_MVal"
    image, mask = root / "images" / f"{SAMPLE}.jpg", root / "masks" / f"{SAMPLE}.png"
    if not image.is_file():
        pytest.fail(f"{image} is missing: put ../shared beside the repo or set CLICKMASK_DATASETS")
    gt, ignore = load_gt(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE))
    return {"image": image, "gt": gt, "ignore": ignore, "height": gt.shape[0], "width": gt.shape[1]}


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory, sample):
    base = tmp_path_factory.mktemp("label-studio")
    document_root = base / "files"
    (document_root / "coco").mkdir(parents=True)
    shutil.copy(sample["image"], document_root / "coco" / "apple.jpg")
    port = free_port()
    env = dict(os.environ,
               LOCAL_FILES_SERVING_ENABLED="true", LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
               # this test instance only: the backend is on loopback (see docs/integrations.md)
               ML_BLOCK_LOCAL_IP="false", SSRF_PROTECTION_ENABLED="false",
               LABEL_STUDIO_BASE_DATA_DIR=str(base / "data"), LATEST_VERSION_CHECK="false",
               COLLECT_ANALYTICS="false", PYTHONUNBUFFERED="1")
    log = base / "label-studio.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(LABEL_STUDIO), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(base / "data"), "--username", USER, "--password", PASSWORD,
             "--user-token", TOKEN, "--enable-legacy-api-token", "--log-level", "WARNING"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=base)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/health", process, log, STARTUP_S, "label-studio")
        yield {"url": url, "root": document_root, "log": log}
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def backend(label_studio, grpc_url, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    env = dict(os.environ, LABEL_STUDIO_URL=label_studio["url"], LABEL_STUDIO_API_KEY=TOKEN, PYTHONUNBUFFERED="1")
    env.pop("CLICKMASK_LS_HANDOFF", None)
    with log.open("w") as out:
        process = subprocess.Popen([str(CLICKMASK), "-v", "label-studio-backend", "--url", grpc_url, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/health", process, log, 120.0, "clickmask label-studio-backend")
        yield {"url": url, "log": log}
    finally:
        _stop(process)


def _decode(rle: list[int], height: int, width: int) -> np.ndarray:
    """Label Studio's brush RLE -> HxW bool, by label-studio-sdk's decoder (in the adapter's env)."""
    code = ("import json, sys, numpy as np; from label_studio_sdk.converter.brush import decode_rle; "
            "sys.stdout.buffer.write(np.asarray(decode_rle(json.load(sys.stdin)), dtype=np.uint8).tobytes())")
    out = subprocess.run([str(ADAPTER_PYTHON), "-c", code], input=json.dumps(rle).encode(), capture_output=True,
                         check=True, timeout=120).stdout
    rgba = np.frombuffer(out, dtype=np.uint8).reshape(height, width, 4)
    assert set(np.unique(rgba[:, :, 3])) <= {0, 255}
    return rgba[:, :, 3] == 255


def test_interactive_annotating_through_label_studio(label_studio, backend, sample):
    from clickmask.web.label_studio import EXAMPLE_LABEL_CONFIG

    ls, auth = label_studio["url"], {"Authorization": f"Token {TOKEN}"}
    api = requests.Session()
    api.headers.update(auth)

    project = api.post(f"{ls}/api/projects", json={"title": "clickmask e2e", "label_config": EXAMPLE_LABEL_CONFIG})
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    storage = api.post(f"{ls}/api/storages/localfiles", json={
        "project": pid, "title": "coco", "path": str(label_studio["root"] / "coco"), "use_blob_urls": True})
    assert storage.status_code == 201, storage.text
    imported = api.post(f"{ls}/api/projects/{pid}/import", json=[{"image": "/data/local-files/?d=coco/apple.jpg"}])
    assert imported.status_code == 201, imported.text
    with sample["image"].open("rb") as fh:
        uploaded = api.post(f"{ls}/api/projects/{pid}/import", files={"file": ("apple.jpg", fh, "image/jpeg")})
    assert uploaded.status_code == 201, uploaded.text
    tasks = api.get(f"{ls}/api/tasks", params={"project": pid}).json()["tasks"]
    urls = sorted(task["data"]["image"] for task in tasks)
    assert urls[0].startswith("/data/local-files/") and urls[1].startswith("/data/upload/"), urls

    ml = api.post(f"{ls}/api/ml", json={"project": pid, "url": backend["url"], "title": "clickmask",
                                        "is_interactive": True})
    assert ml.status_code == 201, ml.text
    assert ml.json()["readable_state"] == "Connected", ml.json()
    assert ml.json()["model_version"].startswith("clickmask-v"), ml.json()
    ml_id = ml.json()["id"]

    w, h, gt, ignore = sample["width"], sample["height"], sample["gt"], sample["ignore"]

    def keypoint(x: float, y: float, positive: bool = True) -> dict:
        return {"id": f"p{x:.0f}x{y:.0f}", "from_name": "point", "to_name": "image", "type": "keypointlabels",
                "original_width": w, "original_height": h, "image_rotation": 0, "is_positive": positive,
                "origin": "manual", "value": {"x": (x + 0.5) / w * 100, "y": (y + 0.5) / h * 100, "width": 0.6,
                                              "keypointlabels": ["Object"]}}

    def annotate(task_id: int, points: list[dict]) -> dict:
        response = api.post(f"{ls}/api/ml/{ml_id}/interactive-annotating",
                            json={"task": task_id, "context": {"result": points}}, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    def inferences() -> int:
        return requests.get(f"{backend['url']}/metrics", timeout=5).json()["inferences"]

    click = next_click(gt, np.zeros_like(gt), ignore)
    for task in tasks:
        before = inferences()
        answer = annotate(task["id"], [keypoint(click.x, click.y)])
        assert "errors" not in answer, answer
        (region,) = answer["data"]["result"]
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        assert region["from_name"] == "mask" and region["value"]["brushlabels"] == ["Object"]
        mask1 = _decode(region["value"]["rle"], h, w)
        first_iou = iou(gt, mask1, ignore)
        assert first_iou > IOU_BOUND, f"{task['data']['image']}: IoU {first_iou:.3f} after one positive click"
        assert inferences() - before == 1

        # a negative click where the mask spills over the object (or, if it does not, on its edge)
        ys, xs = np.nonzero(mask1 & ~gt)
        if len(xs):
            far = np.argmax(cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, 3)[ys, xs])
            nx, ny = float(xs[far]), float(ys[far])
        else:
            ys, xs = np.nonzero(mask1)
            nx, ny = float(xs.min() + 3), float(ys[np.argmin(xs)])
        answer = annotate(task["id"], [keypoint(click.x, click.y), keypoint(nx, ny, positive=False)])
        mask2 = _decode(answer["data"]["result"][0]["value"]["rle"], h, w)
        # around the negative click the mask must shrink (elsewhere it may grow a little: the
        # session's passes re-predict the whole object)
        near = cv2.circle(np.zeros((h, w), np.uint8), (int(nx), int(ny)), 20, 1, -1).astype(bool)
        assert (mask2 & near).sum() < (mask1 & near).sum(), "the negative click removed no area around it"
        assert not mask2[int(ny), int(nx)]
        assert inferences() - before == 2, "Label Studio re-sends every point: the second click must cost one inference"

    # bad input: Label Studio relays the backend's message, and the backend keeps serving
    outside = keypoint(click.x, click.y)
    outside["value"]["x"] = 130.0
    errors = annotate(tasks[0]["id"], [outside]).get("errors")
    assert errors and "outside the image" in errors[0], errors
    assert "errors" not in annotate(tasks[0]["id"], [keypoint(click.x, click.y)])


# ------------------------------------------------------------------------------ the labeling UI
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_ENV = "CLICKMASK_LABEL_STUDIO_SCREENSHOT"  # write the screenshot there (docs/images/label-studio.png)


def _browser_or_skip():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (the dev extra has it)")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (make system-deps installs them)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_smart_keypoints_in_the_labeling_ui(label_studio, backend, sample, tmp_path):
    """A person's session in Label Studio's own labeling UI (headless Chromium): auto-annotation
    on, the smart keypoint tool, two positive clicks on the apple and an Alt-click negative on the
    table. The UI re-sends every point each time; each click costs the backend one inference,
    and the clickmask mask is drawn as a suggestion."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from clickmask.web.label_studio import EXAMPLE_LABEL_CONFIG

    ls = label_studio["url"]
    api = requests.Session()
    api.headers.update({"Authorization": f"Token {TOKEN}"})
    pid = api.post(f"{ls}/api/projects", json={"title": "clickmask ui", "label_config": EXAMPLE_LABEL_CONFIG}).json()["id"]
    with sample["image"].open("rb") as fh:
        assert api.post(f"{ls}/api/projects/{pid}/import", files={"file": ("apple.jpg", fh, "image/jpeg")}).ok
    (task,) = api.get(f"{ls}/api/tasks", params={"project": pid}).json()["tasks"]
    ml = api.post(f"{ls}/api/ml", json={"project": pid, "url": backend["url"], "title": "clickmask",
                                        "is_interactive": True})
    assert ml.status_code == 201 and ml.json()["readable_state"] == "Connected", ml.text

    def inferences() -> int:
        return requests.get(f"{backend['url']}/metrics", timeout=5).json()["inferences"]

    gt = sample["gt"]
    first = next_click(gt, np.zeros_like(gt), sample["ignore"])
    inside = cv2.distanceTransform(np.pad(gt, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = np.nonzero(inside > 0.5 * inside.max())
    far = np.argmax((xs - first.x) ** 2 + (ys - first.y) ** 2)
    second = (float(xs[far]), float(ys[far]))  # deep inside the apple, away from the first click
    bys, bxs = np.nonzero(~gt)
    pick = np.argmax(bxs + bys)  # background: the lower right corner of the image (the table)
    negative = (float(bxs[pick]) - 40, float(bys[pick]) - 40)

    driver = _browser_or_skip()
    wait = WebDriverWait(driver, 90)
    try:
        driver.get(f"{ls}/user/login/")
        wait.until(lambda d: d.find_elements(By.NAME, "email"))
        driver.find_element(By.NAME, "email").send_keys(USER)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        wait.until(lambda d: "/user/login" not in d.current_url)
        driver.get(f"{ls}/projects/{pid}/data?tab=1&task={task['id']}")

        def press(css: str, done=lambda element: True) -> None:
            """Click ``css`` (again, while the UI re-renders it) until ``done(element)``."""
            def attempt(d):
                try:
                    element = d.find_element(By.CSS_SELECTOR, css)
                    if not done(element):
                        d.execute_script("arguments[0].click()", element)
                    return done(d.find_element(By.CSS_SELECTOR, css))
                except (NoSuchElementException, StaleElementReferenceException):
                    return False
            wait.until(attempt)

        press("[data-testid=bottombar-auto-annotation-toggle]", lambda e: e.is_selected())  # Auto-Annotation on
        press(".lsf-tool_smart[aria-label=key-point-tool]", lambda e: "lsf-tool_active" in e.get_attribute("class"))
        canvas = wait.until(lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, "canvas")
                                       if c.size["width"] > 100 and c.size["height"] > 100])[0]
        scale = canvas.size["width"] / sample["width"]
        body = driver.find_element(By.TAG_NAME, "body")

        def click(x: float, y: float, negative_click: bool = False) -> None:
            # the labels of the config's three tags, in order: BrushLabels, KeyPointLabels, RectangleLabels
            labels = driver.find_elements(By.XPATH, "//span[@class='lsf-label__text' and text()='Object']")
            driver.execute_script("arguments[0].click()", labels[1])
            before = inferences()
            offset_x = (x + 0.5) * scale - canvas.size["width"] / 2
            offset_y = (y + 0.5) * scale - canvas.size["height"] / 2
            chain = ActionChains(driver).move_to_element_with_offset(body, 0, 0).move_to_element_with_offset(
                canvas, int(round(offset_x)), int(round(offset_y)))
            if negative_click:
                chain = chain.key_down(Keys.ALT).click().key_up(Keys.ALT)
            else:
                chain = chain.click()
            chain.perform()
            deadline = time.monotonic() + 90
            while inferences() == before and time.monotonic() < deadline:
                time.sleep(0.25)
            assert inferences() == before + 1, "each click in the UI must cost the backend exactly one inference"
            time.sleep(1.5)  # the answer is drawn

        click(first.x, first.y)
        click(*second)
        click(*negative, negative_click=True)
        wait.until(lambda d: "suggestion" in d.find_element(By.TAG_NAME, "body").text)

        sent = []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            request = message.get("params", {}).get("request", {})
            if message["method"] == "Network.requestWillBeSent" and "interactive-annotating" in request.get("url", ""):
                sent.append(json.loads(request["postData"])["context"]["result"])
        assert [len(result) for result in sent] == [1, 2, 3], "the UI re-sends every point with each click"
        assert [r["is_positive"] for r in sent[-1]] == [True, True, False]
        assert sent[2][0] == sent[0][0]

        shot = tmp_path / "label-studio.png"
        driver.save_screenshot(str(shot))
        target = os.environ.get(SCREENSHOT_ENV)
        if target:
            from PIL import Image

            image = Image.open(shot).convert("RGB").crop((240, 48, 1400, 857))  # the labeling area
            image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    finally:
        driver.quit()
