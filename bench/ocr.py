"""OCR of fax pages (issue 17): ``python -m bench ocr [--n PAGES]``.

1. Pages per second of svcbridge's OCR (``svcbridge_fax.ocr.read_fax``: decode the G4 TIFF, square the
   fax pixels to 300 dpi, despeckle, one ``tesseract`` run per page for text and word confidences)
   against the bare ``tesseract`` CLI on the same pages (each page as its own G4 TIFF, the same
   languages), and the ratio. Pages: English and Chinese fault reports, skewed and speckled, as the tests
   make them.
2. Intake is not held up by OCR: a real daemon with a 20-page fax whose OCR job is running, and an
   ordinary mail dropped after it: seconds from the drop to its ticket, against the same mail with no
   fax queued (target: unchanged, within 1 s).
"""

from __future__ import annotations

import base64
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import daemon_env, report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
LANGS = ["chi_sim", "eng"]
EN = [
    "Fault report / Service request",
    "Serial number SN: KX7-4410-QM93",
    "Printer jams on every page, error E-302.",
    "Call back: +86 532 8888 1234",
]
ZH = ["故障报修单", "序列号 SN: HB2-9087-TZ51", "打印机每页都卡纸，显示错误 E-302。", "回电：0532-8888-1234"]


def _pages(n: int) -> list[Any]:
    from fax_helpers import fax_page

    return [fax_page(EN if i % 2 == 0 else ZH, seed=i, skew=1.5 if i % 2 else -1.2) for i in range(n)]


def _ocr_rate(n: int, tmp: Path) -> dict[str, float]:
    from fax_helpers import save_tiff
    from svcbridge_fax import ocr

    pages = _pages(n)
    tiff = save_tiff(pages, "group4")
    t0 = time.perf_counter()
    result = ocr.read_fax([(tiff, "image/tiff")], LANGS, n, 300)
    ours = time.perf_counter() - t0
    assert len(result.pages) == n and not result.failed, result.failed
    files = []
    for i, p in enumerate(pages):
        f = tmp / f"page{i}.tif"
        f.write_bytes(save_tiff([p], "group4"))
        files.append(f)
    t0 = time.perf_counter()
    for f in files:
        subprocess.run(
            ["tesseract", str(f), "stdout", "-l", "+".join(LANGS)], capture_output=True, check=True
        )
    bare = time.perf_counter() - t0
    return {
        "pages": n,
        "ours_s": ours,
        "bare_s": bare,
        "ours_pps": n / ours,
        "bare_pps": n / bare,
        "ratio": (n / ours) / (n / bare),
        "confidence": result.confidence or 0.0,
    }


def _fax_mail(tiff: bytes) -> bytes:
    b64 = base64.encodebytes(tiff).decode()
    return (
        "From: HylaFAX Agent <FaxMaster>\r\nTo: support@bench.test\r\n"
        'Subject: Fax received from "+86 532 8888 1234"\r\nMessage-ID: <bigfax@fax>\r\nMIME-Version: 1.0\r\n'
        "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        "  Sender: +86 532 8888 1234\r\n  Pages: 20\r\n--B\r\nContent-Type: image/tiff; name=fax.tif\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + b64 + "--B--\r\n"
    ).encode()


def _drop(maildir: Path, name: str, data: bytes) -> float:
    (maildir / "tmp" / name).write_bytes(data)
    at = time.time()
    (maildir / "tmp" / name).rename(maildir / "new" / name)
    return at


def _ticket_after(db: Path, subject: str, since: float, timeout: float = 60) -> float:
    con = sqlite3.connect(db, timeout=30)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            row = con.execute(
                "SELECT j.processed_at FROM tickets t JOIN journal j ON j.ticket_id = t.id "
                "WHERE t.subject = ? AND j.status = 'processed'",
                (subject,),
            ).fetchone()
            if row and row[0]:
                at = datetime.fromisoformat(row[0])
                return (at.replace(tzinfo=UTC) if at.tzinfo is None else at).timestamp() - since
            time.sleep(0.05)
    finally:
        con.close()
    raise TimeoutError(f"no ticket for {subject!r} within {timeout} s")


def _job_running(db: Path) -> bool:
    con = sqlite3.connect(db, timeout=30)
    try:
        return bool(
            con.execute("SELECT 1 FROM jobs WHERE kind = 'fax.ocr' AND claimed_by IS NOT NULL").fetchone()
        )
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def _intake(tmp: Path) -> dict[str, float]:
    from fax_helpers import save_tiff

    maildir = tmp / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    cfg = tmp / "svcbridge.toml"
    cfg.write_text(
        f"""data_dir = "{tmp}/var"
[http]
enabled = false
[log]
level = "error"
[plugins.email]
from_address = "support@bench.test"
[plugins.email.maildir]
path = "{maildir}"
interval = 0.1
settle = 0
[plugins.email.outbound]
spool_dir = "{tmp}/outgoing"
[plugins.fax]
default_region = "CN"
[plugins.fax.ocr]
languages = {LANGS!r}
page_limit = 20
""".replace("'", '"')
    )
    env = daemon_env()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "svcbridge"), "--config", str(cfg), "run"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = tmp / "var" / "svcbridge.db"
    mail = "From: alice@example.com\r\nSubject: {s}\r\nMessage-ID: <{s}@x>\r\n\r\nThe copier is down.\r\n"
    try:
        while not db.exists():
            time.sleep(0.1)
        time.sleep(1.5)
        base = [
            _ticket_after(
                db, f"baseline {i}", _drop(maildir, f"b{i}", mail.format(s=f"baseline {i}").encode())
            )
            for i in range(3)
        ]
        _drop(maildir, "fax", _fax_mail(save_tiff(_pages(20), "group4")))
        deadline = time.monotonic() + 60
        while not _job_running(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        busy = [
            _ticket_after(db, f"during {i}", _drop(maildir, f"d{i}", mail.format(s=f"during {i}").encode()))
            for i in range(3)
        ]
        still_running = _job_running(db)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"baseline_s": max(base), "with_fax_s": max(busy), "ocr_still_running": float(still_running)}


def run(args: Any) -> dict[str, Any]:
    if shutil.which("tesseract") is None:
        raise RuntimeError("tesseract is not installed (Debian tesseract-ocr, -chi-sim, -eng)")
    n = args.n or 6
    tmp = Path(tempfile.mkdtemp(prefix="svcb-ocr-"))
    try:
        rate = _ocr_rate(n, tmp)
        intake = _intake(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        ("pages", n),
        ("svcbridge OCR pages/s", rate["ours_pps"]),
        ("bare tesseract CLI pages/s", rate["bare_pps"]),
        ("ratio (svcbridge / bare)", rate["ratio"]),
        ("mean word confidence %", rate["confidence"]),
        ("mail -> ticket, idle (s, worst of 3)", intake["baseline_s"]),
        ("mail -> ticket, 20-page fax in OCR (s, worst of 3; target <= 1)", intake["with_fax_s"]),
        ("OCR job still running at the end", bool(intake["ocr_still_running"])),
    ]
    return report("ocr", rows, {**rate, **intake, "languages": LANGS, "target_s": 1.0})
