"""The page ``scratchgpt serve`` shows at ``/``, in a real headless Chromium (Debian's
``chromium``, driven by Playwright), against a real server on a loopback port.

A chat: type a message, the answer streams into the page and is the model's own; markup in
what is shown stays text. A classifier: paste a text, see the verdict the classifier gives.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_runs import MESSAGES, Server, expected_answer

from scratchgpt.classify import Classifier

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install "
                "chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_chat_page_streams_the_models_answer(
        browser: Any, instruct_run: tuple[Path, str], chat_server: Server) -> None:
    run_dir = instruct_run[0]
    page = browser.new_page()
    page.goto(chat_server.url + "/")
    page.wait_for_selector("#chat:not([hidden])")
    assert page.text_content("#model-name") == run_dir.name
    page.click("#chat summary")  # open the settings
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "12")
    page.fill("#message", MESSAGES[0]["content"])
    page.click("#send")
    answer = page.wait_for_selector(".turn.assistant[data-done='true']")
    assert answer.text_content() == expected_answer(run_dir, 12, MESSAGES)

    # What is shown is text: a message full of markup creates no element.
    page.fill("#message", "<img src=x onerror=\"document.title='hacked'\"><b>bold</b>")
    page.press("#message", "Enter")
    page.wait_for_selector(".turn.assistant[data-done='true'] >> nth=1")
    assert page.locator(".turn img, .turn b").count() == 0
    assert "<b>bold</b>" in page.locator(".turn.user").nth(1).text_content()
    assert page.title() == "scratchgpt"

    page.click("#reset")
    assert page.locator(".turn").count() == 0


def test_the_classifier_page_shows_the_verdict(
        browser: Any, classifier_run: Path, classifier_server: Server) -> None:
    text = "WINNER! You have won a prize. Call 09061701461 now"
    expected = Classifier.from_run(classifier_run).predict([text])[0]
    page = browser.new_page()
    page.goto(classifier_server.url + "/")
    page.wait_for_selector("#classify:not([hidden])")
    page.fill("#text", text)
    page.click("#check")
    verdict = page.wait_for_selector("#verdict[data-label]")
    assert verdict.get_attribute("data-label") == expected.label
    assert f"{100 * expected.probabilities[expected.label]:.1f}%" in verdict.text_content()
