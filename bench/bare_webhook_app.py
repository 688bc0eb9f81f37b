"""The webhook baseline: a bare Starlette handler that only verifies the Twilio signature (no journal)."""

from __future__ import annotations

import sys
import urllib.parse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from svcbridge_twilio.signature import validate

TOKEN, URL = sys.argv[2], sys.argv[3]


async def hook(request: Request) -> Response:
    params = urllib.parse.parse_qsl((await request.body()).decode(), keep_blank_values=True)
    if not validate(TOKEN, URL, params, request.headers.get("x-twilio-signature", "")):
        return Response("invalid signature", status_code=403)
    return Response("<Response></Response>", media_type="application/xml")


app = Starlette(routes=[Route("/hooks/twilio/sms", hook, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
