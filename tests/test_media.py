"""svcbridge.fetch_media against a real loopback HTTP server: the size limit while streaming and the time
budget for the whole fetch (a server that drips bytes must not hold a webhook answer past it)."""

from __future__ import annotations

import asyncio
import time

import pytest

from svcbridge import MediaError, fetch_media


async def _server(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: 1000\r\n\r\n")
    try:
        for _ in range(1000):  # one byte every 0.2 s: each read is quick, the whole is not
            writer.write(b"%")
            await writer.drain()
            await asyncio.sleep(0.2)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for _ in range(100):
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@pytest.mark.parametrize(("handler", "limit", "timeout", "message"), [
    (_drip, 10_000, 1.5, "time"),
    (_big, 20_000, 15.0, "over the limit"),
])
async def test_fetch_media_limits(handler, limit, timeout, message) -> None:
    server, port = await _server(handler)
    async with server:
        t0 = time.monotonic()
        with pytest.raises(MediaError, match=message):
            await fetch_media(f"http://127.0.0.1:{port}/f.pdf", limit=limit, allow=["127.0.0.1"], timeout=timeout)
        assert time.monotonic() - t0 < timeout + 2.0
