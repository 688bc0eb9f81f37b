"""A public fault-report form at ``/form/<name>`` for customers without mail: contact, serial number,
fault text and files, in zh-CN, zh-TW and en (``page.py``).

Defences, each tested: a CSRF token (HMAC of form name, time and a nonce, the nonce also in a
``SameSite=Lax`` HttpOnly cookie: double submit; valid for ``token_max_age``); size limits for the
whole request, each file and the number of files; a honeypot field (filled: the bot is thanked and
nothing is stored); a per-address rate limit (``rate_limit`` posts per ``rate_window`` seconds: 429).
Customer text is escaped wherever it is shown again and never used as a path; files get generated
names (``Attachment.safe_name``).

An accepted post is journaled under its token's nonce (a double click or a browser resend is
journaled once) and becomes a ticket of channel ``web`` with the serial number on the asset; the
customer is answered on ``[notifications] fallback_channels`` (mail, SMS) since a web page cannot be
sent to.

Settings (``[plugins.webform]``)::

    secret = "..."                 # or secret_file; shared by replicas (tokens are checked anywhere)
    default_region = "CN"          # national mobile numbers
    [[plugins.webform.forms]]
    name = "service"
    title = "ACME 售后报修"
    language = "zh-CN"
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from collections import defaultdict, deque
from typing import Any

import phonenumbers
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from svcbridge import (
    Asset,
    Attachment,
    Contact,
    ParseError,
    PluginSettings,
    RawMessage,
    StoreUnavailable,
    TicketDraft,
    WebhookRoute,
    hookimpl,
    read_body,
)

from .page import form_page, pick_language, thanks_page

__version__ = "0.1.0"
log = structlog.get_logger("svcbridge.webform")
FIELDS = ("name", "company", "email", "phone", "serial", "description")
LIMITS = {"name": 100, "company": 200, "email": 200, "phone": 40, "serial": 100, "description": 20_000}


class FormSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")
    title: str = ""
    language: str = "zh-CN"


class WebformSettings(PluginSettings):
    secret: SecretStr | None = Field(
        default=None, description="HMAC key of the CSRF tokens (random if unset)"
    )
    forms: list[FormSettings] = Field(default_factory=list)
    default_region: str | None = None
    max_request: int = Field(default=12 * 1024 * 1024, ge=10_000)
    max_file: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_files: int = Field(default=5, ge=0, le=20)
    rate_limit: int = Field(default=5, ge=1, description="posts per address per rate_window")
    rate_window: float = Field(default=3600.0, gt=0)
    token_max_age: float = Field(default=2 * 3600.0, gt=0)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="networks of reverse proxies whose X-Forwarded-For names the client (rate limit)",
    )


class FormRoute:
    def __init__(self, cfg: WebformSettings, form: FormSettings) -> None:
        self.cfg, self.form = cfg, form
        self.key = (cfg.secret.get_secret_value() if cfg.secret else secrets.token_hex(32)).encode()
        self.cookie = f"sbform_{form.name}"
        self.posts: dict[str, deque[float]] = defaultdict(deque)
        self.posts_pruned_at = time.monotonic()
        self.proxies = [ipaddress.ip_network(n, strict=False) for n in cfg.trusted_proxies]

    # ------------------------------------------------------------------ tokens
    def token(self, nonce: str, ts: int | None = None) -> str:
        ts = int(time.time()) if ts is None else ts
        mac = hmac.new(self.key, f"{self.form.name}|{ts}|{nonce}".encode(), hashlib.sha256).hexdigest()
        return f"{ts}.{nonce}.{mac}"

    def check_token(self, token: str, cookie: str) -> str | None:
        """The nonce of a genuine, fresh token matching the cookie, else None."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit() or len(parts[0]) > 12:
            return None
        ts, nonce, _mac = parts
        if not cookie or not hmac.compare_digest(cookie.encode(), nonce.encode()):
            return None
        if not 0 <= time.time() - int(ts) <= self.cfg.token_max_age:
            return None
        return nonce if hmac.compare_digest(self.token(nonce, int(ts)).encode(), token.encode()) else None

    def limited(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self.posts_pruned_at > self.cfg.rate_window:  # addresses idle for a window: forgotten
            self.posts_pruned_at = now
            for key in [k for k, q in self.posts.items() if not q or q[-1] < now - self.cfg.rate_window]:
                del self.posts[key]
        q = self.posts[_bucket(address)]
        while q and q[0] < now - self.cfg.rate_window:
            q.popleft()
        if len(q) >= self.cfg.rate_limit:
            return True
        q.append(now)
        return False

    # ------------------------------------------------------------------ HTTP
    async def __call__(self, request: Request, ctx: Any) -> Response:
        lang = pick_language(
            request.query_params.get("lang"), request.headers.get("accept-language", ""), self.form.language
        )
        if request.method == "GET":
            return self.page(lang, {}, [])
        address = client_address(request, self.proxies)
        if self.limited(address):
            return self.page(lang, {}, ["err_rate"], status=429, fresh=False)
        body = await read_body(request, self.cfg.max_request)
        if not isinstance(body, bytes):
            return self.page(lang, {}, ["err_size"], status=413) if body.status_code == 413 else body
        try:
            # a 12 MB form takes the email parser a good part of a second: not on the event loop
            fields, files = await asyncio.to_thread(_multipart, request.headers.get("content-type", ""), body)
        except ValueError:
            return self.page(lang, {}, ["err_token"], status=400)
        values = {k: fields.get(k, "").strip()[: LIMITS[k]] for k in FIELDS}
        nonce = self.check_token(fields.get("csrf_token", ""), request.cookies.get(self.cookie, ""))
        if nonce is None:
            return self.page(lang, values, ["err_token"], status=403)
        if fields.get("website"):  # the honeypot: a person never sees it
            log.info("webform_honeypot", form=self.form.name)
            return HTMLResponse(thanks_page(self.form.title, lang))
        errors, contact = self.validate(values, files)
        if errors:
            return self.page(lang, values, errors, status=422)
        doc = {
            "form": self.form.name,
            "language": lang,
            "fields": {**values, "email": contact.email or "", "phone": contact.phone or ""},
            "files": [{"name": n, "type": t, "data": _b64(d)} for n, d, t in files],
        }
        raw = RawMessage(
            channel="web",
            source=f"webform:{self.form.name}",
            external_id=nonce,
            raw=json.dumps(doc, ensure_ascii=False).encode(),
            metadata={"address": address},
        )
        try:
            await ctx.submit(raw)
        except StoreUnavailable:
            return self.page(lang, values, ["err_rate"], status=503)
        resp = HTMLResponse(thanks_page(self.form.title, lang))
        resp.delete_cookie(self.cookie, path=f"/form/{self.form.name}")
        return resp

    def validate(
        self, values: dict[str, str], files: list[tuple[str, bytes, str]]
    ) -> tuple[list[str], Contact]:
        errors: list[str] = []
        mail, phone = None, None
        if values["email"]:
            try:
                mail = Contact(email=values["email"]).email
            except ValueError:
                errors.append("err_email")
        if values["phone"]:
            phone = _e164(values["phone"], self.cfg.default_region)
            if phone is None:
                errors.append("err_phone")
        if not values["email"] and not values["phone"]:
            errors.append("err_contact")
        if not values["description"]:
            errors.append("err_description")
        if len(files) > self.cfg.max_files or any(len(d) > self.cfg.max_file for _n, d, _t in files):
            errors.append("err_files")
        return errors, Contact(email=mail, phone=phone)

    def page(
        self, lang: str, values: dict[str, str], errors: list[str], status: int = 200, fresh: bool = True
    ) -> Response:
        nonce = uuid.uuid4().hex
        html = form_page(self.form.name, self.form.title, lang, self.token(nonce), values, errors)
        resp = HTMLResponse(html, status_code=status)
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
        )
        resp.headers["X-Frame-Options"] = "DENY"
        if fresh:
            resp.set_cookie(self.cookie, nonce, httponly=True, samesite="lax", path=f"/form/{self.form.name}")
        return resp


def client_address(request: Request, proxies: list[Any]) -> str:
    """The client's address: the peer, or behind trusted proxies the nearest X-Forwarded-For entry that
    is not one of them (entries further left are the client's own claims and could be forged)."""
    peer = request.client.host if request.client else "unknown"
    chain = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for addr in reversed(chain):
        if not _trusted(peer, proxies):
            break
        peer = addr
    return peer


def _bucket(address: str) -> str:
    """What the rate limit counts: an IPv4 address, or an IPv6 client's /64 (one subscriber's prefix,
    whose 2^64 addresses it can use at will)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped) if ip.version == 6 else str(ip)  # ::ffff:a.b.c.d counts as a.b.c.d


def _trusted(addr: str, proxies: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def _e164(text: str, region: str | None) -> str | None:
    try:
        num = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, bytes, str]]]:
    """``multipart/form-data`` fields (first value of each) and files (with a name and some bytes)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("not multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.message_from_bytes(head + body, policy=email.policy.HTTP)
    if not msg.is_multipart():
        raise ValueError("no parts")
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes, str]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if not name:
            continue
        filename = part.get_filename()
        if filename is not None:
            if data:  # an empty file input sends a part without content
                files.append((str(filename)[:200], data, part.get_content_type()))
        else:
            fields.setdefault(str(name), data.decode("utf-8", errors="replace"))
    return fields, files


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


@hookimpl
def register_settings(register: Any) -> None:
    register("webform", WebformSettings)


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg: WebformSettings | None = settings.plugin_config("webform")
    for form in cfg.forms if cfg else []:
        route = FormRoute(cfg, form)  # type: ignore[arg-type]
        register(
            WebhookRoute(
                path=f"form/{form.name}",
                endpoint=route,
                methods=("GET", "POST"),
                name=f"webform:{form.name}",
                mount="/",
            )
        )


@hookimpl
def parse_message(raw: RawMessage) -> TicketDraft | None:
    if raw.channel != "web" or not raw.source.startswith("webform:") or raw.raw is None:
        return None
    import base64

    try:
        doc = json.loads(raw.raw)
        f = doc["fields"]
        files = [
            Attachment.from_bytes(
                base64.b64decode(x["data"]), original_name=x["name"], content_type=x["type"]
            )
            for x in doc.get("files") or []
        ]
        contact = Contact(
            name=f.get("name") or None,
            company=f.get("company") or None,
            email=f.get("email") or None,
            phone=f.get("phone") or None,
            language=doc.get("language"),
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ParseError("not a journaled web form post") from None
    text = str(f.get("description") or "")
    first = " ".join(text.split())[:80]
    serial = str(f.get("serial") or "").strip() or None
    return TicketDraft(
        channel="web",
        subject=(f"[{serial}] " if serial else "") + (first or "Web form"),
        body_text=text + (f"\n\nSerial number: {serial}" if serial else ""),
        contact=contact,
        asset=Asset(serial=serial),
        language=doc.get("language"),
        attachments=files,
        labels={"web_form": doc.get("form")},
    )
