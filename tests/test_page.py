"""The portal page at / in a real browser (headless Chromium driven by Selenium) against a real
`rag serve`, and the routes it is built on: GET /v1/facets and GET /v1/key.

The browser tests need Debian's `chromium` and `chromium-driver` (CI installs them); without
them they are skipped, saying so, and the tests of the routes and headers still run."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag import Engine, Settings
from rag.serve.feedback import FeedbackStore
from rag.serve.keys import KeyStore
from serving import Server, build_knowledge, running_server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
EXTRACTIVE = {"RAG_ANSWER_GENERATOR": "extractive"}
# A document that tries to run in the page: in its title (and so its heading path) and its text.
VAULT = ('# Vault <img src=x onerror="window.__pwned=1">\n\n'
         "The vault door opens with the phrase <script>window.__pwned=1</script> open sesame, said twice "
         '<img src=x onerror="window.__pwned=1"> at the door.\n')
LEAVE_QUESTION = "How many days of annual leave does an employee get?"
LIMIT_QUESTION = "What is the travel reimbursement limit?"
# Follow-ups of LIMIT_QUESTION: the first means nothing alone, the second leans on the turns by its "And".
APPROVES = "Who approves it?"
LEAVE_TOO = "And how many days of annual leave does an employee get?"
DONE = ("answered", "not-found", "passages", "failed")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Server]:
    """`rag serve` (extractive answers) over collections hr, finance and notes (the vault), with
    keys reader (read), writer (write) and hr (read, collection=hr)."""
    root = tmp_path_factory.mktemp("portal")
    index = build_knowledge(root, embedder)
    notes = root / "notes"
    notes.mkdir()
    (notes / "vault.md").write_text(VAULT, encoding="utf-8")
    settings = Settings.load(overrides={"index.path": str(index), "ingest.collection": "notes"}, environ={})
    Engine(settings, embedder=embedder).index([notes])
    store = KeyStore(index / "keys.sqlite")
    tokens = {name: store.add(name, scope, filters)[1] for name, scope, filters in (
        ("reader", "read", []), ("writer", "write", []), ("hr", "read", ["collection=hr"]))}
    with running_server(index, root / "server.log", env=EXTRACTIVE) as server:
        server.tokens.update(tokens)
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through the system's chromedriver (nothing downloaded)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("the page's browser tests need Chromium and chromedriver: "
                    "apt-get install chromium chromium-driver (CI's .ci/run does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService
    except ImportError:
        pytest.skip("the page's browser tests need selenium: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# -- driving the page ------------------------------------------------------------------------


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 90) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def by_id(driver: Any, element_id: str) -> Any:
    return driver.find_element("id", element_id)


def shown(driver: Any, element_id: str) -> bool:
    return by_id(driver, element_id).is_displayed()


def open_page(driver: Any, server: Server, key: str | None = None) -> None:
    """The page, fresh (no key kept from an earlier test), with the key typed in when given."""
    from selenium.webdriver.common.keys import Keys

    driver.get(server.base + "/healthz")  # the same origin, without the page's script running
    driver.execute_script("sessionStorage.clear()")
    driver.get(server.base + "/")
    if key is not None:
        wait(driver, lambda d: shown(d, "key-input"))
        by_id(driver, "key-input").send_keys(server.tokens[key] + Keys.ENTER)
    wait(driver, lambda d: shown(d, "question"))


def watch_answer(driver: Any) -> None:
    """Records every state of the latest answer (each question of the conversation gets its own
    #answer, the earlier ones renamed), to tell a streamed answer from one shown whole."""
    driver.execute_script("""
        window.__seen = [];
        new MutationObserver(() => {
            const answer = document.getElementById('answer');
            if (answer) window.__seen.push([answer.getAttribute('aria-busy'), answer.textContent]);
        }).observe(document.getElementById('result'),
                   {subtree: true, childList: true, characterData: true, attributes: true});""")


def ask(driver: Any, question: str, button: str | None = None) -> str:
    """Types the question and presses Enter (or clicks `button`); the result's final state."""
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.getElementById('result').dataset.state = ''")
    box = by_id(driver, "question")
    box.clear()
    box.send_keys(question)
    if button:
        by_id(driver, button).click()
    else:
        box.send_keys(Keys.ENTER)
    return wait(driver, lambda d: (state := by_id(d, "result").get_attribute("data-state")) in DONE and state)


def record_asks(driver: Any) -> None:
    """Keeps the body of every POST /v1/ask the page sends from now on, for `asked`."""
    driver.execute_script("""
        window.__asked = [];
        const send = window.fetch;
        window.fetch = (url, options = {}) => {
            if (String(url).startsWith('/v1/ask')) window.__asked.push(JSON.parse(options.body));
            return send(url, options);
        };""")


def asked(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script("return window.__asked")


def turns(driver: Any) -> list[Any]:
    """The conversation's turns, in the order of the page."""
    return driver.find_elements("css selector", "#thread article.turn")


def part(turn: Any, name: str) -> Any:
    return turn.find_element("css selector", f"[data-part={name}]")


def page_errors(driver: Any) -> list[str]:
    """Console errors, but the expected 401 of asking the server who the (absent) key is and the
    browser's own look for /favicon.ico on /healthz."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
            and not re.search(r"/(v1/key|favicon\.ico) - Failed to load resource", entry["message"])]


def option_texts(driver: Any, element_id: str) -> list[str]:
    return [o.text for o in by_id(driver, element_id).find_elements("tag name", "option")]


def fits_width(driver: Any) -> bool:
    """Nothing is wider than the window (less its scroll bar): no scrolling sideways."""
    return driver.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")


# -- the page in a browser ---------------------------------------------------------------------


def test_a_reader_asks_with_the_keyboard_sees_the_answer_stream_in_and_checks_its_source(portal, browser,
                                                                                        tmp_path):
    from selenium.webdriver.common.keys import Keys

    browser.get_log("browser")
    open_page(browser, portal, "reader")
    # The key is kept for this browser tab only, and the question box has the focus.
    assert browser.execute_script("return sessionStorage.getItem('rag.key')") == portal.tokens["reader"]
    assert browser.execute_script("return localStorage.length") == 0
    assert "reader" in by_id(browser, "who").text
    question = browser.switch_to.active_element
    assert question.get_attribute("id") == "question"

    watch_answer(browser)
    browser.execute_script("document.getElementById('result').dataset.state = ''")
    question.send_keys(LEAVE_QUESTION + Keys.ENTER)
    wait(browser, lambda d: by_id(d, "result").get_attribute("data-state") in DONE)
    assert by_id(browser, "result").get_attribute("data-state") == "answered"
    seen = browser.execute_script("return window.__seen")
    assert any(busy == "true" and text.strip() for busy, text in seen), "the text is shown while it streams"
    answer = by_id(browser, "answer").text
    assert "25 days" in answer and "[1]" in answer
    assert "Answer ready" in by_id(browser, "status").text

    # Each [n] is a link to the passage: its title, file and heading, the answer's words marked.
    cite = browser.find_element("css selector", "#answer a.cite")
    assert cite.text == "[1]" and "Leave" in cite.get_attribute("aria-label")
    browser.save_screenshot(str(tmp_path / "answered.png"))
    assert (tmp_path / "answered.png").stat().st_size > 10_000
    cite.click()
    wait(browser, lambda d: shown(d, "viewer"))
    assert by_id(browser, "viewer-title").text == "Leave"
    assert by_id(browser, "viewer-source").text.endswith("hr/leave.md")
    assert by_id(browser, "viewer-location").text == "Leave"
    assert "25 days of annual leave" in by_id(browser, "viewer-text").text
    marked = [m.text for m in browser.find_elements("css selector", "#viewer-text mark")]
    assert any("25 days" in m for m in marked) and any("annual leave" in m for m in marked)
    browser.save_screenshot(str(tmp_path / "passage.png"))
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser, lambda d: not shown(d, "viewer"))
    sources = by_id(browser, "citations").text
    assert "[1] Leave" in sources and "hr/leave.md" in sources

    # Thumbs down with a comment: stored with the answer, for `rag feedback export`.
    by_id(browser, "rate-down").click()
    wait(browser, lambda d: "Thank you" in by_id(d, "feedback-status").text)
    assert by_id(browser, "rate-down").get_attribute("aria-pressed") == "true"
    by_id(browser, "comment").send_keys("that was last year's figure")
    by_id(browser, "comment-form").find_element("css selector", "button").click()
    wait(browser, lambda d: "comment was saved" in by_id(d, "feedback-status").text)
    ratings = FeedbackStore(portal.index / "feedback.sqlite").ratings()
    assert any(r.rating == "down" and r.comment == "that was last year's figure" and r.question == LEAVE_QUESTION
               for r in ratings)
    assert page_errors(browser) == []


def test_a_conversation_follows_up_each_answer_with_its_own_sources_until_a_new_one_starts(portal, browser):
    """Three questions in a row are one conversation: each later one is sent with the turns
    before it (searched as a standalone question the page shows), and is shown under them with
    its own answer, citations and rating. "New conversation" forgets them all."""
    from selenium.webdriver.support.ui import Select

    browser.get_log("browser")
    open_page(browser, portal, "reader")
    record_asks(browser)
    assert not shown(browser, "result") and not shown(browser, "new-conversation")

    # 1. A question that stands alone is searched as it was asked.
    assert ask(browser, LIMIT_QUESTION) == "answered"
    assert by_id(browser, "searched").text == "Searched for: " + LIMIT_QUESTION
    first = by_id(browser, "answer").text
    assert "640 EUR" in first and "[1]" in first
    assert by_id(browser, "question").get_attribute("value") == "", "the question moved into the thread"

    # 2. "Who approves it?" means nothing alone (asked alone below, it is not found): with the
    # turn before it, it is searched with the question it follows and answered from its document.
    assert ask(browser, APPROVES) == "answered"
    searched = by_id(browser, "searched-query").text
    assert searched.startswith(APPROVES + " ") and LIMIT_QUESTION in searched
    follow_up = by_id(browser, "answer").text
    assert "approved by finance" in follow_up and "finance/limits.md" in by_id(browser, "citations").text

    # 3. Another follow-up, searched with the question before it, answered from another document.
    assert ask(browser, LEAVE_TOO) == "answered"
    searched = by_id(browser, "searched-query").text
    assert searched.startswith(LEAVE_TOO + " ") and APPROVES in searched
    assert "25 days" in by_id(browser, "answer").text
    sources = by_id(browser, "citations").text
    assert "hr/leave.md" in sources and "limits.md" not in sources

    # Each request carried the turns before it: the questions with the answers as they came.
    bodies = asked(browser)
    assert [b["question"] for b in bodies] == [LIMIT_QUESTION, APPROVES, LEAVE_TOO]
    assert bodies[0]["history"] == [] and all(b["stream"] is True for b in bodies)
    assert bodies[1]["history"] == [{"role": "user", "content": LIMIT_QUESTION},
                                    {"role": "assistant", "content": first}]
    second = bodies[2]["history"]
    assert len(second) == 4 and second[:2] == bodies[1]["history"]
    assert second[2:] == [{"role": "user", "content": APPROVES}, {"role": "assistant", "content": follow_up}]

    # The thread, oldest at the top, each turn with its question, what was searched, its answer
    # and its own sources; every id in the page once (the latest turn's are the bare ones).
    thread = turns(browser)
    assert [part(t, "turn-question").text for t in thread] == [LIMIT_QUESTION, APPROVES, LEAVE_TOO]
    assert [t.location["y"] for t in thread] == sorted(t.location["y"] for t in thread)
    assert all(t.get_attribute("data-state") == "answered" and part(t, "searched").is_displayed() for t in thread)
    for turn, words, source in zip(thread, ("640 EUR", "approved by finance", "25 days"),
                                   ("finance/limits.md", "finance/limits.md", "hr/leave.md")):
        assert words in part(turn, "answer").text and part(turn, "answer").is_displayed()
        assert part(turn, "citations").text.startswith("[1] ") and source in part(turn, "citations").text
    assert browser.execute_script("const ids = [...document.querySelectorAll('[id]')].map(e => e.id);"
                                  "return ids.length === new Set(ids).size")

    # Each [1] opens its own turn's passage [1].
    for turn, source in ((thread[0], "finance/limits.md"), (thread[2], "hr/leave.md"),
                         (thread[1], "finance/limits.md")):
        turn.find_element("css selector", "a.cite").click()
        wait(browser, lambda d: shown(d, "viewer"))
        assert by_id(browser, "viewer-source").text.endswith(source)
        by_id(browser, "viewer-close").click()
        wait(browser, lambda d: not shown(d, "viewer"))

    # Each answer is rated by its own id: the first up, the last down.
    part(thread[0], "rate-up").click()
    wait(browser, lambda d: "Thank you" in part(thread[0], "feedback-status").text)
    by_id(browser, "rate-down").click()
    wait(browser, lambda d: "Thank you" in by_id(d, "feedback-status").text)
    pressed = [[part(t, f"rate-{r}").get_attribute("aria-pressed") for r in ("up", "down")] for t in thread]
    assert pressed == [["true", "false"], ["false", "false"], ["false", "true"]]
    ratings = FeedbackStore(portal.index / "feedback.sqlite").ratings()
    up = [r for r in ratings if r.rating == "up" and r.question == LIMIT_QUESTION]
    down = [r for r in ratings if r.rating == "down" and r.question.startswith(LEAVE_TOO)]
    assert len(up) == 1 and "640 EUR" in up[0].answer and len(down) == 1 and "25 days" in down[0].answer
    assert page_errors(browser) == []

    # A new conversation: the thread gone, the question box ready, and nothing sent along.
    by_id(browser, "new-conversation").click()
    assert turns(browser) == [] and not shown(browser, "result") and not shown(browser, "new-conversation")
    assert browser.switch_to.active_element.get_attribute("id") == "question"
    assert ask(browser, APPROVES) == "not-found"
    assert by_id(browser, "searched-query").text == APPROVES and len(turns(browser)) == 1
    assert asked(browser)[-1]["history"] == []

    # A question that fails (here a filter the server refuses) is shown, and is no turn of the
    # history; an answer of "I don't know" is one.
    collection = by_id(browser, "f-collection")
    browser.execute_script("arguments[0].add(new Option('broken', 'mtime>=soon'))", collection)
    Select(collection).select_by_value("mtime>=soon")
    assert ask(browser, LEAVE_QUESTION) == "failed"
    assert part(turns(browser)[-1], "answer-note").is_displayed() and by_id(browser, "answer-note").text
    assert by_id(browser, "question").get_attribute("value") == LEAVE_QUESTION, "given back to ask again"
    Select(collection).select_by_value("")
    assert ask(browser, LIMIT_QUESTION) == "answered"
    assert asked(browser)[-1]["history"] == [{"role": "user", "content": APPROVES},
                                             {"role": "assistant", "content": "I don't know."}]
    assert [t.get_attribute("data-state") for t in turns(browser)] == ["not-found", "failed", "answered"]
    assert all("/v1/ask" in e for e in page_errors(browser)), "only the refused question"


def test_a_read_key_sees_no_upload_area_and_the_server_refuses_it_anyway(portal, browser):
    open_page(browser, portal, "reader")
    wait(browser, lambda d: by_id(d, "filters").is_displayed())
    assert not shown(browser, "manage") and not shown(browser, "files") and not shown(browser, "documents")
    refused = httpx.post(f"{portal.base}/v1/documents", headers=portal.auth("reader"),
                         files=[("files", ("x.txt", b"some text here", "text/plain"))])
    assert refused.status_code == 403
    # A wrong key is refused and asked for again; forgetting the key asks for one too.
    by_id(browser, "forget").click()
    wait(browser, lambda d: shown(d, "key-input"))
    assert browser.execute_script("return sessionStorage.getItem('rag.key')") is None
    by_id(browser, "key-input").send_keys("rag_000000000000_" + "x" * 43 + "\n")
    wait(browser, lambda d: shown(d, "key-error"))
    assert "not accepted" in by_id(browser, "key-error").text and not shown(browser, "app")


def test_an_unanswerable_question_shows_not_found_with_the_passages_considered(portal, browser):
    open_page(browser, portal, "reader")
    assert ask(browser, "What is the capital city of Mongolia?") == "not-found"
    assert shown(browser, "not-found") and not shown(browser, "answer")
    assert by_id(browser, "not-found").find_element("tag name", "h3").text == "Not found in the knowledge base"
    assert by_id(browser, "status").text == "Not found in the knowledge base."
    assert browser.find_element("css selector", "#passages-box").get_attribute("open") is not None
    considered = browser.find_elements("css selector", "#passages li.passage")
    assert considered and all(p.find_element("tag name", "strong").text for p in considered)
    considered[0].find_element("tag name", "button").click()  # a considered passage opens too
    wait(browser, lambda d: shown(d, "viewer"))
    assert by_id(browser, "viewer-text").text
    by_id(browser, "viewer-close").click()
    wait(browser, lambda d: not shown(d, "viewer"))

    # The page's own words follow the question's language.
    assert ask(browser, "公司的股票代码是什么？") in ("answered", "not-found")
    assert browser.execute_script("return document.documentElement.lang") == "zh-CN"
    assert browser.find_element("css selector", "label[for=question]").text == "您的问题"
    assert by_id(browser, "ask-button").text == "提问"
    assert ask(browser, LEAVE_QUESTION) == "answered"
    assert browser.find_element("css selector", "label[for=question]").text == "Your question"


def test_filters_are_built_from_the_index_and_narrow_what_is_read(portal, browser):
    from selenium.webdriver.support.ui import Select

    open_page(browser, portal, "hr")
    # A key limited to hr is offered nothing to choose between collections.
    wait(browser, lambda d: by_id(d, "f-collection").find_elements("tag name", "option"))
    assert not shown(browser, "f-collection-box")

    open_page(browser, portal, "reader")
    wait(browser, lambda d: shown(d, "f-collection-box"))
    collections = Select(by_id(browser, "f-collection"))
    labels = [o.text for o in collections.options]
    assert labels[0] == "All" and {"finance (1)", "hr (2)", "notes (1)"} <= set(labels)
    folders = [o.text for o in Select(by_id(browser, "f-folder")).options]
    assert {"finance (1)", "hr (2)", "notes (1)"} <= set(folders)
    assert not shown(browser, "f-format-box"), "one format only: nothing to choose"

    collections.select_by_visible_text("finance (1)")
    by_id(browser, "advanced").find_element("tag name", "summary").click()
    by_id(browser, "k").send_keys("2")
    Select(by_id(browser, "mode")).select_by_value("bm25")
    assert ask(browser, "travel reimbursement limit", button="search-button") == "passages"
    found = browser.find_elements("css selector", "#passages li.passage")
    assert 1 <= len(found) <= 2 and all("finance/limits.md" in p.text for p in found)
    assert ask(browser, LEAVE_QUESTION) in ("answered", "not-found")
    read = [p.get_attribute("textContent") for p in browser.find_elements("css selector", "#passages li.passage")]
    assert read and all("finance/limits.md" in p for p in read), "only the chosen collection is read"

    # Dates (offered when the documents span several days) become mtime filters the server takes.
    browser.execute_script("document.getElementById('f-to').value = '2000-01-01'")
    assert ask(browser, "travel reimbursement limit", button="search-button") == "passages"
    assert by_id(browser, "status").text == "0 matching passages."
    browser.execute_script("document.getElementById('f-to').value = ''; document.getElementById('f-from').value = '2000-01-01'")
    assert ask(browser, "travel reimbursement limit", button="search-button") == "passages"
    assert browser.find_elements("css selector", "#passages li.passage")


def test_a_writer_uploads_by_drag_and_drop_follows_the_jobs_and_manages_documents(portal, browser, tmp_path):
    open_page(browser, portal, "writer")
    wait(browser, lambda d: shown(d, "manage") and shown(d, "dropzone"))
    wait(browser, lambda d: "notes" in by_id(d, "documents-body").text)
    by_id(browser, "upload-collection").send_keys("lab")

    # Two files dropped at once (one of them empty), then one chosen with the file picker.
    browser.execute_script("""
        const files = new DataTransfer();
        files.items.add(new File(['The cryostat in lab 4 is refilled with liquid helium every Tuesday.'],
                                 'cryostat.md', {type: 'text/markdown'}));
        files.items.add(new File([''], 'empty.txt', {type: 'text/plain'}));
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: files, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));""")
    boiler = tmp_path / "boiler.txt"
    boiler.write_text("The key of the boiler room hangs on hook number 7 in the caretaker's office.")
    by_id(browser, "files").send_keys(str(boiler))

    def finished(d) -> bool:  # this test's two uploads (earlier jobs of the key are listed too)
        rows = {j.find_element("class name", "job-files").text: j for j in d.find_elements("css selector", "#jobs li.job")}
        return {"cryostat.md, empty.txt", "boiler.txt"} <= set(rows) and all(
            rows[name].get_attribute("data-state") in ("done", "failed") for name in ("cryostat.md, empty.txt", "boiler.txt"))

    wait(browser, finished, timeout=180)
    jobs = {j.find_element("class name", "job-files").text: j for j in browser.find_elements("css selector", "#jobs li.job")}
    dropped, chosen = jobs["cryostat.md, empty.txt"], jobs["boiler.txt"]
    assert dropped.get_attribute("data-state") == "done" and chosen.get_attribute("data-state") == "done"
    assert "1 added" in dropped.text and "1 skipped" in dropped.text and "→ lab" in dropped.text
    problems = [p.text for p in dropped.find_elements("css selector", ".problems li")]
    assert len(problems) == 1 and problems[0].startswith("empty.txt (skipped)")
    assert dropped.find_element("tag name", "progress").get_attribute("value") == "1"

    # What was uploaded is answered from at once, and listed.
    assert ask(browser, "When is the cryostat in lab 4 refilled?") == "answered"
    assert "Tuesday" in by_id(browser, "answer").text and "cryostat.md" in by_id(browser, "citations").text
    wait(browser, lambda d: "lab (2)" in option_texts(d, "f-collection"), timeout=30)

    # Find it by title (any case), delete it, and it is gone.
    search = by_id(browser, "doc-search")
    search.send_keys("CRYO")
    wait(browser, lambda d: len(d.find_elements("css selector", "#documents-body tr")) == 1
         and "cryostat.md" in by_id(d, "documents-body").text)
    row = browser.find_element("css selector", "#documents-body tr")
    assert "lab" in row.text
    row.find_element("css selector", "button.danger").click()
    alert = wait(browser, lambda d: d.switch_to.alert)
    assert "cryostat" in alert.text
    alert.accept()
    wait(browser, lambda d: "No documents match." in by_id(d, "documents-body").text)
    hits = httpx.post(f"{portal.base}/v1/search", json={"question": "cryostat refilled", "filters": ["collection=lab"]},
                      headers=portal.auth("writer")).json()["hits"]
    assert [h["doc_id"] for h in hits] == ["boiler.txt"]
    # A new visit lists the key's jobs from GET /v1/jobs (an admin's would include sources' runs).
    open_page(browser, portal, "writer")
    wait(browser, lambda d: "boiler.txt" in by_id(d, "jobs").text and "cryostat.md, empty.txt" in by_id(d, "jobs").text)
    assert page_errors(browser) == []


def test_what_a_document_contains_is_shown_as_text_and_never_run(portal, browser):
    browser.get_log("browser")
    open_page(browser, portal, "reader")
    assert ask(browser, "Which phrase opens the vault door?") == "answered"
    answer = by_id(browser, "answer").text
    assert "<script>window.__pwned=1</script>" in answer, "the answer's markup is shown as text"
    cite = browser.find_element("css selector", "#answer a.cite")
    cite.click()
    wait(browser, lambda d: shown(d, "viewer"))
    assert by_id(browser, "viewer-title").text.startswith("Vault <img src=x onerror=")
    assert '<img src=x onerror="window.__pwned=1">' in by_id(browser, "viewer-text").text
    assert "<img" in by_id(browser, "viewer-location").text
    by_id(browser, "viewer-close").click()
    browser.find_element("css selector", "#passages-box summary").click()  # the passages read, shown
    wait(browser, lambda d: "<script>window.__pwned=1</script>" in by_id(d, "passages").text)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    scripts = browser.execute_script("return [...document.scripts].map(s => s.getAttribute('src'))")
    assert scripts == ["/page/app.js"]
    assert not [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]


def test_the_page_fits_a_phone(portal, browser):
    try:
        browser.set_window_size(390, 844)
        open_page(browser, portal, "writer")
        assert browser.execute_script("return window.innerWidth") <= 400
        wait(browser, lambda d: "notes" in by_id(d, "documents-body").text)
        assert fits_width(browser), "nothing wider than the screen before asking"
        assert ask(browser, LEAVE_QUESTION) == "answered"
        browser.find_element("css selector", "#passages-box summary").click()
        assert fits_width(browser), "nothing wider than the screen with the answer and its passages"
        browser.find_element("css selector", "#answer a.cite").click()
        wait(browser, lambda d: shown(d, "viewer"))
        assert browser.execute_script("return document.getElementById('viewer').getBoundingClientRect().right") <= 390
        assert fits_width(browser)
    finally:
        browser.set_window_size(1280, 1000)


def test_an_open_server_asks_for_no_key_and_streams_the_local_model(tmp_path, embedder, browser):
    """No keys made: loopback only and open, so the page asks for none; with the local model
    the answer arrives in several pieces and is shown as they come."""
    index = build_knowledge(tmp_path, embedder)
    with running_server(index, tmp_path / "server.log") as server:
        browser.get(server.base + "/")
        wait(browser, lambda d: shown(d, "question"))
        assert not shown(browser, "key-section") and not shown(browser, "forget")
        assert "Open access" in by_id(browser, "who").text
        assert shown(browser, "manage"), "open: every route is allowed"
        watch_answer(browser)
        assert ask(browser, LEAVE_QUESTION) in ("answered", "not-found")
        seen = browser.execute_script("return window.__seen")
        pieces = {text for busy, text in seen if busy == "true" and text.strip()}
        assert len(pieces) >= 2, f"the answer is shown piece by piece as it streams: {seen}"


# -- the routes the page is built on ------------------------------------------------------------


def test_the_page_is_served_with_a_strict_policy_and_nothing_from_elsewhere(portal):
    page = httpx.get(portal.base + "/")  # the page itself needs no key; everything it shows does
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy and page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    assert not re.search(r"https?://", html), "nothing fetched from elsewhere"
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline script"
    assert not re.search(r"\son\w+=|\sstyle=", html), "no inline handlers or styles"
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")):
        asset = httpx.get(f"{portal.base}/page/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", asset.text), name
    script = httpx.get(f"{portal.base}/page/app.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script.split("*/", 1)[1], f"the page's script uses {sink}"
    for missing in ("/page/index.html", "/page/nothing.js", "/page/..%2Fapp.py", "/page/%2e%2e/routes/page.py"):
        assert httpx.get(portal.base + missing).status_code == 404, missing


def test_the_key_route_tells_the_page_what_the_key_may_do(portal):
    reader = httpx.get(f"{portal.base}/v1/key", headers=portal.auth("reader"))
    assert reader.json() == {"open": False, "name": "reader", "scope": "read", "filters": [], "on_behalf": False,
                             "user": None, "groups": []}
    assert portal.tokens["reader"] not in reader.text and "rag_" not in reader.text
    hr = httpx.get(f"{portal.base}/v1/key", headers=portal.auth("hr")).json()
    assert hr["scope"] == "read" and hr["filters"] == ["collection=hr"]
    assert httpx.get(f"{portal.base}/v1/key", headers=portal.auth("writer")).json()["scope"] == "write"
    assert httpx.get(f"{portal.base}/v1/key").status_code == 401


def test_facets_count_what_the_key_may_see_with_the_filter_selecting_each(portal):
    facets = httpx.get(f"{portal.base}/v1/facets", headers=portal.auth("reader")).json()
    collections = {c["name"]: c["documents"] for c in facets["collections"]}
    assert {"finance": 1, "hr": 2, "notes": 1}.items() <= collections.items()
    assert {"finance": 1, "hr": 2, "notes": 1}.items() <= {f["name"]: f["documents"] for f in facets["folders"]}.items()
    assert {"name": "markdown", "documents": 4, "filter": "format=markdown"} in facets["formats"]
    assert facets["mtime"]["first"] <= facets["mtime"]["last"]
    for facet in facets["collections"] + facets["folders"] + facets["formats"]:
        listed = httpx.get(f"{portal.base}/v1/documents", params={"filter": facet["filter"]},
                           headers=portal.auth("reader")).json()
        assert listed["total"] == facet["documents"], facet

    hr = httpx.get(f"{portal.base}/v1/facets", headers=portal.auth("hr")).json()
    assert hr["documents"] == 2 and [c["name"] for c in hr["collections"]] == ["hr"]
    assert hr["folders"] == [], "within one folder there is no folder to choose"
    narrowed = httpx.get(f"{portal.base}/v1/facets", params={"filter": "collection=finance"},
                         headers=portal.auth("hr")).json()
    assert narrowed["documents"] == 0 and narrowed["collections"] == [] and narrowed["mtime"] is None
    assert httpx.get(f"{portal.base}/v1/facets", params={"filter": "mtime>=soon"},
                     headers=portal.auth("reader")).status_code == 422
    assert httpx.get(f"{portal.base}/v1/facets").status_code == 401


def test_facet_filters_select_exactly_their_value_whatever_its_characters(make_engine, tmp_path):
    kb = tmp_path / "kb"
    for folder, name in (("[draft] notes", "a.md"), ("v1..2", "b.md"), ("plain", "c.md"), ("plain/deeper", "d.md"),
                         (".", "top.md")):
        (kb / folder).mkdir(parents=True, exist_ok=True)
        (kb / folder / name).write_text(f"# {name}\n\nSome text about {name} for the index.", encoding="utf-8")
    engine = make_engine(**{"ingest.collection": "2026"})
    engine.index([kb])
    facets = engine.facets()
    assert [c.filter for c in facets.collections] == ["collection=2026"], "a collection compares as text"
    assert {f.name: f.documents for f in facets.folders} == {"[draft] notes": 1, "v1..2": 1, "plain": 2}
    for facet in facets.collections + facets.folders:
        assert engine.documents([facet.filter]).total == facet.documents, facet
    assert engine.facets(["collection=other"]).documents == 0
