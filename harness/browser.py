"""A real browser for the console's tests and `make screenshot`: Debian's Chromium,
driven by Playwright (which cannot download browser builds of its own here)."""

import shutil

from playwright.sync_api import Browser, Playwright

CHROMIUM = "/usr/bin/chromium"  # Debian's package (make setup installs it)
# No sandbox (it needs user namespaces, which containers often lack) and nothing that
# talks to the internet on its own: updates, sync, background fetches, QUIC.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium that talks to nothing but the pages we open."""
    path = shutil.which("chromium") or CHROMIUM
    return playwright.chromium.launch(executable_path=path, args=ARGS)
