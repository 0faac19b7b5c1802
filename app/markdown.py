"""Safe Markdown for replies: markdown-it-py ("js-default" escapes raw HTML) plus an nh3 allowlist, so
model output can never carry scripts, handlers, images (an exfiltration channel) or `hx-*` attributes
(which htmx would treat as live controls). Code blocks are highlighted server-side by Pygments, whose
token classes are the only classes the allowlist keeps.

A reply still streaming is rendered with the same renderer and cleaner, after its unfinished tail is
closed (an open ``` fence, `**`, `` ` ``, a half-typed link or list marker), so no Markdown syntax is
ever on screen, not even for the 40 ms until the next words arrive."""
from __future__ import annotations

import functools
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
MAX_CACHED_BLOCK_CHARS = 4_000  # a bigger block is highlighted each time rather than kept (_cached_fenced_block)


def _highlight(code: str, lang: str, _attrs) -> str:
    """The <pre> markdown-it puts in place of a fenced block: highlighted when the language is known."""
    name = (lang or "").strip().split()[0].lower() if lang else ""
    return (_cached_fenced_block if len(code) <= MAX_CACHED_BLOCK_CHARS else _fenced_block)(code, name)


def _fenced_block(code: str, name: str) -> str:
    body = None
    if name and len(code) <= MAX_HIGHLIGHT_CHARS:
        try:
            body = pygments_highlight(code, get_lexer_by_name(name), _formatter)
        except ClassNotFound:
            body = None
    if body is None:
        body = str(escape(code))
    return f'<pre class="hl"><code>{body}</code></pre>\n'


# The same code blocks are rendered again and again: by every tab that streams a reply, in a reply's
# last update and each time its chat is opened, and on every update of a reply that is rendered whole
# (see StreamingReply); highlighting was a third of such a render. Room for the blocks of a few hundred
# replies at once (an LRU smaller than what the streams cycle through would miss every time).
_cached_fenced_block = functools.lru_cache(maxsize=512)(_fenced_block)


# markdown-it's own `normalize` rule scans the text with a regex at every position; `_normalized` does
# the same with str.replace, several times faster on a long reply that is rendered on every update.
_md = MarkdownIt("js-default", {"highlight": _highlight}).enable(["table", "strikethrough"]).disable("normalize")

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
    return Markup(_cleaner.clean(_md.render(_normalized(text or ""))))


def _normalized(text: str) -> str:
    """What markdown-it's `normalize` rule makes of the text: CommonMark's line endings, and NUL replaced."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def render_streaming_markdown(text: str) -> Markup:
    """A reply that is still arriving: its unfinished tail closed, then rendered like a finished one."""
    return render_markdown(close_unfinished(text or ""))


# One line that starts with a letter and holds no character Markdown or HTML gives a meaning to inside
# a line (emphasis, code, links, escapes, entities, tags, line breaks) renders as a paragraph of that
# text as it is (tests/test_markdown.py compares the two). It is what a stream renders most, the last
# paragraph as it grows, and a StreamingReply checks only its new characters.
_NOT_PLAIN = re.compile(r"[^\w ,.;:?!'\"()/%$@^{}=+#|-]|_")


def _plain_from(text: str, start: int, checked: int) -> bool:
    """Whether text[start:] is such a line, given that text[start:checked] is."""
    if checked == start and not text[start:start + 1].isalpha():
        return False
    return _NOT_PLAIN.search(text, checked) is None


class StreamingReply:
    """The renders of one reply while it streams, each the same as `render_streaming_markdown` of the
    reply so far. The blocks before its last paragraph break that nothing after them can change are
    rendered once and kept (`_settled_end` says which); each update renders only the text after them,
    so an update costs what the last blocks cost, not what the whole reply does.

    After each render, `grown` says whether it only added characters to the last render's last
    paragraph, a plain line both times: (that paragraph's text as the last render showed it, the
    characters added), else None. A stream then sends only those characters (app/web/stream.py)."""

    def __init__(self) -> None:
        self._kept, self._kept_html = "", ""
        self._plain = ""  # the last text whose rest after `_kept` was a plain line (`_plain_from`)
        self._shown_plain = ""  # the last render's text, if its rest after `_kept` was a plain line
        self.grown: tuple[str, str] | None = None

    def render(self, text: str) -> Markup:
        previous, self._shown_plain, self.grown = self._shown_plain, "", None
        if "]:" in text or "\r" in text:
            # It may define a link reference (`[x]: url`), which changes links before it, or have line
            # breaks that `_settled_end` does not see: rendered whole.
            self._kept, self._kept_html, self._plain = "", "", ""
            return render_streaming_markdown(text)
        if not text.startswith(self._kept):  # not the same reply grown: start again
            self._kept, self._kept_html, self._plain = "", "", ""
        end = _settled_end(text, len(self._kept))
        if end > len(self._kept):
            self._kept_html += render_markdown(text[len(self._kept):end])
            self._kept, self._plain, previous = text[:end], "", ""
        start = len(self._kept)
        checked = len(self._plain) if self._plain and text.startswith(self._plain) else start
        if _plain_from(text, start, checked):
            self._plain = self._shown_plain = text
            line = text[start:].rstrip(' ')
            if previous and text.startswith(previous):
                before = previous[start:].rstrip(' ')
                self.grown = (before, line[len(before):])
            return Markup(f"{self._kept_html}<p>{line}</p>\n")  # formatted: Markup + str would escape the str
        return Markup(self._kept_html + render_streaming_markdown(text[start:]))


_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}(?![^\n]*`)|~{3,})", re.MULTILINE)  # a backtick fence's info has none
_MAY_CONTINUE = re.compile(r"[ \t]|(?:[-*+]|\d+[.)])(?:[ \t\n]|\Z)")  # indented, or a list item


def _settled_end(text: str, start: int) -> int:
    """Where the blocks of `text` that are final end (from `start`, which is such an end): just after a
    blank line, outside any fenced block, before a line that starts a block of its own (not indented,
    not a list item, which could belong to the list before it) and either starts with a letter (no
    marker can follow) or is not the last line, the only one `close_unfinished` changes (a lone "1"
    may become a list item). Keeps that function's count of ``` even in what it leaves out."""
    end, fence, position = start, None, start
    while (blank := text.find("\n\n", position)) != -1:
        after = blank + 2
        for match in _FENCE_LINE.finditer(text, position, blank + 1):
            marker, rest_of_line = match[1], text[match.end():text.index("\n", match.end())]
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence) and not rest_of_line.strip():
                fence = None  # a closing fence: the same character, at least as many, nothing after
        position = after
        while text.startswith("\n", after):
            after += 1
        if fence is None and not _MAY_CONTINUE.match(text, after) \
                and (text[after:after + 1].isalpha() or -1 < text.find("\n", after) < len(text) - 1) \
                and text.count("```", end, after) % 2 == 0:
            end = after
    return end


_LONE_MARKER = re.compile(r"(?:^|\n)[ \t]*(?:[-*+>#|=_~`]+|\d+[.)])?[ \t]*$")
_MARKER_LINE_CHARS = " \t\n-*+>#|=_~`.)0123456789"  # every character _LONE_MARKER can match
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
        head, line = (text[:last], text[last:]) if last > 0 else ("", text)
        if line.strip(_MARKER_LINE_CHARS):
            # A word on the line, so no marker stands alone there. What the pattern would still take is
            # a final newline; this answer does not scan the line, which is the whole of a reply that
            # is one long paragraph.
            text = head + (line[:-1] if line.endswith("\n") else line)
        else:
            text = head + _LONE_MARKER.sub("", line)
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
