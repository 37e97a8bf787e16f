"""One TLS context per process for every outbound HTTP client.

`httpx.AsyncClient()` builds a fresh `ssl.SSLContext` each time, which parses the whole CA bundle:
about 20 ms of CPU per client (measured on the 2-core machine; docs/benchmarks.md). A diagnosis
opens ten or so clients on one event loop, so that was ~0.2 s of every incident run. The context
is immutable once built (every client here speaks HTTP/1.1, so the per-connection ALPN setting is
the same for all), and verification is exactly httpx's default: certifi's bundle, or
`SSL_CERT_FILE` / `SSL_CERT_DIR` when set (the cache is keyed on them).
"""

from __future__ import annotations

import os
import ssl
from functools import cache
from typing import Any

import httpx


@cache
def _context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    del cert_file, cert_dir  # the cache key: httpx reads them from the environment itself
    return httpx.create_ssl_context()


def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once per process (per CA setting)."""
    return _context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """`httpx.AsyncClient(**kwargs)` on the process's shared TLS context."""
    kwargs.setdefault("verify", tls_context())
    return httpx.AsyncClient(**kwargs)
