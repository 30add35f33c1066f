"""`make screenshot` (`python -m harness.screenshot`): README's picture of the console.
A private stack runs a varying load for a while (the chart needs history: one sample
every 5 s), a few tasks fail into dead letters, then Chromium photographs /ui/."""

import argparse
import json
import math
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from harness.browser import launch
from harness.processes import ROOT
from harness.redis_server import EPHEMERAL
from harness.stack import Stack

OUT = ROOT / "docs" / "console.png"


def post(stack: Stack, body: object) -> None:
    request = urllib.request.Request(
        f"{stack.base_url}/dispatch", json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30):
        pass


def load(stack: Stack, seconds: float) -> None:
    """A wave of quick tasks, bursts of slow ones (the backlog rises and falls), and
    now and then a task no consumer knows (a dead letter at once)."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        wave = 1 + math.sin(elapsed / 15)
        post(stack, {"num_messages": int(10 + 30 * wave)})
        if int(elapsed) % 25 == 0:
            post(stack, {"task": "sleep", "payloads": [{"seconds": 0.01}] * 300})
        if int(elapsed) % 20 == 0:
            post(stack, {"task": "resize_v2", "payloads": [{"path": "a.png"}]})
        time.sleep(0.25)


def photograph(stack: Stack, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(f"{stack.base_url}/ui/")
        page.wait_for_selector("#throughput-chart polyline")
        page.screenshot(path=out)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.screenshot", description=__doc__
    )
    parser.add_argument("--seconds", type=float, default=90.0, help="load before (90)")
    parser.add_argument("--out", type=Path, default=OUT, help="docs/console.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="screenshot-") as workdir:
        stack = Stack(Path(workdir), consumers=2, redis_options=EPHEMERAL,
                      consumer_env={"BATCH_SIZE": "1"})  # fmt: skip
        stack.start()
        try:
            sender = threading.Thread(target=load, args=(stack, args.seconds))
            sender.start()
            sender.join()
            photograph(stack, args.out)
        finally:
            stack.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
