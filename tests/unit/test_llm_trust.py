"""A model server over HTTPS is verified against the system's CAs, which the client reads from OpenSSL's
hashed directory only as a handshake needs them (app.agent.llm.system_trust_by_directory), or against
the store SSL_CERT_FILE names; over plain HTTP no TLS context is made at all."""
from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.agent import llm
from app.agent.llm import ContextItem, ModelError, model_for, system_trust_by_directory
from tests.fake_openai import Turn


class TlsModelServer:
    """Answers every request it can read over TLS with 418, and counts them."""

    def __init__(self, tmp_path):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a model server nobody vouches for")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert_path, key_path)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"https://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    if self._read_request(conn):
                        self.requests += 1
                        conn.sendall(b"HTTP/1.1 418 I'm a teapot\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
            except (ssl.SSLError, OSError):
                continue  # the client refused our certificate

    @staticmethod
    def _read_request(conn) -> bool:
        """The whole request, body included: closing with unread bytes would reset the connection, and
        the client would retry."""
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def close(self):
        self.listener.close()


@pytest.fixture
def tls_server(tmp_path):
    server = TlsModelServer(tmp_path)
    yield server
    server.close()


@pytest.fixture
def system_store_only(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def ask(base_url: str) -> None:
    model = model_for({"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "k", "OPENAI_API": "responses",
                       "OPENAI_MODEL": "m", "OPENAI_TIMEOUT": 10.0})
    list(model.stream("", [ContextItem("user", "hi")], []))


def test_a_model_server_whose_certificate_no_system_ca_signed_is_refused(system_store_only, tls_server):
    with pytest.raises(ModelError, match="Could not reach the model server"):
        ask(tls_server.base_url)
    assert tls_server.requests == 0


def test_a_model_server_trusted_through_ssl_cert_file_is_reached(monkeypatch, tls_server):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.cert_path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with pytest.raises(ModelError, match=r"answered with an error \(418\)"):
        ask(tls_server.base_url)
    assert tls_server.requests == 1


def test_the_system_store_is_read_by_directory_as_handshakes_need_it(system_store_only):
    trust = system_trust_by_directory()
    assert trust is not None and trust.verify_mode == ssl.CERT_REQUIRED and trust.check_hostname
    assert trust.cert_store_stats()["x509_ca"] == 0  # nothing loaded up front


def test_a_model_server_over_plain_http_costs_no_tls_context(monkeypatch, fake_model):
    clients, contexts = [], []

    class Recorded(llm.TrustOnFirstHandshake):
        def __init__(self):
            super().__init__()
            clients.append(self)

    monkeypatch.setattr(llm, "TrustOnFirstHandshake", Recorded)
    monkeypatch.setattr(llm, "system_trust_by_directory", lambda: contexts.append("made") or None)
    fake_model.script(Turn(text="Hi."))
    ask(fake_model.base_url)
    assert len(clients) == 1 and contexts == []  # the client's trust was never asked for a context
