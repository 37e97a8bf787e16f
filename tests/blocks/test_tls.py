"""Outbound HTTP clients share one TLS context per process (runbook/tls.py) and still verify
certificates exactly as httpx does by default: an untrusted certificate is refused, a CA given
in `SSL_CERT_FILE` is trusted. A real HTTPS server on 127.0.0.1 with a certificate of a private
CA (the sandbox's)."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from blocks import Railway, Slack
from runbook.tls import http_client, tls_context
from sandbox.certs import make_certificates

pytestmark = pytest.mark.unit


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    made = make_certificates(tmp_path_factory.mktemp("tls"), prefix="https")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(made.cert_file, made.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", made.ca_file
    finally:
        server.shutdown()
        server.server_close()


async def test_an_untrusted_certificate_is_refused(
    https_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    url, _ = https_server
    async with Slack(webhook_url=SecretStr(url)).get_client() as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(url)


async def test_a_ca_given_in_ssl_cert_file_is_trusted(
    https_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = https_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with http_client(timeout=5) as client:
        assert (await client.get(url)).text == "ok"


def test_every_block_client_shares_one_verifying_context() -> None:
    railway = Railway(token=SecretStr("t"), project_id="p", environment_id="e", service_id="s")
    contexts = {
        id(client._transport._pool._ssl_context)  # type: ignore[attr-defined]
        for client in (railway.get_client(), Slack(webhook_url=SecretStr("x")).get_client())
    }
    assert contexts == {id(tls_context())}
    assert tls_context().verify_mode is ssl.CERT_REQUIRED and tls_context().check_hostname
