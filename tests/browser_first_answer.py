"""Time from upload to first answer for a 3-contract session, through the UI, as a user would do it.

    python tests/browser_first_answer.py [--contracts N]

A real server (the real CPU model, cold: it loads on the first question) in a fresh data directory; Chromium
drops N CUAD contracts (the smallest of ../shared/corpus/contracts/cuad/pdf) onto the chat's drop zone, asks
one question with Enter, and the script prints when each step ended, in seconds from the drop. Not a test:
the figures go in notes and the README.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.conftest import CORPUS  # noqa: E402
from tests.servers import start_app, stop_app  # noqa: E402

QUESTION = "Which of these agreements can be terminated, and with how much notice?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contracts", type=int, default=3)
    parser.add_argument("--defaults", action="store_true",
                        help="the app's own window and answer length, not the tests' small ones (2,048 and 64)")
    args = parser.parse_args()
    pdfs = sorted((CORPUS / "contracts" / "cuad" / "pdf").glob("*.PDF"), key=lambda p: p.stat().st_size)
    pdfs = pdfs[: args.contracts]
    home = Path(tempfile.mkdtemp(prefix="quire-first-answer-"))
    extra = ["--context-window", "0", "--max-answer-tokens", "384"] if args.defaults else []  # the last flag wins
    proc, url = start_app(home, *extra)
    marks: dict[str, float] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/")
            page.get_by_label("Session").first.wait_for(timeout=60_000)
            page.get_by_label("New session").fill("Three contracts")
            page.get_by_role("button", name="Create").click()
            page.wait_for_function("() => (document.querySelector('#chat-documents')?.innerText ?? '').includes('No documents')")
            with page.expect_file_chooser() as chooser:
                page.locator("#chat-upload").get_by_text("Click to Upload").first.click()
            start = time.monotonic()
            chooser.value.set_files([str(p) for p in pdfs])
            names = [p.name for p in pdfs]
            page.wait_for_function(
                "ns => ns.every(n => (document.querySelector('#chat-upload-report')?.innerText ?? '').includes(n + ': added'))",
                arg=names, timeout=900_000)
            marks["ingested"] = time.monotonic() - start
            box = page.get_by_role("textbox", name="Question")
            box.fill(QUESTION)
            box.press("Enter")
            marks["asked"] = time.monotonic() - start
            page.wait_for_function("() => (document.querySelector('#chat')?.innerText ?? '').includes('▍')", timeout=900_000)
            marks["first_token"] = time.monotonic() - start
            page.wait_for_function("() => { const t = (document.querySelector('#chat')?.innerText ?? ''); "
                                   "return t.includes('How this was answered') && !t.includes('▍'); }", timeout=900_000)
            marks["answer"] = time.monotonic() - start
            page.locator("#chat details.quire-meta summary").last.click()
            meta = page.locator("#chat details.quire-meta").last.inner_text()
            shots = Path(__file__).parent / ".artifacts" / "browser" / "screens"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "three-contracts-1280x800.png"))
            browser.close()
    finally:
        stop_app(proc)
    print(json.dumps({"settings": "app defaults" if args.defaults else "tests' small model settings",
                      "contracts": names, "bytes": sum(p.stat().st_size for p in pdfs),
                      "seconds_from_drop": {k: round(v, 1) for k, v in marks.items()}, "meta": meta}, indent=2))


if __name__ == "__main__":
    main()
