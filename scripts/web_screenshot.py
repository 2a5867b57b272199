"""Retake docs/web.png: the web page on the bundled model and samples, in headless Chromium.

    .venv/bin/python scripts/web_screenshot.py [--out docs/web.png]

Ingests samples/fashion-mnist into a temporary store with configs/demo.toml, starts ``clipdex serve --watch`` on
a free loopback port, runs a text search with a negative prompt and a folder filter, opens the collection's
status, and saves the window. Needs chromium, chromedriver and selenium (as the page's tests do).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "web.png"))
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="clipdex-shot-") as tmp:
        env = {**os.environ, "CLIPDEX_STORE": str(Path(tmp) / "store"), "HF_HUB_OFFLINE": "1"}
        cli = [sys.executable, "-m", "retrieval.cli"]
        subprocess.run([*cli, "ingest", "samples/fashion-mnist", "--config", "configs/demo.toml"], cwd=REPO,
                       env=env, check=True, capture_output=True, timeout=600)
        port = free_port()
        server = subprocess.Popen([*cli, "serve", "--config", "configs/demo.toml", "--port", str(port),
                                   "--watch", "samples/fashion-mnist", "--log-level", "warning"], cwd=REPO, env=env)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,960", "--hide-scrollbars", f"--user-data-dir={tmp}/profile"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("clipdex serve did not start") from None
                    time.sleep(0.3)
            query = urlencode({"q": "a photo of a sneaker", "negative": "a photo of an ankle boot", "limit": 10})
            driver.get(f"http://127.0.0.1:{port}/?{query}")
            WebDriverWait(driver, 120).until(lambda d: d.execute_script(
                "const s = document.getElementById('sync-state'); return s && s.textContent.includes('idle') && "
                "[...document.querySelectorAll('#results img')].length > 0 && "
                "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
            driver.execute_script("document.getElementById('collection').open = true")
            time.sleep(0.5)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
            server.terminate()
            server.wait(30)
    print(args.out)


if __name__ == "__main__":
    main()
