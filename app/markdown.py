"""Safe Markdown for finished replies: markdown-it-py ("js-default" escapes raw HTML) plus an nh3
allowlist, so model output can never carry scripts, handlers, images (an exfiltration channel) or
`hx-*` attributes (which htmx would treat as live controls)."""
from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

_md = MarkdownIt("js-default").enable(["table", "strikethrough"])

_cleaner = nh3.Cleaner(
    tags={"p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
          "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td"},
    attributes={"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}},
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)


def render_markdown(text: str) -> Markup:
    return Markup(_cleaner.clean(_md.render(text or "")))
