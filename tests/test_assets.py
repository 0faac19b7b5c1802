"""Static files and compression over HTTP: content-hashed names cached for good, brotli or gzip for
static files, pages and fragments, and event streams never compressed or buffered."""
from __future__ import annotations

import gzip
import re

import brotli
import pytest

from tests.fake_openai import Turn

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def static_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


def test_static_files_have_content_hashed_names_and_are_cached_for_good(app, browser):
    urls = static_urls(browser.get("/chats/new").data.decode())
    assert any(re.fullmatch(r"/static/css/app\.[0-9a-f]{12}\.css", url) for url in urls), urls
    app_css = next(url for url in urls if "/css/app." in url)
    response = browser.client.get(app_css, headers={"Accept-Encoding": "br, gzip"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["Content-Encoding"] == "br"
    with open(app.static_folder + "/css/app.css", "rb") as source:
        assert brotli.decompress(response.data) == source.read()


def test_an_old_or_unhashed_name_still_answers_but_is_revalidated(browser):
    for url in ("/static/js/app.js", "/static/js/app.000000000000.js"):
        response = browser.client.get(url, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-cache"
        assert b"use strict" in gzip.decompress(response.data)
        again = browser.client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304
    assert browser.client.get("/static/nothing.css").status_code == 404
    assert browser.client.get("/static/../app/config.py").status_code == 404


def test_pages_and_fragments_are_compressed(browser):
    page = browser.get("/chats/new", headers={"Accept-Encoding": "gzip"})
    assert page.headers["Content-Encoding"] == "gzip" and b"composer-input" in gzip.decompress(page.data)
    plain = browser.get("/chats/new")
    assert "Content-Encoding" not in plain.headers, "only for clients that ask"


def test_pages_are_compressed_with_brotli_for_clients_that_ask(browser):
    page = browser.get("/chats/new", headers={"Accept-Encoding": "br"})
    assert page.headers["Content-Encoding"] == "br" and b"composer-input" in brotli.decompress(page.data)


def test_an_event_stream_is_never_compressed(browser, harness, fake_model):
    fake_model.script(Turn(text="word " * 400))
    chat = browser.new_chat()
    sent = browser.post(f"/chats/{chat}/messages", {"message": "talk"})
    run_id = re.search(rb"/runs/(run_\w+)/events", sent.data).group(1).decode()
    harness.wait(run_id)
    stream = browser.client.get(f"/runs/{run_id}/events?after=0", headers={"Accept-Encoding": "br, gzip, zstd"})
    assert stream.mimetype == "text/event-stream"
    assert "Content-Encoding" not in stream.headers
    assert b"event: done" in stream.get_data()
