"""The fax channel (issue 17): real HylaFAX ``faxrcvd`` mails into a Maildir, a ``fax`` ticket with the
sender's E.164 number and customer, and Tesseract OCR of the pages as a durable job afterwards.

Faxes are generated here (fax_helpers.py): English and Chinese text with a serial number and a phone
number, Noto CJK, skewed 1-2 degrees with noise, saved as G3 and G4 TIFF and as PDF. Under CI=true a
missing HylaFAX, Tesseract or CJK font fails these tests instead of skipping them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import eml, require_binary, require_server
from fax_helpers import HylaSpool, fax_page, save_pdf, save_tiff
from svcbridge_fax.detect import BUILTIN_RULES, FaxRule, detect, e164

CUSTOMERS = {"directory": [
    {"name": "Qingdao Port Hospital", "phones": ["+8653288881234"], "language": "zh-CN"},
    {"name": "ACME Taipei", "phones": ["+886227208889"], "language": "zh-TW"},
]}
SERIAL_EN, SERIAL_ZH = "SN: KX7-4410-QM93", "SN: HB2-9087-TZ51"
PAGES_EN = ["Fault report / Service request", f"Serial number {SERIAL_EN}",
            "Printer jams on every page, error E-302.", "Call back: +86 532 8888 1234"]
PAGES_ZH = ["故障报修单", f"序列号 {SERIAL_ZH}", "打印机每页都卡纸，显示错误 E-302。", "回电：0532-8888-1234"]


def fax_settings(**ocr: Any) -> dict[str, Any]:
    return {"plugins": {"fax": {"default_region": "CN", "ocr": {"languages": ["eng", "chi_sim"], **ocr}},
                        "customers": CUSTOMERS}}


@pytest.fixture
def tesseract() -> str:
    return require_binary("tesseract")


# ------------------------------------------------------------------------------ detection, unit level
@pytest.mark.parametrize(("text", "region", "want"), [
    ("+86 532 8888 1234", None, "+8653288881234"),
    ("0532-8888-1234", "CN", "+8653288881234"),
    ("(02) 2720-8889", "TW", "+886227208889"),
    ("+1 650 555 0100", "CN", "+16505550100"),
    ("ACME FAX", "CN", None),
    ("anonymous", "CN", None),
    ("1234", "CN", None),
    ("", "CN", None),
])
def test_fax_numbers_are_normalised_to_e164(text, region, want) -> None:
    assert e164(text, region) == want


@pytest.mark.parametrize(("sender", "subject", "body", "types", "rule", "number"), [
    ("faxmaster", 'Fax received from "+86 532 8888 1234"', "  Sender: +86 532 8888 1234\n Pages: 2\n", [],
     "hylafax", "+8653288881234"),
    # the caller id of the line wins over the station id the remote machine announces
    ("faxmaster@fax.local", 'Fax received from "ACME"', "Sender: ACME\nCallID1: 0532 8888 1234\n", [],
     "hylafax", "+8653288881234"),
    ("message@inbound.efax.com", 'eFax message from "022 2720 8889" - 2 page(s)', "", ["application/pdf"],
     "efax", "+862227208889"),
    ("service@ringcentral.com", "New Fax Message from +886 2 2720 8889 on 12/03/2026", "", ["application/pdf"],
     "ringcentral", "+886227208889"),
    ("fax2mail@carrier.cn", "传真来自：0755-1234-5678", "", ["image/tiff"], "fax2mail", "+8675512345678"),
    # a station id is free text the remote machine sends: a junk one is no number (it was +8600000)
    ("faxmaster", 'Fax received from "HP LASERJET 00000"', "Sender: HP LASERJET 00000\n", [], "hylafax", None),
    ("faxmaster", 'Fax received from "ACME 12345"', "Sender: ACME 12345\n", [], "hylafax", None),
    ("faxmaster", 'Fax received from "ACME 0755 2345 6789"', "Sender: ACME 0755 2345 6789\n", [], "hylafax",
     "+8675523456789"),
])
def test_builtin_rules_find_the_fax_number(sender, subject, body, types, rule, number) -> None:
    from svcbridge import Attachment

    atts = [Attachment.from_bytes(b"x", original_name="f", content_type=t) for t in types]
    info = detect(BUILTIN_RULES, sender, subject, body, atts, "CN")
    assert info is not None and (info.rule, info.number) == (rule, number)


def test_a_rule_needs_every_condition_it_gives_and_at_least_one() -> None:
    from svcbridge import Attachment

    rule = FaxRule(name="gw", senders=["*@fax.example.cn"], attachment_types=["application/pdf"])
    pdf = [Attachment.from_bytes(b"%PDF", original_name="a.pdf", content_type="application/pdf")]
    assert rule.matches("gw@fax.example.cn", "anything", pdf)
    assert not rule.matches("gw@fax.example.cn", "anything", [])  # a plain mail from the gateway host
    assert not rule.matches("alice@example.cn", "anything", pdf)  # a customer's mail with a PDF
    with pytest.raises(ValueError):
        FaxRule(name="all")
    with pytest.raises(ValueError):
        FaxRule(name="bad", subject="(unclosed")
    # an ordinary mail is no fax under the built-in rules
    assert detect(BUILTIN_RULES, "alice@example.com", "Printer jams", "Pages: 2", pdf, "CN") is None


# ------------------------------------------------------------------------------ real HylaFAX faxrcvd
@pytest.mark.parametrize(("filetype", "compression"), [("pdf", "group3"), ("tif", "group4")])
async def test_faxrcvd_mail_becomes_a_fax_ticket_of_the_customer(make_app, tmp_path: Path, filetype,
                                                                    compression) -> None:
    spool = HylaSpool(tmp_path / "hylafax", tmp_path / "maildir", filetype=filetype)
    tiff = save_tiff([fax_page(PAGES_ZH, seed=2), fax_page(PAGES_EN, seed=3, skew=-1.2)], compression)
    spool.receive(tiff, tsi="QDPH FAX", caller_id="0532 8888 1234")
    app = make_app(**fax_settings(enabled=False))
    res = await app.run_once()
    assert res["processed"] == 1
    (t,) = app.store.list_tickets()
    assert t.channel == "fax" and t.contact.phone == "+8653288881234" and t.contact.email is None
    assert t.customer == "Qingdao Port Hospital" and t.language == "zh-CN"
    assert t.labels["fax"]["rule"] == "hylafax" and t.labels["fax"]["pages"] == 2
    assert t.labels["fax"]["tsi"] == "QDPH FAX" and t.labels["fax"]["comm_id"] == "000000001"
    assert t.subject == "Fax received from +8653288881234, 2 page(s)"
    full = app.store.get_ticket(t.ref)
    kinds = {a.content_type for a in full.attachments}
    assert kinds == {"application/pdf" if filetype == "pdf" else "image/tiff"}  # the original pages stay
    # the fax server's address is never answered: the acknowledgement has no mail to go to
    assert not list((tmp_path / "outgoing").glob("*.eml")) if (tmp_path / "outgoing").exists() else True


async def test_an_ordinary_mail_stays_a_mail_ticket(make_app, tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / "m1").write_bytes(eml(subject="Fax machine broken", body="Pages: 3\nSender: me"))
    app = make_app(**fax_settings())
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.channel == "email" and "fax" not in t.labels
    assert app.work.jobs.list() == []


# ------------------------------------------------------------------------------ OCR as a durable job
def _norm(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("fmt", ["group3", "group4", "pdf"])
async def test_ocr_job_puts_the_exact_serial_on_the_ticket(make_app, tmp_path: Path, tesseract, fmt) -> None:
    pages = [fax_page(PAGES_EN, seed=5, skew=1.7), fax_page(PAGES_ZH, seed=6, skew=-1.3)]
    data = save_pdf(pages) if fmt == "pdf" else save_tiff(pages, fmt)
    spool = HylaSpool(tmp_path / "hylafax", tmp_path / "maildir", filetype="tif")
    if fmt == "pdf":  # a fax service's PDF, through the same mail path: HylaFAX sends TIFF, so build it here
        spool = None
        _drop_service_mail(tmp_path / "maildir", data)
    else:
        spool.receive(data, tsi="+86 532 8888 1234")
    app = make_app(**fax_settings())
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.channel == "fax" and t.customer == "Qingdao Port Hospital"
    (job,) = app.work.jobs.list()
    assert job["kind"] == "fax.ocr" and job["status"] == "done"
    t = app.store.get_ticket(t.ref)
    text = t.labels["ocr_text"]
    assert SERIAL_EN in text, text
    assert _norm(SERIAL_ZH) in _norm(text), text
    assert "序列号" in _norm(text) and "+86 532 8888 1234" in text
    ocr = t.labels["ocr"]
    assert ocr["pages_read"] == 2 and ocr["pages_failed"] == [] and 50 < ocr["confidence"] <= 100
    (ev,) = [e for e in t.events if e.type == "ticket_updated" and e.actor == "fax"]
    assert ev.data["note"].startswith("[OCR of the fax, 2 page(s), mean confidence")
    # the original pages are still attached
    assert len(t.attachments) == 1


def _drop_service_mail(maildir: Path, pdf: bytes) -> None:
    import base64

    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    b64 = base64.encodebytes(pdf).decode()
    mail = (
        "From: eFax <message@inbound.efax.com>\r\nTo: support@bridge.test\r\n"
        'Subject: eFax message from "+86 532 8888 1234" - 2 page(s)\r\nMessage-ID: <efax1@efax.com>\r\n'
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nYou have received a 2 page fax.\r\n"
        "--B\r\nContent-Type: application/pdf; name=fax.pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=fax.pdf\r\n\r\n" + b64 + "--B--\r\n"
    )
    (maildir / "tmp" / "efax1").write_text(mail)
    (maildir / "tmp" / "efax1").rename(maildir / "new" / "efax1")


async def test_a_page_that_fails_is_an_event_with_its_reason(make_app, tmp_path: Path, tesseract) -> None:
    good = save_tiff([fax_page(PAGES_EN, seed=7)], "group4")
    bad = b"%PDF-1.4\n" + b"\x00garbage" * 50
    mail = _two_docs(good, bad)
    maildir = tmp_path / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / "f2").write_bytes(mail)
    app = make_app(**fax_settings(languages=["eng"]))
    await app.run_once()
    (t,) = app.store.list_tickets()
    t = app.store.get_ticket(t.ref)
    assert SERIAL_EN in t.labels["ocr_text"]
    (failed,) = t.labels["ocr"]["pages_failed"]
    assert failed["page"] == 2 and "not a readable PDF" in failed["reason"]
    (ev,) = [e for e in t.events if e.type == "ticket_updated" and e.actor == "fax"]
    assert "page 2 could not be read: not a readable PDF" in ev.data["note"]


def _two_docs(tiff: bytes, pdf: bytes) -> bytes:
    import base64

    parts = []
    for name, ctype, data in (("p1.tif", "image/tiff", tiff), ("p2.pdf", "application/pdf", pdf)):
        parts.append(f"--B\r\nContent-Type: {ctype}; name={name}\r\nContent-Transfer-Encoding: base64\r\n"
                     f"Content-Disposition: attachment; filename={name}\r\n\r\n" + base64.encodebytes(data).decode())
    return (
        "From: HylaFAX Agent <FaxMaster>\r\nTo: support@bridge.test\r\n"
        'Subject: Fax received from "+86 532 8888 1234"\r\nMessage-ID: <f2@fax>\r\n'
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\n  Sender: +86 532 8888 1234\r\n  Pages: 2\r\n"
        + "".join(parts) + "--B--\r\n"
    ).encode()


def test_fax_tools_present_under_ci() -> None:
    """The packages .ci/run installs: missing ones fail here under CI=true."""
    for tool in ("tesseract", "faxinfo", "tiff2pdf"):
        require_binary(tool)
    require_server("HylaFAX faxrcvd", Path("/var/spool/hylafax/bin/faxrcvd").exists())
    langs = __import__("subprocess").run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout
    for lang in ("eng", "chi_sim", "chi_tra"):
        require_server(f"tesseract language {lang}", lang in langs.split())
    assert shutil.which("tesseract")


def test_normal_mode_pages_are_stretched_before_ocr(tesseract) -> None:
    """A fax in normal mode (204x98 dpi, half the lines) is read at square pixels, not squashed."""
    import io

    from PIL import Image

    from svcbridge_fax import ocr

    page = fax_page(PAGES_EN, seed=11, skew=1.0, size=40).convert("L")
    normal = page.resize((page.width, page.height // 2), Image.Resampling.BOX).convert("1")
    buf = io.BytesIO()
    normal.save(buf, format="TIFF", compression="group3", dpi=(204, 98))
    images, total, _ = ocr.page_images(buf.getvalue(), "image/tiff", 5)
    w, h = images[0].size  # 1146 lines at 98 dpi -> about 2386 at 204 dpi
    assert total == 1 and w == 1728 and 2250 < h < 2400 and images[0].info["dpi"] == (204.0, 204.0)
    result = ocr.read_fax([(buf.getvalue(), "image/tiff")], ["eng"], 5, 60)
    assert SERIAL_EN in result.text, result.text


async def test_later_stages_get_the_ocr_text_through_then_jobs(make_app, tmp_path: Path, tesseract) -> None:
    """The OCR text is a label on the ticket; a job kind named in then_jobs runs after it is stored
    (serial extraction on fax text, issue 14) and sees it."""
    from helpdesk_helpers import plugin
    from svcbridge import JobKind, TicketChange
    from svcbridge.plugins import make_plugin_manager

    seen: list[str] = []

    def after_ocr(job):
        seen.append(job.ticket.labels["ocr_text"])
        found = "KX7-4410-QM93" if "KX7-4410-QM93" in job.ticket.labels["ocr_text"] else None
        return TicketChange(labels={"serial_from_fax": found})

    extra = plugin("serials", register_job_kinds=lambda register: register(JobKind("serials.rescan", after_ocr)))
    maildir = tmp_path / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / "f1").write_bytes(_two_docs(save_tiff([fax_page(PAGES_EN, seed=7)], "group4"), b"%PDF-1.4"))
    app = make_app(pm=make_plugin_manager(extra=(extra,)), **fax_settings(languages=["eng"], then_jobs=["serials.rescan"]))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert len(seen) == 1 and SERIAL_EN in seen[0]
    assert app.store.get_ticket(t.ref).labels["serial_from_fax"] == "KX7-4410-QM93"
    assert sorted(j["kind"] for j in app.work.jobs.list()) == ["fax.ocr", "serials.rescan"]


def test_the_page_limit_reads_the_first_pages_and_counts_the_rest(tesseract) -> None:
    from svcbridge_fax import ocr

    tiff = save_tiff([fax_page(PAGES_EN, seed=s) for s in range(3)], "group4")
    result = ocr.read_fax([(tiff, "image/tiff"), (tiff, "image/tiff")], ["eng"], 2, 60)
    assert [p.number for p in result.pages] == [1, 2] and result.skipped == 4 and not result.failed
    assert SERIAL_EN in result.pages[0].text


def test_pdf_pages_render_the_same_on_many_worker_threads() -> None:
    """fax.ocr jobs run on several worker threads, and PDFium is not thread-safe (pypdfium2: concurrent
    calls crash or corrupt the process, even on different documents): PDF pages rendered from eight
    threads at once are exactly the pages rendered one by one. (A guard: the race did not show in 35
    rounds here without the lock; the lock follows pypdfium2's documented rule.)"""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from svcbridge_fax import ocr

    pdfs = [save_pdf([fax_page([f"Serial SN: QA{n}-2233-XY77", "Paper jam"], seed=n) for _ in range(2)])
            for n in range(4)]

    def digest(data: bytes) -> list[str]:
        images, total, _ = ocr.page_images(data, "application/pdf", 10)
        assert total == 2 and not any(isinstance(i, ocr.PageError) for i in images)
        return [hashlib.sha256(i.tobytes()).hexdigest() for i in images]

    want = [digest(p) for p in pdfs]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(digest, pdfs * 2)) == want * 2
