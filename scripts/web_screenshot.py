"""Retake the docs' screenshots of the web page (docs/web-*.png): the bundled model and samples, in headless Chromium.

    .venv/bin/python scripts/web_screenshot.py [--out-dir docs]

Copies samples/fashion-mnist into a temporary folder with a ``backup`` folder of copies (one byte-identical,
one re-encoded, so that the Duplicates view has groups) and a ``videos`` folder with one short video,
ingests it with clipdex's own tiny model, starts
``clipdex serve --watch`` on a free loopback port and saves one window (1280x900) per view:

    web-library.png     the library by folder        web-viewer.png      the viewer, opened from a result
    web-search.png      a text search's results      web-select.png      three photos selected
    web-duplicates.png  the Duplicates view          web-phone.png       the library at 420 px wide
    web-concepts.png    a concept taught from three selected results, ranking them, one ✓ given
    web-video.png       the viewer on a video (written with PyAV: ten 2-second scenes), its strip of moments

Needs chromium, chromedriver and selenium (as the page's tests do).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "fashion-mnist"
SHOTS = ("library", "search", "viewer", "select", "duplicates", "concepts", "video", "phone")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_library(tmp: Path) -> tuple[Path, Path]:
    """The samples, a backup folder of copies, and a config with [duplicates] move_to (the page can move)."""
    photos = tmp / "photos"
    shutil.copytree(SAMPLES, photos)
    backup = photos / "backup"
    backup.mkdir()
    for kind in ("sneaker", "bag"):
        first = sorted((photos / kind).glob("*.png"))[0]
        shutil.copy2(first, backup / f"{kind}-copy.png")
        with Image.open(first) as im:
            im.convert("RGB").resize((56, 56)).save(backup / f"{kind}-large.jpg", quality=95)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks.video import write_scenes  # one scene per class, as benchmarks/video.py measures

    (photos / "videos").mkdir()
    write_scenes(photos / "videos" / "catwalk.mp4", 0, (320, 240), 2.0, 30)
    config = tmp / "clipdex.toml"
    config.write_text(f"""[model]
name = "local-dir:{REPO / 'models' / 'fmnist-tiny'}"
pretrained = ""
label = "clipdex's own tiny Fashion-MNIST model"
[store]
path = "{tmp / 'store'}"
collection = "fashion-mnist"
[ingest]
workers = 0
[duplicates]
move_to = "{tmp / 'aside'}"
""")
    return photos, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(REPO / "docs"))
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="clipdex-shot-") as tmp_name:
        tmp = Path(tmp_name)
        photos, config = make_library(tmp)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        cli = [sys.executable, "-m", "retrieval.cli"]
        subprocess.run([*cli, "ingest", str(photos), "--config", str(config)], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=600)
        port = free_port()
        server = subprocess.Popen([*cli, "serve", "--config", str(config), "--port", str(port), "--watch",
                                   str(photos), "--log-level", "warning"], cwd=REPO, env=env)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--hide-scrollbars", f"--user-data-dir={tmp}/profile"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        base = f"http://127.0.0.1:{port}"

        def until(script: str) -> None:
            try:
                WebDriverWait(driver, 120).until(lambda d: d.execute_script(script))
            except Exception:
                driver.save_screenshot("/tmp/shot-timeout.png")
                raise

        loaded = ("[...document.querySelectorAll('img')].filter(i => i.offsetParent && "
                  "i.getBoundingClientRect().top < innerHeight && i.getBoundingClientRect().left < innerWidth)"
                  ".every(i => i.complete && i.naturalWidth > 0)")

        def save(name: str) -> None:
            until(f"return {loaded}")
            time.sleep(0.4)
            if not driver.save_screenshot(str(out / f"web-{name}.png")):
                raise SystemExit(f"could not write {out / f'web-{name}.png'}")
            print(out / f"web-{name}.png")

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
            driver.set_window_size(1280, 900)
            driver.get(f"{base}/#library/folder")
            until("const s = document.getElementById('sync-state'); return s && s.textContent.includes('idle') && "
                  "document.querySelectorAll('#library .card').length > 10")
            save("library")
            for position in (1, 2, 4):
                driver.find_element(By.CSS_SELECTOR, f'#library .card[data-position="{position}"] .pick').click()
            save("select")
            driver.find_element(By.ID, "sel-clear").click()
            query = urlencode({"q": "a photo of a sneaker", "negative": "a photo of an ankle boot", "limit": 20})
            driver.get(f"{base}/?{query}#search")
            until("return document.querySelectorAll('#results .card').length === 20")
            save("search")
            driver.find_elements(By.CSS_SELECTOR, "#results .card .thumb")[0].click()
            until("return !document.getElementById('viewer').hidden")
            driver.find_element(By.ID, "viewer-dups").click()
            until("return document.getElementById('viewer-dup-status').textContent.includes('Duplicates: ') && "
                  "!document.getElementById('viewer-dup-status').textContent.includes('looking')")
            save("viewer")
            driver.get(f"{base}/#duplicates")
            until("return document.querySelectorAll('#dups-groups .dup-group').length > 0")
            save("duplicates")
            driver.get(f"{base}/?{query}#search")  # a concept from three selected sneakers, then one ✓
            until("return document.querySelectorAll('#results .card').length === 20")
            for card in driver.find_elements(By.CSS_SELECTOR, "#results .card .pick")[:3]:
                card.click()
            driver.find_element(By.ID, "sel-teach").click()
            driver.find_element(By.ID, "teach-name").send_keys("sneaker\n")
            until("return !document.getElementById('concept-bar').hidden && "
                  "document.querySelectorAll('#results .card [data-action=concept-yes]').length >= 10")
            driver.find_elements(By.CSS_SELECTOR, "#results .card [data-action=concept-yes]")[4].click()
            until("return document.body.dataset.conceptAnswers === '1'")
            driver.execute_script("document.getElementById('notice').hidden = true; window.scrollTo(0, 0)")
            save("concepts")
            driver.get(f"{base}/#library/folder")  # the video's card (one per video), then its strip of moments
            until("window.scrollTo(0, document.body.scrollHeight); "  # the library renders what is in view
                  "return document.querySelectorAll('#library .card .badge').length > 0")
            driver.execute_script("document.querySelector('#library .card .badge').closest('.thumb').click()")
            until("return !document.getElementById('viewer').hidden && "
                  "document.querySelectorAll('#viewer-moments .moment').length > 3")
            driver.execute_script("const v = document.querySelector('#viewer video'); if (v) v.pause()")
            save("video")
            driver.set_window_size(420, 900)
            driver.get(f"{base}/#library")
            until("return document.querySelectorAll('#library .card').length > 2")
            save("phone")
        finally:
            driver.quit()
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
