"""CPU cost of rendering a reply as Markdown while it streams (issue 13): every text event renders the
reply so far. Rendered whole (app.markdown.render_streaming_markdown) the cost grows with the square
of the reply's length; a stream renders it with app.markdown.StreamingReply, which renders each
finished block once. Prints, per reply size, the number of renders and their total CPU time, both ways.

    .venv/bin/python -m bench.markdown_stream                       # a render per 40 ms relay (8 chars)
    .venv/bin/python -m bench.markdown_stream --chars-per-flush 40  # one render per 200 ms

The browser's stream gets a reply's words from memory as they come and renders it at most every 40 ms,
and a long reply less often: after each render it holds them ten times what the render took
(app.web.stream.TEXT_INTERVAL, RENDER_SHARE). A last paragraph that is one plain line is not parsed at
all (app.markdown._plain_from): the reply here has Markdown in every paragraph.
"""
from __future__ import annotations

import argparse
import time

from app.markdown import StreamingReply, render_streaming_markdown

PARAGRAPH = ("The **users** table has `1,200` rows; the oldest were created in 2019. "
             "Deleting 50 of them leaves [1,150](https://example.com/docs) rows.\n\n"
             "- one item\n- another *item*\n\n```python\nrows = count('users')\n```\n\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars-per-flush", type=int, default=8, help="characters streamed per 40 ms flush")
    args = parser.parse_args()
    print("| reply | renders | whole: total CPU | per render (last) | StreamingReply: total CPU | per render (last) |\n"
          "|---:|---:|---:|---:|---:|---:|")
    for size in (1_000, 2_700, 8_000, 20_000):
        text = (PARAGRAPH * (size // len(PARAGRAPH) + 1))[:size]
        cells = []
        for render in (render_streaming_markdown, StreamingReply().render):
            renders, started, last = 0, time.process_time(), 0.0
            for end in range(args.chars_per_flush, size + args.chars_per_flush, args.chars_per_flush):
                before = time.process_time()
                render(text[:end])
                last = time.process_time() - before
                renders += 1
            cells.append(f"{time.process_time() - started:.2f} s | {last * 1000:.2f} ms")
        print(f"| {size:,} chars | {renders:,} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
