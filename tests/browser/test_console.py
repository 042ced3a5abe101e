"""The console page (handler/entry/console/) in Chromium against `make serve` with the real model: it loads with no
console errors, a summary streams in (its text grows before the answer event), a batch uploaded through the page's
file input completes and its progress bar shows it full, the speed chart draws; caller text and model output stay
text (a hostile pass). Each view's screenshot is saved (tests/browser/conftest.py: ``CONSOLE_SCREENSHOTS``).

The tests run in order on one page, as a person would use it: the key first, then Try, Batches, Speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
from playwright.sync_api import FilePayload, Page, expect

from scripts.local import serve
from scripts.repository import ROOT
from tests.browser.conftest import Console

API_KEY = "the-browser-tests-key"
#: Markup that would run script if it were ever rendered as HTML; rendered as text it is only characters.
HOSTILE = '<img src=x onerror="window.__pwned=1">'
#: Few tokens: the test is about the page, not the texts' length; enough that the text comes in several pieces.
MAX_TOKENS = 48
#: Bounds on the waits for an answer and for a batch; a page that does not get there fails the test.
ANSWER_WAIT_MS = 180_000
BATCH_WAIT_MS = 300_000
#: Chromium reports a refused fetch as a console error; the hostile pass provokes one (422) on purpose.
REFUSED_ON_PURPOSE = "status of 422"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: Installed before a request is sent: every change of the answer element, with its text's length and state.
RECORD_ANSWER = """() => {
  const answer = document.getElementById("answer");
  window.__answerSeen = [];
  window.__answerObserver?.disconnect();
  window.__answerObserver = new MutationObserver(() =>
    window.__answerSeen.push({length: answer.textContent.length, state: answer.dataset.state}));
  window.__answerObserver.observe(answer, {childList: true, characterData: true, subtree: true, attributes: true});
}"""


def nothing_ran(page: Page) -> None:
    """No hostile markup ran or became an element."""
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img").count() == 0


def send(page: Page, task: str, text: str) -> None:
    page.select_option("#task", task)
    page.fill("#max-tokens", str(MAX_TOKENS))
    page.fill("#input", text)
    page.click("#send")


def summary_text() -> str:
    text: str = json.loads((ROOT / "events" / "summarize.json").read_text(encoding="utf-8"))["text"]
    return text


def test_console_loads_without_errors_and_asks_for_the_key(console: Console, screenshots: Path) -> None:
    page = console.page
    # WHEN the page is opened
    response = page.goto(console.base_url + "/")
    # THEN it is served with its policy and its script ran without an error
    assert response is not None
    assert response.status == 200
    assert response.headers["content-security-policy"] == CSP
    expect(page.locator("#key-state")).to_have_text("enter your API key to call the API")
    expect(page.locator("#api-key")).to_be_focused()
    assert page.evaluate("() => sessionStorage.length") == 0
    # AND once the key is entered it is kept in the tab's sessionStorage only, and the served model is named
    page.fill("#api-key", API_KEY)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-state")).to_have_text("key set for this tab")
    expect(page.locator("#model-name")).not_to_be_empty()
    assert page.evaluate("() => sessionStorage.getItem('llm-service.api-key')") == API_KEY
    assert page.evaluate("() => localStorage.length") == 0
    assert API_KEY not in page.evaluate("() => document.cookie")
    assert console.problems() == []


def test_console_streams_a_summary_then_shows_its_metrics(console: Console, screenshots: Path) -> None:
    page = console.page
    page.evaluate(RECORD_ANSWER)
    # WHEN a summary is asked for
    send(page, "summarize", summary_text())
    # THEN its text grows in several pieces before the answer event ends it
    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=ANSWER_WAIT_MS)
    seen: list[dict[str, Any]] = page.evaluate("() => window.__answerSeen")
    streamed = {change["length"] for change in seen if change["state"] == "streaming" and change["length"] > 0}
    assert len(streamed) >= 2, seen
    final = page.locator("#answer").text_content() or ""
    assert final.strip()
    assert max(streamed) <= len(final)
    # AND its metrics: generated, both speeds, the seconds and the cost estimate
    metrics = page.locator("#metrics").inner_text()
    assert "generated" in metrics
    assert metrics.count("tok/s") == 2
    assert "$" in metrics
    assert console.problems() == []
    page.screenshot(path=screenshots / "console-try.png", full_page=True)


def test_console_renders_hostile_text_as_text(console: Console) -> None:
    page = console.page
    # WHEN the hostile markup is the text to summarize
    send(page, "summarize", f"{HOSTILE} The meeting moved to Friday. {HOSTILE}")
    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=ANSWER_WAIT_MS)
    # THEN whatever the model wrote is shown as text, and nothing ran
    nothing_ran(page)
    # WHEN it is a target language, which the API refuses quoting the value given (422)
    page.select_option("#task", "translate")
    page.fill("#language", HOSTILE)
    send(page, "translate", "Good morning.")
    expect(page.locator("#answer")).to_have_attribute("data-state", "error", timeout=ANSWER_WAIT_MS)
    # THEN the refusal quotes it as characters
    expect(page.locator("#try-state")).to_contain_text(HOSTILE)
    nothing_ran(page)
    page.fill("#language", "Japanese")
    assert console.problems(REFUSED_ON_PURPOSE) == []


def test_console_uploads_a_batch_and_shows_it_completed(
    console: Console, local: serve.LocalApi, screenshots: Path
) -> None:
    page = console.page
    with httpx.Client(timeout=60) as http:
        [model] = http.get(f"{local.base_url}/v1/models", headers={"x-api-key": API_KEY}).json()["data"]
    lines = [
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model["id"], "messages": [{"role": "user", "content": content}], "max_tokens": 24},
        }
        for custom_id, content in [("greeting", "Say hello to a new colleague."), (HOSTILE, HOSTILE)]
    ]
    # WHEN a JSONL file is uploaded through the page's file input
    page.click("nav a[data-view=batches]")
    jsonl = "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")
    upload: FilePayload = {"name": "two.jsonl", "mimeType": "application/jsonl", "buffer": jsonl}
    page.set_input_files("#batch-file", files=[upload])
    page.click("#start-batch")
    expect(page.locator("#batch-state")).to_contain_text("batch_", timeout=60_000)
    batch_id = (page.locator("#batch-state").text_content() or "").split()[-1]
    row = page.locator(f"tr[data-batch-id='{batch_id}']")
    # THEN the page's polling shows it completed, its progress bar full
    expect(row).to_have_attribute("data-status", "completed", timeout=BATCH_WAIT_MS)
    bar = row.locator("progress")
    assert bar.evaluate("(bar) => [bar.value, bar.max]") == [2, 2]
    expect(row.locator("td.progress")).to_contain_text("2 of 2")
    # AND its output file is shown as text, with a download link to it, the hostile custom_id only characters
    row.get_by_role("button", name="Output").click()
    expect(page.locator("#file-view")).to_be_visible()
    preview = page.locator("#file-text").text_content() or ""
    assert len(preview.splitlines()) == 2
    assert {json.loads(line)["custom_id"] for line in preview.splitlines()} == {"greeting", HOSTILE}
    assert (page.locator("#file-download").get_attribute("href") or "").startswith("blob:")
    with page.expect_download() as download:
        page.click("#file-download")
    assert Path(download.value.path()).read_text(encoding="utf-8").splitlines() == preview.splitlines()
    nothing_ran(page)
    assert console.problems(REFUSED_ON_PURPOSE) == []
    page.screenshot(path=screenshots / "console-batches.png", full_page=True)


def test_console_charts_the_speed_of_its_answers(console: Console, screenshots: Path) -> None:
    page = console.page
    # WHEN the speed view is opened after the answers above (the summary and the hostile one were generated)
    page.click("nav a[data-view=speed]")
    expect(page.locator("#view-speed")).to_be_visible()
    # THEN each chart has a line with one point per answer, and the table a row per answer
    answers = page.locator("#speed-rows tr").count()
    assert answers >= 2
    for chart, series in [("#chart-speed", "prompt"), ("#chart-speed", "decode"), ("#chart-seconds", "seconds")]:
        points = page.locator(f"{chart} polyline.{series}").get_attribute("points") or ""
        assert len(points.split()) == answers, (chart, series, points)
        assert page.locator(f"{chart} circle.{series}").count() == answers
        box = page.locator(chart).bounding_box()
        assert box is not None
        assert box["width"] > 0
        assert box["height"] > 0
    nothing_ran(page)
    assert console.problems(REFUSED_ON_PURPOSE) == []
    page.screenshot(path=screenshots / "console-speed.png", full_page=True)
