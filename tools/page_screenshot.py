"""The README's picture of the page, from a real run: starts `nmt serve` on the shipped models
(models/), opens `/` in headless Chromium (Debian's `chromium` and `chromium-driver`), types a
sentence, waits for its translation, hovers its longest word to show its alignment and saves a screenshot.

    .venv/bin/python tools/page_screenshot.py [--models models] [--out docs/images/page.png]

`chromium()` is also the browser of the page's test (tests/serving/test_page.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import start_service  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# headless, and nothing that reaches outside the machine (the page must not need it)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SENTENCE = "A man in a red shirt is riding a bicycle down the street."


def chromium(profile: Path, width: int = 1280, height: int = 800):
    """A Selenium driver of headless Chromium with a fresh profile in `profile`; raises
    FileNotFoundError naming the Debian packages when the browser or its driver is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{path} not found: apt-get install {package} (make system-tools)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for tests to read
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("docs/images/page.png"))
    parser.add_argument("--text", default=SENTENCE)
    args = parser.parse_args()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    work = Path(tempfile.mkdtemp(prefix="nmt-page-"))
    process, url = start_service(args.models, work / "serve.log", {"OMP_NUM_THREADS": "1"})
    driver = None
    try:
        driver = chromium(work / "profile", 1280, 720)
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        driver.find_element(By.ID, "text").send_keys(args.text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result .word"))
        words = driver.find_elements(By.CSS_SELECTOR, "#result .word")
        longest = max(words, key=lambda word: len(word.text))  # a content word, to show its alignment
        ActionChains(driver).move_to_element(longest).perform()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"{args.out}: {args.text!r} -> {driver.find_element(By.ID, 'result').text!r}")
    finally:
        if driver is not None:
            driver.quit()
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
