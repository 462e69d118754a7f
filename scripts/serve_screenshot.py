"""Redraw docs/serve_page.png: merc serve's page over the zoo's live model, in headless Chromium.

    python scripts/serve_screenshot.py [--out docs/serve_page.png]

The page predicts its demo conversation (the timeline) and streams four lines through its live
mode, then the whole page is captured. Needs the serve and test extras and Debian's chromium /
chromium-driver (as tests/test_browser.py).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

LIVE_LINES = ["Ana: You finished the whole marathon?",
              "Ben: Every single kilometre. I can't feel my legs.",
              "Ana: That's amazing, I'm so proud of you!",
              "Ben: Thanks. Now I just want to sleep for a week."]


def main() -> int:
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from merc import Predictor
    from merc.predict.serve import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/serve_page.png")
    args = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Predictor.from_pretrained("meld-emotion-live"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="merc-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,1420",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 60).until(
            EC.text_to_be_present_in_element((By.ID, "model"), "labels"))
        driver.find_element(By.ID, "predict").click()
        WebDriverWait(driver, 60).until(
            EC.text_to_be_present_in_element((By.ID, "status"), "utterances predicted"))
        line = driver.find_element(By.ID, "live-line")
        for i, text in enumerate(LIVE_LINES, 1):
            line.send_keys(text + Keys.ENTER)
            WebDriverWait(driver, 60).until(lambda d, i=i: len(
                d.find_elements(By.CSS_SELECTOR, "#live-timeline li")) >= i)
        time.sleep(0.5)                       # let the timeline frame finish drawing
        Path(args.out).write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()
        server.should_exit = True
        shutil.rmtree(profile, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
