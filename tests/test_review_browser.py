"""The review in a real browser: notebook 01 as a Voila page in headless Chromium, clicked, its kernel killed, reopened.

Skipped, with the reason, when Chromium, chromedriver, selenium or voila is missing (`.ci/run`
installs them: apt-get install chromium chromium-driver; pip install -e ".[test]"). Everything runs
on 127.0.0.1 with a timeout on every wait, and the server, its kernels and the browser are killed at
the end. Run it alone with `python -m pytest -m browser`; KIT_REVIEW_SHOTS=images/readme keeps its
screenshots (the README's come from there), else they go to the test's temporary folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from kitlib.__main__ import main
from kitlib.audit.decisions import log_path, read_decisions
from kitlib.data.demo import write_kind
from kitlib.files import read_csv_strings
from kitlib.notebook import SMOKE_TRAIN

ROOT = Path(__file__).resolve().parents[1]
PAGE_WAIT = 150  # s: a page shows its cards once its kernel has run the notebook (a 2-fold audit of a tiny net)
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")


def _missing() -> str | None:
    """Why the browser test cannot run here (None: it can)."""
    missing = [name for name in ("selenium", "voila", "psutil") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed: pip install -e '.[test]'"
    if CHROMIUM is None or DRIVER is None:
        return "no Chromium and chromedriver on PATH: apt-get install chromium chromium-driver (Debian; .ci/run does it)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _voila(notebook: Path, env: dict):
    """Voila serving `notebook` on 127.0.0.1; yields (url, process). The server and its kernels are killed at the end."""
    port = _free_port()
    with open(notebook.parent / "voila.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "voila", notebook.name, "--no-browser", f"--port={port}",
                                   "--Voila.ip=127.0.0.1"], cwd=notebook.parent, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (notebook.parent / "voila.log").read_text()[-3000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "voila did not listen within 60 s"
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/", server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # its own process group: the server and its kernels
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _kill_kernels(server: subprocess.Popen) -> int:
    """SIGKILL the server's kernels, as Colab's die (no atexit, no flush); return how many."""
    import psutil

    kernels = [p for p in psutil.Process(server.pid).children(recursive=True)
               if any("ipykernel" in part for part in p.cmdline())]
    for kernel in kernels:
        kernel.kill()
    psutil.wait_procs(kernels, timeout=10)
    return len(kernels)


def _chrome(chromium: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1400", "--remote-allow-origins=*"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver))  # the system's driver: no download
    browser.set_page_load_timeout(PAGE_WAIT)
    browser.set_script_timeout(30)
    return browser


def _wait(browser, condition, seconds: float, what: str):
    """condition(browser) once truthy; AssertionError after `seconds`, with what the page's progress line says."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, seconds, poll_frequency=0.25).until(condition)
    except TimeoutException:
        try:
            said = _progress(browser)
        except WebDriverException:
            said = "(no progress line)"
        raise AssertionError(f"waited {seconds} s for {what}; the review says: {said}") from None


def _card(browser, sample: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.XPATH, f"//div[contains(@class,'kit-card')][.//div[@data-sample='{sample}']]")


def _progress(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, ".kit-progress").text


def _screenshot(browser, path: Path, height: int = 1100) -> Path:
    """The review widget (its top `height` px) as a PNG of at most 256 colours, small enough for the README."""
    import io

    from PIL import Image
    from selenium.webdriver.common.by import By

    review = browser.find_element(By.XPATH, "//div[contains(@class,'kit-progress')]"
                                            "/ancestor::div[contains(@class,'widget-vbox')][last()]")
    browser.execute_script("arguments[0].scrollIntoView()", review)
    image = Image.open(io.BytesIO(review.screenshot_as_png)).convert("RGB")
    image = image.crop((0, 0, image.width, min(height, image.height)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _rows(path: Path) -> list[tuple[str, str, str]]:
    """decisions.csv's rows as read by the kit (standard CSV quoting undone)."""
    return list(read_csv_strings(path).itertuples(index=False, name=None))


def _notebook_01(folder: Path) -> Path:
    """notebooks/01_outliers.ipynb with its parameters cell replaced (as papermill would): the smoke-sized audit."""
    nb = nbformat.read(ROOT / "notebooks" / "01_outliers.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "config = ReviewParams().smoke()  # the test's: 2 folds of a tiny net, one epoch each"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "01_outliers.ipynb")
    return folder / "01_outliers.ipynb"


def test_review_in_chromium_keeps_every_click_through_a_killed_kernel(tmp_path, capsys):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    demo_root = write_kind(tmp_path / "demo", "slides")  # the default demo: slides with masks
    count = len(read_csv_strings(demo_root / "train_labels.csv"))
    shots = Path(os.environ.get("KIT_REVIEW_SHOTS") or tmp_path / "shots")
    notebook = _notebook_01(tmp_path / "work")
    env = {k: v for k, v in os.environ.items() if k != "KIT_SMOKE"}
    env.update(KIT_DATA=str(demo_root), KIT_THREADS="1", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    decisions = notebook.parent / "runs" / "audit" / "decisions.csv"
    cards = (By.CSS_SELECTOR, ".kit-card")
    clock, times = time.monotonic(), {}
    browser = _chrome(CHROMIUM, DRIVER)
    try:
        with _voila(notebook, env) as (url, server):
            browser.get(url)
            _wait(browser, lambda b: b.find_elements(*cards), PAGE_WAIT, "the review's cards")
            times["the review showed"] = time.monotonic() - clock
            ids = [e.get_attribute("data-sample") for e in browser.find_elements(By.CSS_SELECTOR, ".kit-caption")]
            total = int(re.match(r"0 of (\d+) decided", _progress(browser)).group(1))
            assert len(ids) == min(24, total) >= 5  # every suspect and the 12 worst losses, 24 a page
            first, second, third, fourth = ids[:4]

            _card(browser, first).find_element(By.XPATH, ".//button[normalize-space()='drop']").click()
            _card(browser, second).find_element(By.XPATH, ".//button[normalize-space()='keep']").click()
            card = _card(browser, third)
            card.find_element(By.XPATH, ".//button[normalize-space()='relabel']").click()
            _wait(browser, lambda b: card.find_element(By.TAG_NAME, "select").is_enabled(), 20, "the label menu")
            menu = Select(card.find_element(By.TAG_NAME, "select"))
            new_label = next(o.text for o in menu.options if o.text != menu.first_selected_option.text)
            menu.select_by_visible_text(new_label)
            # the cursor (blue frame) moved past the last decided card: a key decides the fourth
            _wait(browser, lambda b: "kit-cursor" in _card(b, fourth).get_attribute("class"), 20, "the cursor")
            ActionChains(browser).move_to_element(_card(browser, fourth)).pause(0.3).send_keys("d").perform()
            _wait(browser, lambda b: _progress(b).startswith(f"4 of {total} decided"), 20, "4 decided")
            _wait(browser, lambda b: "kit-drop" in _card(b, fourth).get_attribute("class"), 10, "the drop shown")

            assert _kill_kernels(server) == 1  # the moment the page says so, the clicks are in decisions.csv
            expected = [(first, "drop", ""), (second, "keep", ""), (third, "relabel", new_label), (fourth, "drop", "")]
            assert _rows(decisions) == expected and list(read_decisions(decisions).itertuples(index=False)) == expected
            shown = _progress(browser)

            browser.get(url)  # reopen: a new kernel runs the notebook again (the finished folds are kept)
            _wait(browser, lambda b: b.find_elements(*cards), PAGE_WAIT, "the reopened review's cards")
            times["reopened"] = time.monotonic() - clock
            assert _progress(browser).startswith(f"4 of {total} decided (2 drop, 1 keep, 1 relabel)"), shown
            assert _rows(decisions) == expected and not log_path(decisions).read_bytes()
            states = {s: _card(browser, s).get_attribute("class") for s in ids[:5]}
            assert [next((a for a in ("drop", "keep", "relabel") if f"kit-{a}" in states[s]), None)
                    for s in ids[:5]] == ["drop", "keep", "relabel", "drop", None]
            assert "kit-cursor" in states[ids[4]]  # it starts at the first undecided sample
            menu = Select(_card(browser, third).find_element(By.TAG_NAME, "select"))
            assert menu.first_selected_option.text == new_label
            _screenshot(browser, shots / "review.png")
            slide = next((s for s in ids if not {"blank", "alien"} & set(_card(browser, s).text.split())), first)
            _card(browser, slide).find_element(By.CSS_SELECTOR, ".kit-open").click()  # a slide: the file, large
            _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, ".kit-view").is_displayed(), 20, "the viewer")
            time.sleep(0.5)
            _screenshot(browser, shots / "review_open.png")
    finally:
        browser.quit()

    config = tmp_path / "tiny.json"  # the smoke recipe's narrow net, for 5 s at most
    config.write_text(json.dumps({**SMOKE_TRAIN, "epochs": None, "progress": False}))
    times["browser closed"] = time.monotonic() - clock
    capsys.readouterr()
    assert main(["train", str(demo_root), "--out", str(tmp_path / "clean"), "--decisions", str(decisions),
                 "--config", str(config), "--time-budget", "5"]) == 0
    assert f"decisions.csv: dropped 2, relabelled 1 of {count} samples" in capsys.readouterr().out
    times["trained"] = time.monotonic() - clock
    print(", ".join(f"{what} after {seconds:.0f} s" for what, seconds in times.items()))
