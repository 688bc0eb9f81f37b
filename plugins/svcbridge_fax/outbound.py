"""Notices to fax-only customers, as a fax: the notice rendered to a PDF and sent through a gateway.

``render_pdf`` lays the notice's subject and text out on A4 pages (Noto CJK or WenQuanYi, so Chinese
notices print; a wrapped line never runs off the page) with Pillow, one image per page at fax fine
resolution, saved as PDF. The ``FaxNotifier`` (channel ``fax``; the contact's address is their phone
number, which for a fax ticket is the fax number) sends it:

- Telnyx (``POST /v2/faxes``, contract 2.2) fetches the document from a URL: the PDF is kept under
  ``<data_dir>/fax-outbox/`` and served by the daemon at ``<public_url>/hooks/<path>/media/<name>``,
  where ``name`` is an HMAC of the outbox key (unguessable; nothing else is served there).
- Sinch / Phaxio (``POST /v2.1/faxes``, Basic ``api_key:api_secret``) takes the file in the request.

Errors follow ``svcbridge.http_request``: 429 / 5xx retry, 401 / 403 park the channel, other 4xx dead.
When no fax gateway is configured, the ticket's notices go to the fallback channel (``[notifications]
fallback_channels``; ``classify_ticket`` gives a fax customer their directory e-mail for that) or wait
parked with an alert: never silently.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from svcbridge import (
    Contact,
    DeliveryItem,
    DeliveryResult,
    ExternalLink,
    PermanentError,
    http_request,
    make_client,
)

FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
PAGE = (1728, 2292)  # A4 at 204x196 dpi, the fax fine resolution
MARGIN, SIZE = 120, 36


def _font(path: str | None) -> Any:
    from PIL import ImageFont

    for candidate in (path, *FONTS):
        if candidate and Path(candidate).exists():
            return ImageFont.truetype(candidate, SIZE)
    raise PermanentError("no CJK font for fax notices (install fonts-noto-cjk or set [plugins.fax] font)")


def render_pdf(subject: str, body: str, font_path: str | None = None) -> tuple[bytes, int]:
    """The notice as a PDF of fax pages, and how many pages."""
    from PIL import Image, ImageDraw

    font = _font(font_path)
    width = PAGE[0] - 2 * MARGIN
    lines: list[str] = []
    for para in [subject, "", *body.splitlines()]:
        if not para.strip():
            lines.append("")
            continue
        # wrap by measured width: a CJK line has no spaces to break at
        line = ""
        for ch in para:
            if font.getlength(line + ch) > width:
                lines.append(line)
                line = ""
            line += ch
        lines.append(line)
    per_page = (PAGE[1] - 2 * MARGIN) // int(SIZE * 1.6)
    pages = []
    for start in range(0, max(len(lines), 1), per_page):
        img = Image.new("L", PAGE, 255)
        draw = ImageDraw.Draw(img)
        for i, ln in enumerate(lines[start : start + per_page]):
            draw.text((MARGIN, MARGIN + i * int(SIZE * 1.6)), ln, font=font, fill=0)
        pages.append(img.convert("1"))
    buf = io.BytesIO()
    pages[0].save(buf, format="PDF", resolution=204.0, save_all=True, append_images=pages[1:])
    return buf.getvalue(), len(pages)


def media_name(key: bytes, idempotency_key: str) -> str:
    return hmac.new(key, idempotency_key.encode(), hashlib.sha256).hexdigest()[:40] + ".pdf"


class FaxMediaRoute:
    """GET ``<path>/media/{name}``: a rendered outgoing fax, for Telnyx to fetch."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def __call__(self, request: Request, _ctx: Any) -> Response:
        name = str(request.path_params.get("name", ""))
        hexed = all(c in "0123456789abcdef" for c in name[:40])
        if len(name) != 44 or not name.endswith(".pdf") or not hexed:
            return Response("not found", status_code=404)
        path = self.directory / name
        if not path.is_file():
            return Response("not found", status_code=404)
        return Response(path.read_bytes(), media_type="application/pdf")


class FaxNotifier:
    channel = "fax"

    @staticmethod
    def address(contact: Contact) -> str | None:
        return contact.phone

    def __init__(self, cfg: Any, data_dir: Path, allow: list[str], transport: Any = None) -> None:
        self.cfg, self.provider = cfg, cfg.outbound
        self.name = f"{self.provider}-fax"
        self.directory = data_dir / "fax-outbox"
        if self.provider == "telnyx":
            t = cfg.telnyx
            self.key = t.api_key.get_secret_value().encode()
            headers = {"Authorization": f"Bearer {t.api_key.get_secret_value()}"}
            self.client = make_client(t.api_base, headers=headers, transport=transport, allow=allow)
        else:
            s = cfg.sinch
            if not (s.api_key and s.api_secret):
                raise ValueError("[plugins.fax.sinch] api_key and api_secret are needed to send faxes")
            self.key = s.api_secret.get_secret_value().encode()
            auth = (s.api_key, s.api_secret.get_secret_value())
            self.client = make_client(s.api_base, auth=auth, transport=transport, allow=allow)

    async def send(self, item: DeliveryItem) -> DeliveryResult:
        n = item.payload["notification"]
        pdf, pages = render_pdf(n.get("subject") or "", n.get("body") or "", self.cfg.font)
        if self.provider == "telnyx":
            t = self.cfg.telnyx
            name = media_name(self.key, item.idempotency_key)
            self.directory.mkdir(parents=True, exist_ok=True)
            _prune(self.directory, 2 * 86400)  # Telnyx fetches within minutes; notices are customer text
            tmp = self.directory / (name + ".tmp")
            tmp.write_bytes(pdf)
            tmp.replace(self.directory / name)  # complete before Telnyx can ask for it
            url = t.public_url.rstrip("/") + "/hooks/" + t.path.strip("/") + "/media/" + name
            body = {"connection_id": t.connection_id, "media_url": url, "to": n["to"], "from": t.from_number}
            r = await http_request(self.client, "POST", "/v2/faxes", "Telnyx send fax", json=body)
            fax_id = str((r.json().get("data") or {}).get("id", ""))
            link = ExternalLink(system="telnyx", kind="fax_out_id", value=fax_id)
        else:
            files = {"file": ("notice.pdf", pdf, "application/pdf")}
            r = await http_request(
                self.client, "POST", "/v2.1/faxes", "Sinch send fax", data={"to": n["to"]}, files=files
            )
            fax_id = str((r.json().get("data") or {}).get("id", ""))
            link = ExternalLink(system="sinch", kind="fax_out_id", value=fax_id)
        return DeliveryResult(links=[link], detail=f"fax {fax_id} to {n['to']}, {pages} page(s)")


def _prune(directory: Path, age: float) -> None:
    cutoff = time.time() - age
    for p in directory.iterdir():
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            continue
