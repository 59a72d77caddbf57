"""The documentation site as a reader sees it, in a real browser (headless Chromium over the
DevTools protocol, ``tests/browser.py``), served over HTTP from the site built once a session
(``tests/docs_site.py``): on the home page and a tutorial every image decodes, every internal
link resolves (the page it names answers 200, the section it names exists), and nothing is logged
as an error. Skipped, with the reason, where no Chromium is installed."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import docs_site  # noqa: E402
from browser import Browser, find_browser  # noqa: E402

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on PATH (apt-get install -y chromium; .ci/run does)")

# every image and internal link of the page; each link fetched (200?) and its #section looked up
SEEN = """(async () => {
  const images = Array.from(document.images).map(i => ({src: i.getAttribute('src'),
                                                        ok: i.complete && i.naturalWidth > 0}));
  const links = [];
  for (const a of document.querySelectorAll('a[href]')) {
    const url = new URL(a.getAttribute('href'), document.baseURI);
    if (url.origin !== location.origin) continue;
    const response = await fetch(url.href.split('#')[0]);
    let section = true;
    if (url.hash) {
      const html = await response.clone().text();
      const doc = new DOMParser().parseFromString(html, 'text/html');
      section = !!doc.getElementById(decodeURIComponent(url.hash.slice(1)));
    }
    links.push({href: a.getAttribute('href'), status: response.status, section});
  }
  return JSON.stringify({images, links, title: document.title,
                         text: document.querySelector('article').innerText.length});
})()"""


@pytest.fixture(scope="module")
def served():
    site = docs_site.built()
    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


def look(url: str) -> tuple[list[str], dict]:
    """Load ``url``, wait for its load event, evaluate SEEN; the console errors and its value."""
    browser = Browser(BROWSER)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired")
        value = browser.send("Runtime.evaluate", {"expression": SEEN, "returnByValue": True,
                                                  "awaitPromise": True},
                             session=session)["result"].get("value")
        errors = []
        for e in browser.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                errors.append(" ".join(str(a.get("value", a.get("description")))
                                       for a in p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                errors.append(str(p.get("exceptionDetails", {}).get("text")))
            elif e.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append(f"{p['entry'].get('text')} ({p['entry'].get('url', '')})")
        return errors, json.loads(value)
    finally:
        browser.close()


@pytest.mark.parametrize("page,images", [("", 1), ("tutorials/first-run/", 0)])
def test_a_docs_page_renders_with_its_images_and_links(served, page, images):
    errors, seen = look(f"{served}/{page}")
    assert errors == []
    assert seen["title"].endswith("collapselab") and seen["text"] > 1000
    assert len(seen["images"]) >= images and all(i["ok"] for i in seen["images"]), seen["images"]
    if page == "":
        assert any(i["src"].endswith("report.png") for i in seen["images"])
    assert len(seen["links"]) > 20  # the navigation and the page's own links
    broken = [link for link in seen["links"] if link["status"] != 200 or not link["section"]]
    assert broken == []
