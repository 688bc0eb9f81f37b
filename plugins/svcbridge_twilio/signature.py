"""X-Twilio-Signature, exactly as Twilio computes it (twilio-python ``request_validator.py``).

data = full URL as called (query included) + for form posts every parameter ``name + value`` sorted by
name (several values of one name: each distinct value, sorted), no separators; signature =
base64(HMAC-SHA1(auth token, data)). JSON bodies carry ``bodySHA256`` (hex SHA-256 of the raw body) in
the query and the URL alone is signed. The URL is tried with and without the default port, as the SDK
does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit


def compute(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    data = url
    for name in sorted({k for k, _ in params}):
        for value in sorted({v for k, v in params if k == name}):  # repeated values once, as the SDK does
            data += name + value
    mac = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def _variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port is None and default:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def validate(auth_token: str, url: str, params: list[tuple[str, str]], signature: str) -> bool:
    if not signature:
        return False
    return any(hmac.compare_digest(compute(auth_token, u, params), signature) for u in _variants(url))
