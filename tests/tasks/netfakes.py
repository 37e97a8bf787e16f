"""Small real network peers for tests: a closed port, a silent listener, a scripted HTTP server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def silent_listener() -> Iterator[int]:
    """Accepts TCP connections and never says a word (a hung server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


ROUTES: dict[str, tuple[int, str, str, float]] = {
    # path: (status, content type, body, delay seconds)
    "/ok/health": (200, "application/json", '{"status": "ok"}', 0.0),
    "/ok/health/ready": (
        200,
        "application/json",
        '{"status": "ok", "checks": {"database": "ok", "redis": "ok"}}',
        0.0,
    ),
    "/down/health": (503, "application/json", '{"status": "error"}', 0.0),
    "/down/health/ready": (503, "application/json", '{"status": "error"}', 0.0),
    "/slow/health": (200, "application/json", '{"status": "ok"}', 3.0),
    "/slow/health/ready": (200, "application/json", '{"status": "ok"}', 3.0),
    "/garbage/health": (200, "text/html", "<html><body>Bad gateway page</body></html>", 0.0),
    "/garbage/health/ready": (200, "text/html", "\x00\x01 not json", 0.0),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, content_type, body, delay = ROUTES.get(
            self.path, (404, "text/plain", "no such path", 0.0)
        )
        if delay:
            time.sleep(delay)
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def scripted_http_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering the `ROUTES` table; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
