"""Safe Markdown for replies: markdown-it-py ("js-default" escapes raw HTML) plus an nh3 allowlist, so
model output can never carry scripts, handlers, images (an exfiltration channel) or `hx-*` attributes
(which htmx would treat as live controls). Code blocks are highlighted server-side by Pygments, whose
token classes are the only classes the allowlist keeps.

A reply still streaming is rendered with the same renderer and cleaner, after its unfinished tail is
closed (an open ``` fence, `**`, `` ` ``, a half-typed link or list marker), so no Markdown syntax is
ever on screen, not even for the 40 ms until the next words arrive."""
from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

_formatter = HtmlFormatter(nowrap=True)
MAX_HIGHLIGHT_CHARS = 20_000  # past this a block is shown plain: highlighting is a nicety, not a cost


def _highlight(code: str, lang: str, _attrs) -> str:
    """The <pre> markdown-it puts in place of a fenced block: highlighted when the language is known."""
    name = (lang or "").strip().split()[0].lower() if lang else ""
    body = None
    if name and len(code) <= MAX_HIGHLIGHT_CHARS:
        try:
            body = pygments_highlight(code, get_lexer_by_name(name), _formatter)
        except ClassNotFound:
            body = None
    if body is None:
        body = str(escape(code))
    return f'<pre class="hl"><code>{body}</code></pre>\n'


_md = MarkdownIt("js-default", {"highlight": _highlight}).enable(["table", "strikethrough"])

_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}

_cleaner = nh3.Cleaner(
    tags={"p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li", "span",
          "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td"},
    attributes={"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"},
},
    allowed_classes={"span": _TOKEN_CLASSES, "pre": {"hl"}},
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)


def render_markdown(text: str) -> Markup:
    return Markup(_cleaner.clean(_md.render(text or "")))


def render_streaming_markdown(text: str) -> Markup:
    """A reply that is still arriving: its unfinished tail closed, then rendered like a finished one."""
    return render_markdown(close_unfinished(text or ""))


_LONE_MARKER = re.compile(r"(?:^|\n)[ \t]*(?:[-*+>#|=_~`]+|\d+[.)])?[ \t]*$")
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.MULTILINE)
_HALF_LINK = re.compile(r"\[([^\[\]\n]*)\]\([^)\n]*$")
_HALF_LINK_TEXT = re.compile(r"\[([^\[\]\n]*)$")


def close_unfinished(text: str) -> str:
    """Close what the next words would close, so the partial text renders as it will look."""
    if text.count("```") % 2:  # inside a fenced block: close it; the rest is code, shown as it is
        return text + ("\n```" if not text.endswith("\n") else "```")
    if not text.endswith("\n\n"):
        # A lone marker can only be on the last line (before a final newline): match there only, as
        # this runs on every update of a streaming reply.
        last = text.rfind("\n", 0, len(text) - 1)
        text = text[:last] + _LONE_MARKER.sub("", text[last:]) if last > 0 else _LONE_MARKER.sub("", text)
    start = text.rfind("\n\n") + 1
    head, tail = text[:start], text[start:]
    tail = _HALF_LINK.sub(r"\1", tail)
    tail = _HALF_LINK_TEXT.sub(r"\1", tail) if "](" not in tail[tail.rfind("["):] else tail
    if tail.count("`") % 2:
        tail += "`"
    if "*" not in tail and "_" not in tail and "~" not in tail:
        return head + tail  # no emphasis to close
    # Emphasis outside inline code, ignoring list bullets at the start of lines.
    plain = _LIST_MARKER.sub("", re.sub(r"`[^`]*`", "", tail))
    plain = re.sub(r"(^|\s)[*_]+(?=\s|$)", " ", plain)  # a lone "3 * 4" opens nothing
    closers = ""
    for marker in ("~~", "**", "__"):
        if plain.count(marker) % 2:
            closers = marker + closers
        plain = plain.replace(marker, "")
    for marker in ("*", "_"):
        if plain.count(marker) % 2 and not re.search(r"\w" + re.escape(marker) + r"\w", plain):
            closers = marker + closers
    tail = tail.rstrip() + closers if closers else tail
    return head + tail


def code_css() -> str:
    """The highlighting colours for light and dark (scripts/pygments-css writes static/css/code.css):
    Pygments' xcode and github-dark styles, colours only (the block's background is the stylesheet's),
    classes sharing a colour grouped, so the file stays small."""
    light, dark = _token_rules("xcode"), _token_rules("github-dark")
    for name in light.keys() | dark.keys():  # a token one style leaves alone takes the text colour
        light.setdefault(name, "color: inherit")
        dark.setdefault(name, "color: inherit")
    def grouped(rules: dict[str, str], scope: str) -> str:
        by_value: dict[str, list[str]] = {}
        for name, value in sorted(rules.items()):
            by_value.setdefault(value, []).append("." + name)
        return "\n".join(f"{scope}.markdown .hl :is({','.join(names)}){{{value}}}" for value, names in by_value.items())
    return ("/* Generated by scripts/pygments-css (app.markdown.code_css): Pygments' xcode and github-dark. */\n"
            + grouped(light, "") + "\n" + grouped(dark, ":root[data-theme=dark] ") + "\n"
            + "@media (prefers-color-scheme: dark) {\n" + grouped(dark, ":root:not([data-theme=light]) ") + "\n}\n")


def _token_rules(style: str) -> dict[str, str]:
    """Token class -> its CSS declarations (colour, weight, style), as the Pygments style gives them."""
    rules = {}
    for line in HtmlFormatter(style=style).get_style_defs(".x").splitlines():
        match = re.match(r"^\.x \.([\w-]+) \{ ([^}]*) \}", line)
        if not match:
            continue
        declarations = ";".join(d.strip() for d in match[2].split(";")
                                if d.strip().startswith(("color", "font-weight", "font-style")))
        if declarations and match[1] in _TOKEN_CLASSES:
            rules[match[1]] = declarations.replace("color: #000000", "color: inherit").replace("color: #000", "color: inherit")
    return rules
