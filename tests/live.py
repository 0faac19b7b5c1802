"""A real server for tests: gunicorn with the production config (gevent workers) in a subprocess,
on a free loopback port, talking to the test's databases and fake model."""
from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, env: dict[str, str], workers: int = 2, log_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1",
                    "WEB_CONCURRENCY": str(workers)}
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            if name not in env:
                self.env.pop(name, None)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "LiveServer":
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/static/favicon.svg", timeout=2).ok:
                    return self
            except requests.RequestException:  # not listening yet, or workers still booting
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not start in time")

    def stop(self, kill: bool = False) -> None:
        """Stop every process of the server: SIGTERM (graceful) or SIGKILL (a crash)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=35)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if kill:  # the workers are in the same process group; make sure none lingers
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


TEST_PASSWORD = "correct horse battery staple"


class Client:
    """An HTTP client that behaves like the page: one cookie jar, the CSRF token, htmx headers.

    It signs up as a person of its own on its first request (the server runs with SIGNUP=open), unless
    it was given another client's cookies (the same person in another tab) or `sign_in=False`."""

    def __init__(self, base_url: str, sign_in: bool = True):
        self.base = base_url
        self.http = requests.Session()
        self.csrf = None
        self.email = None
        self._sign_in = sign_in

    def _ensure_signed_in(self) -> None:
        if not self._sign_in or self.email or any(c.name.endswith("session") for c in self.http.cookies):
            return
        self.email = f"person-{secrets.token_hex(4)}@example.test"
        if _patiently(self.http.get, self.base + "/signup").status_code == 404:  # no admin yet: set one up
            setup = requests.Session()
            token = _csrf_in(_patiently(setup.get, self.base + "/setup").text)
            if token:  # else another client set the server up meanwhile
                _patiently(setup.post, self.base + "/setup", data={
                    "email": f"admin-{secrets.token_hex(4)}@example.test", "password": TEST_PASSWORD,
                    "csrf_token": token})
        token = _csrf_in(_patiently(self.http.get, self.base + "/signup").text)
        response = _patiently(self.http.post, self.base + "/signup", allow_redirects=False, data={
            "email": self.email, "password": TEST_PASSWORD, "csrf_token": token})
        assert response.status_code == 303, f"sign-up failed: {response.status_code} {response.text[:300]}"

    def get(self, path: str, **kwargs) -> requests.Response:
        self._ensure_signed_in()
        response = self.http.get(self.base + path, timeout=10, **kwargs)
        if match := re.search(r'name="csrf_token" value="([^"]+)"', response.text):
            self.csrf = match.group(1)
        return response

    def post(self, path: str, data=None, **kwargs) -> requests.Response:
        self._ensure_signed_in()
        if self.csrf is None:
            self.get("/account")
        headers = {"X-CSRFToken": self.csrf, "HX-Request": "true"}
        return self.http.post(self.base + path, data=data or {}, headers=headers, timeout=15,
                              allow_redirects=False, **kwargs)

    def new_chat(self) -> str:
        self._ensure_signed_in()
        response = self.http.post(self.base + "/chats", data={"csrf_token": self.csrf or self._token()},
                                  allow_redirects=False, timeout=10)
        assert response.status_code == 303, response.text
        return response.headers["Location"].rsplit("/", 1)[-1]

    def _token(self) -> str:
        self.get("/account")
        return self.csrf

    def send(self, chat_id: str, text: str) -> str:
        """Send a message as the composer does; returns the id of the run it started or resumed."""
        response = self.post(f"/chats/{chat_id}/messages", {"message": text})
        assert response.status_code == 200, response.text
        return run_id_in(response.text)

    def pending_call(self, chat_id: str) -> tuple[str, str]:
        page = self.get(f"/chats/{chat_id}").text
        run_id, call_id = re.search(r"/runs/(run_\w+)/calls/(tc_\w+)/approve", page).groups()
        return run_id, call_id


def _patiently(send, url: str, **kwargs) -> requests.Response:
    """Signing up is the test's preparation, not what it tests: wait out a busy server (503)."""
    for _ in range(20):
        response = send(url, timeout=30, **kwargs)
        if response.status_code != 503:
            return response
        time.sleep(0.5)
    return response


def _csrf_in(html: str) -> str | None:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    return match.group(1) if match else None


def run_id_in(html: str) -> str:
    """The run a page or fragment streams (from its event-stream URL)."""
    return re.search(r"/runs/(run_[0-9a-f]+)/events", html).group(1)
