"""A minimal local HTTP helpdesk used as the delivery target by the benchmarks (run as its own process)."""

from __future__ import annotations

import itertools
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_ids = itertools.count(1)
_seen: dict[str, int] = {}


async def create(request: Request) -> JSONResponse:
    body = await request.json()
    key = body.get("idempotency_key", "")
    if key not in _seen:
        _seen[key] = next(_ids)
    return JSONResponse({"id": _seen[key]}, status_code=201)


async def update(request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/tickets", create, methods=["POST"]),
        Route("/tickets/{tid}/notes", update, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
