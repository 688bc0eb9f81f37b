"""Every issue-17 route over real HTTP to the running daemon: Telnyx fax (its PDF fetched from a loopback
file server through the SSRF guard's allow list), Sinch fax, Telnyx SMS, the CTI webhook and the web
form; a forged request to each is refused with 403; the genuine ones become one ticket each."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import free_port
from test_daemon import _healthy, _no_stray_daemons, cli, start, stop, wait_for, write_config  # noqa: F401

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n%%EOF"


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Content-Length", str(len(PDF)))
        self.end_headers()
        self.wfile.write(PDF)

    def log_message(self, *args: object) -> None:
        pass


def telnyx(body: bytes, key: Ed25519PrivateKey = KEY) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"telnyx-timestamp": ts, "content-type": "application/json",
            "telnyx-signature-ed25519": base64.b64encode(key.sign(ts.encode() + b"|" + body)).decode()}


def test_every_channel_route_over_real_http(tmp_path: Path) -> None:
    files = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path, port)
    cfg.write_text('outbound_allow = ["127.0.0.1/32"]\n' + cfg.read_text() + f"""
[plugins.fax]
default_region = "CN"
[plugins.fax.ocr]
enabled = false
[plugins.fax.telnyx]
public_key = "{PUB}"
api_key = "k"
[plugins.fax.sinch]
callback_token = "sinch-token"
public_url = "{base}"
[plugins.sms.telnyx]
public_key = "{PUB}"
api_key = "k"
[plugins.phone]
token = "cti-secret-token"
[plugins.webform]
secret = "form-secret"
[[plugins.webform.forms]]
name = "service"
""")
    proc = start(cfg)
    try:
        wait_for(lambda: _healthy(port), timeout=90)  # a loaded CI box starts the daemon slowly
        h = httpx.Client(base_url=base, timeout=30)
        # Telnyx fax
        fax = json.dumps({"data": {"event_type": "fax.received", "id": "evf1", "payload": {
            "fax_id": "f1", "from": "+886227208889", "page_count": 1,
            "media_url": f"http://127.0.0.1:{files.server_address[1]}/fax.pdf"}}}).encode()
        assert h.post("/hooks/telnyx/fax", content=fax, headers=telnyx(fax, Ed25519PrivateKey.generate())).status_code == 403
        assert h.post("/hooks/telnyx/fax", content=fax, headers=telnyx(fax)).status_code == 200
        # Sinch fax
        fields = {"direction": "received", "fax": json.dumps({"id": 77, "from_number": "+8653288881234",
                                                              "num_pages": 1})}
        b = uuid.uuid4().hex
        body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields.items())
        body += (f'--{b}\r\nContent-Disposition: form-data; name="filename"; filename="f.pdf"\r\n'
                 "Content-Type: application/pdf\r\n\r\n").encode() + PDF + f"\r\n--{b}--\r\n".encode()
        check = f"{base}/hooks/sinch/fax" + "".join(k + fields[k] for k in sorted(fields))
        check += "filename" + hashlib.sha1(PDF).hexdigest()
        sig = hmac.new(b"sinch-token", check.encode(), hashlib.sha1).hexdigest()
        ctype = f"multipart/form-data; boundary={b}"
        assert h.post("/hooks/sinch/fax", content=body, headers={"content-type": ctype,
                                                                 "x-phaxio-signature": "0" * 40}).status_code == 403
        assert h.post("/hooks/sinch/fax", content=body, headers={"content-type": ctype,
                                                                 "x-phaxio-signature": sig}).status_code == 200
        # Telnyx SMS
        sms = json.dumps({"data": {"event_type": "message.received", "id": "evs1", "payload": {
            "id": "m1", "text": "打印机卡纸", "from": {"phone_number": "+8613800138000"}, "to": []}}},
            ensure_ascii=False).encode()
        assert h.post("/hooks/telnyx/sms", content=sms, headers={**telnyx(sms), "telnyx-timestamp": "1"}).status_code == 403
        assert h.post("/hooks/telnyx/sms", content=sms, headers=telnyx(sms)).status_code == 200
        # CTI: a missed call
        assert h.post("/hooks/cti/guess", data={"event": "hangup", "callId": "c1"}).status_code == 403
        h.post("/hooks/cti/cti-secret-token", data={"event": "newCall", "callId": "c1", "from": "+8613900139000",
                                                    "to": "+864008001234", "direction": "in"})
        r = h.post("/hooks/cti/cti-secret-token", data={"event": "hangup", "callId": "c1", "cause": "cancel"})
        assert r.json()["journaled"] == "missed"
        # the web form
        page = h.get("/form/service?lang=en")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        b = uuid.uuid4().hex
        form = {"csrf_token": token, "email": "alice@example.com", "serial": "SN-1", "description": "Fan noise"}
        body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in form.items()) + f"--{b}--\r\n".encode()
        hdr = {"content-type": f"multipart/form-data; boundary={b}"}
        forged = httpx.post(f"{base}/form/service", content=body, headers=hdr)  # no cookie
        assert forged.status_code == 403
        assert h.post("/form/service?lang=en", content=body, headers=hdr).status_code == 200

        def all_there():
            found = json.loads(cli(cfg, "tickets", "list", "--json"))
            return found if len(found) >= 5 else None

        tickets = wait_for(all_there, timeout=90, step=0.2)
    finally:
        assert stop(proc) == 0
        files.shutdown()
    assert sorted(t["channel"] for t in tickets) == ["fax", "fax", "phone", "sms", "web"]
    faxes = [json.loads(cli(cfg, "tickets", "show", t["ref"], "--json")) for t in tickets if t["channel"] == "fax"]
    assert all(len(f["attachments"]) == 1 for f in faxes)
