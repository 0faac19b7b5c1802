"""The benchmark's model: `tests.fake_openai.FakeOpenAI`, run in its own process (so its threads do not
share a GIL with the load generator), answering from directives in the user's message.

    python -m bench.fakemodel            prints {"base_url": ...} on stdout, then reads commands

Directives (the last user message of the request):

    bench pause [tool=send|delete]   a gated tool call, no text (model delay 0)
    bench stream n=<tokens> rate=<tokens/s> [ttft=<s>] [para=<k>]
                                     n word tokens; each carries the monotonic time (ns) at which the
                                     fake wrote it, so the client can compute relay lag; the first
                                     one also carries the time the request reached the model. One
                                     paragraph, or with para=k a blank line after every k-th token
    bench hold [s=<seconds>]         no answer until `release` (or s seconds): an open, quiet stream
    anything else                    "OK."

A request whose newest input item is a tool output (the run continues after a decision) gets
"Done." at once.

Commands on stdin, one JSON object a line, each answered by one JSON line on stdout:
    {"cmd": "stats"}    per-request [start_ns, end_ns, kind] since the last stats, and counters
    {"cmd": "release"}  end every current hold
    {"cmd": "drain"}    end every hold, and answer later ones at once (until "undrain")
    {"cmd": "quit"}
Both clocks are CLOCK_MONOTONIC (time.monotonic_ns), which is system-wide on Linux, so the client
process can compare them with its own readings.
"""
from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import deque

from tests.fake_openai import FakeOpenAI, Request, ToolCall, Turn

PLACEHOLDER = "@" * 19          # replaced by time.monotonic_ns() (19 digits) when the delta is written
TOKEN_RE = re.compile(r"T(\d{19})")
ARRIVAL_RE = re.compile(r"R(\d{19})")


def parse_directive(text: str | None) -> tuple[str, dict[str, str]]:
    words = (text or "").split()
    if len(words) < 2 or words[0] != "bench":
        return "other", {}
    options = dict(w.split("=", 1) for w in words[2:] if "=" in w)
    return words[1], options


def stream_text(n: int, arrival_ns: int, paragraph: int = 0) -> str:
    tokens = [f"R{arrival_ns:019d}T{PLACEHOLDER}"] + [f"T{PLACEHOLDER}"] * (n - 1)
    if paragraph > 0:  # the blank line rides on the token before it, so the count of tokens stays n
        tokens = [token + "\n\n" if i % paragraph == paragraph - 1 else token + " " for i, token in enumerate(tokens)]
        return "".join(tokens)
    return " ".join(tokens) + " "


class BenchFake(FakeOpenAI):
    """Stamps each streamed token with the moment it is written, sends each event at once (TCP_NODELAY,
    as real endpoints do) and accepts a deep backlog (1,000+ simultaneous model requests in the direct
    baseline); keeps no request log (a soak would grow it without bound)."""

    def __init__(self) -> None:
        super().__init__(tcp_nodelay=True, backlog=4096, keep_requests=False)
        self.records: deque = deque(maxlen=500_000)
        self.released = threading.Condition()
        self.release_count = 0
        self.draining = False  # after `drain`, holds return at once
        self.counts = {"requests": 0, "errors": 0}
        self._counting = threading.Lock()
        self.respond_with(self.answer)

    def release(self) -> None:
        with self.released:
            self.release_count += 1
            self.released.notify_all()

    def prepare_event(self, text: str) -> str:
        if PLACEHOLDER in text:
            text = text.replace(PLACEHOLDER, f"{time.monotonic_ns():019d}")
        return text

    def exchange_done(self, req: Request | None, started_ns: int, ended_ns: int) -> None:
        self.records.append((started_ns, ended_ns, (req.label if req else "") or "unknown"))
        with self._counting:
            self.counts["requests"] += 1

    def answer(self, req: Request) -> Turn:
        items = req.items()
        if items and items[-1].get("type") == "function_call_output" or items and items[-1].get("role") == "tool":
            req.label = "continue"
            return Turn(text="Done.")
        kind, opt = parse_directive(req.last_user_text())
        req.label = kind
        if kind == "pause":
            if opt.get("tool") == "delete":
                call = ToolCall("delete_records", {"table_name": opt.get("table", "events"), "count": 1})
            else:
                call = ToolCall("send_notification", {"recipient": "bench@example.com", "message": "benchmark"})
            return Turn(tool_calls=[call])
        if kind == "stream":
            arrival = time.monotonic_ns()
            n = max(1, int(opt.get("n", "20")))
            rate = float(opt.get("rate", "50"))
            return Turn(text=stream_text(n, arrival, int(opt.get("para", "0"))), token_delay=1.0 / rate if rate > 0 else 0.0,
                        delay=float(opt.get("ttft", "0")))
        if kind == "hold":  # until the next `release` command, at most s seconds
            with self.released:
                if self.draining:
                    return Turn(text="Held. ")
                seen = self.release_count
                self.released.wait_for(lambda: self.release_count != seen, min(float(opt.get("s", "45")), 280.0))
            return Turn(text="Held. ")
        return Turn(text="OK.")


def main() -> None:
    fake = BenchFake().start()
    out = sys.stdout
    out.write(json.dumps({"base_url": fake.base_url}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            command = json.loads(line).get("cmd")
        except ValueError:
            continue
        if command == "stats":
            records = []
            while fake.records:
                records.append(fake.records.popleft())
            reply = {"records": records, **fake.counts}
        elif command == "release":
            fake.release()
            reply = {"ok": True}
        elif command in ("drain", "undrain"):
            with fake.released:
                fake.draining = command == "drain"
            fake.release()
            reply = {"ok": True}
        elif command == "quit":
            break
        else:
            reply = {"error": f"unknown command {command!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    fake.release()
    fake.stop()


if __name__ == "__main__":
    main()
