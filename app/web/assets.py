"""Static files: content-hashed names served with `Cache-Control: immutable`, gzip and brotli; and
compression (Flask-Compress) for pages and htmx fragments.

`url_for('static', filename='css/app.css')` gives `/static/css/app.<hash>.css`. A request for the current
hash is cached for a year and never revalidated; an unhashed or outdated name still answers (someone's
old page, a bookmark) with the current file and `no-cache`. Files are read and compressed once per
process (the folder is small): no per-request compression of static files.

Event streams (`text/event-stream`) are never compressed or buffered: they are not in the mimetype
list and COMPRESS_STREAMS is off, so a stream's every event leaves at once."""
from __future__ import annotations

import gzip
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path

import brotli
from flask import Flask, Response, abort, request
from flask_compress import Compress

HASH_CHARS = 12
_HASHED = re.compile(r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{%d})(?P<ext>\.[^./]+)$" % HASH_CHARS)
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
IMMUTABLE = "public, max-age=31536000, immutable"

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("image/svg+xml", ".svg")


@dataclass
class Asset:
    body: bytes
    mimetype: str
    digest: str
    encoded: dict[str, bytes] = field(default_factory=dict)  # "br"/"gzip" -> body, when it is smaller


def hashed_name(filename: str, digest: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    return f"{stem}.{digest}.{ext}" if dot and "/" not in ext else f"{filename}.{digest}"


class Assets:
    def __init__(self, folder: Path):
        self.folder = folder
        self._files: dict[str, Asset] = {}

    def get(self, filename: str) -> Asset | None:
        asset = self._files.get(filename)
        if asset is None:
            path = (self.folder / filename).resolve()
            if not path.is_file() or self.folder.resolve() not in path.parents:
                return None
            asset = self._load(path)
            self._files[filename] = asset
        return asset

    @staticmethod
    def _load(path: Path) -> Asset:
        body = path.read_bytes()
        mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        asset = Asset(body, mimetype, hashlib.sha256(body).hexdigest()[:HASH_CHARS])
        if mimetype.startswith(COMPRESSIBLE) and len(body) > 500:
            for name, data in (("br", brotli.compress(body, quality=11)), ("gzip", gzip.compress(body, 9, mtime=0))):
                if len(data) < len(body):
                    asset.encoded[name] = data
        return asset

    def forget(self) -> None:
        self._files.clear()


def _accepts(encoding: str) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == encoding and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def register(app: Flask) -> None:
    # Pages and htmx fragments only: static files are precompressed below, and the REST API's JSON is
    # left as it was (its clients, and the schemathesis fuzzer, read bodies without decoding).
    app.config.setdefault("COMPRESS_MIMETYPES", ["text/html"])
    app.config.setdefault("COMPRESS_ALGORITHM", ["br", "gzip"])
    app.config.setdefault("COMPRESS_STREAMS", False)  # never an event stream (nor any streamed body)
    # Dynamic bodies are compressed on every request: brotli quality 2 with a 256 KiB window costs a
    # third of the default (4, 4 MiB) on a card-sized fragment for ~6 % more bytes; a body that fits in
    # one TCP segment anyway is sent as it is.
    app.config.setdefault("COMPRESS_BR_LEVEL", 2)
    app.config.setdefault("COMPRESS_BR_WINDOW", 18)
    app.config.setdefault("COMPRESS_MIN_SIZE", 1400)
    Compress(app)
    assets = Assets(Path(app.static_folder))
    app.extensions["assets"] = assets

    @app.url_defaults
    def content_hashed_static(endpoint, values):
        if endpoint != "static" or "filename" not in values:
            return
        if app.debug:
            assets.forget()  # edited files get new names at once while developing
        asset = assets.get(values["filename"])
        if asset is not None:
            values["filename"] = hashed_name(values["filename"], asset.digest)

    def serve_static(filename: str):
        match = _HASHED.match(filename)
        wanted = None
        if match:
            original = match["stem"] + match["ext"]
            if assets.get(original) is not None:
                filename, wanted = original, match["hash"]
        asset = assets.get(filename)
        if asset is None:
            abort(404)
        response = Response(asset.body, mimetype=asset.mimetype)
        encoding = next((e for e in ("br", "gzip") if e in asset.encoded and _accepts(e)), None)
        if encoding:
            response.set_data(asset.encoded[encoding])
            response.headers["Content-Encoding"] = encoding
        response.headers["Vary"] = "Accept-Encoding"
        if wanted == asset.digest:
            response.headers["Cache-Control"] = IMMUTABLE
        else:
            response.headers["Cache-Control"] = "no-cache"
            response.set_etag(f"{asset.digest}-{encoding}" if encoding else asset.digest)
            response.make_conditional(request)
        return response

    app.view_functions["static"] = serve_static
