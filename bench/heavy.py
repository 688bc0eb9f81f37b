"""The attachment-heavy corpus (issue 19): after-sales mail as it is, seeded and reproducible.

Scanned faxes as multi-page TIFFs (CCITT G4, as fax servers write them), photos of broken units
(JPEG), PDF invoices and reports (deflate streams), zipped logs up to 5 MB, Chinese and English text
(UTF-8, GBK, Big5; base64 and quoted-printable bodies), the same photo resent by the same customer on a
later mail, and the e-mail tests' hard cases (mislabelled charsets, TNEF, DSNs, auto-replies) mixed in.
About 60 KB a mail on average. Attachment bytes come from a small set of rendered templates per kind
with seeded random content appended inside the container, so generating 2,000 mails takes seconds while
no two files (but the deliberate resends) share bytes.
"""

from __future__ import annotations

import email.message
import email.policy
import io
import random
import zipfile
import zlib
from typing import Any

TEXTS = [
    ("打印机卡纸，错误代码 E-{n}，请尽快安排工程师上门。序列号 SN{n:06d}。", "utf-8"),
    ("設備無法開機，電源指示燈閃爍。機身編號 TW{n:06d}，請協助處理。", "big5"),
    ("传真机收到的文件全黑，附件是扫描件。客户编号 C{n:05d}。", "gbk"),
    ("The unit reboots every few minutes, logs attached. Serial SN{n:06d}.", "utf-8"),
    ("发票和保修卡见附件，请确认是否在保修期内。订单号 PO{n:07d}。", "utf-8"),
]


def _tiff(rng: random.Random, pages: int) -> bytes:
    from PIL import Image

    frames = []
    for _ in range(pages):
        img = Image.new("1", (1728, 300), 1)  # a fax line width; short pages keep it quick
        px = img.load()
        assert px is not None
        for _ in range(4000):  # "text": scattered black runs
            x, y = rng.randrange(1700), rng.randrange(300)
            for d in range(rng.randrange(2, 24)):
                px[min(x + d, 1727), y] = 0
        frames.append(img)
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", compression="group4", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _jpeg(rng: random.Random, size: int) -> bytes:
    # a JPEG header and body of noise: what a photo costs, without rendering one per mail
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return head + rng.randbytes(max(size - len(head) - 2, 0)) + b"\xff\xd9"


def _pdf(rng: random.Random, size: int) -> bytes:
    stream = zlib.compress(rng.randbytes(size), 1)[:size]  # incompressible, as a scanned page is
    body = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>"
        b"endobj\n3 0 obj<</Type/Page/Parent 2 0 R/Contents 4 0 R>>endobj\n4 0 obj<</Length "
        + str(len(stream)).encode()
        + b"/Filter/FlateDecode>>stream\n"
        + stream
        + b"\nendstream endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    return body


def _zip(rng: random.Random, size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        lines = "\n".join(
            f"2026-11-{rng.randrange(1, 30):02d} ERR code={rng.randrange(9999)}" for _ in range(2000)
        )
        z.writestr("system.log", lines)
        z.writestr("core.bin", rng.randbytes(size), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def _mail(i: int, rng: random.Random, files: list[tuple[str, str, bytes]]) -> bytes:
    text, charset = TEXTS[i % len(TEXTS)]
    m = email.message.EmailMessage()
    m["From"] = f"客户{i % 97} <site{i % 97}@customer{i % 13}.example>"
    m["To"] = "support@bench.test"
    m["Subject"] = f"[{['报修', '維修', 'Fault', '发票', '传真'][i % 5]}] {text.format(n=i)[:30]}"
    m["Message-ID"] = f"<heavy-{i}@customer.example>"
    m["Date"] = f"Mon, {1 + i % 28} Nov 2026 10:{i % 60:02d}:00 +0800"
    body = (text.format(n=i) + "\n") * rng.randrange(1, 6)
    cte = ["base64", "quoted-printable", "8bit"][i % 3]
    m.set_content(body, charset=charset if charset != "big5" or i % 2 else "utf-8", cte=cte)
    for name, ctype, data in files:
        maintype, subtype = ctype.split("/")
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return m.as_bytes(policy=email.policy.SMTP)


def corpus(n: int, seed: int = 19) -> list[bytes]:
    """N heavy mails; about a tenth are the e-mail tests' hard cases."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from corpus import hard_cases

    rng = random.Random(seed)
    tiffs = [_tiff(random.Random(seed + k), pages) for k, pages in enumerate((1, 2, 3, 4))]
    hard = [c.raw for c in hard_cases()]
    last_photo: dict[int, bytes] = {}
    out: list[bytes] = []
    for i in range(n):
        roll = rng.random()
        files: list[tuple[str, str, Any]] = []
        if roll < 0.10:
            out.append(hard[i % len(hard)].replace(b"Message-ID: <", f"Message-ID: <h{i}-".encode(), 1))
            continue
        if roll < 0.40:
            pass  # text only
        elif roll < 0.60:
            customer = i % 97
            if customer in last_photo and rng.random() < 0.25:  # the same photo again, on a new mail
                photo = last_photo[customer]
            else:
                photo = last_photo[customer] = _jpeg(rng, int(rng.lognormvariate(10.3, 0.5)))
            files.append((f"故障照片{i}.jpg", "image/jpeg", photo))
        elif roll < 0.75:
            t = tiffs[rng.randrange(len(tiffs))]
            # the template with seeded bytes after its last IFD: distinct files, valid TIFF reader-wise
            files.append((f"fax{i}.tif", "image/tiff", t + rng.randbytes(rng.randrange(2000, 30000))))
        elif roll < 0.92:
            files.append((f"发票{i}.pdf", "application/pdf", _pdf(rng, int(rng.lognormvariate(10.4, 0.6)))))
        elif roll < 0.995:
            files.append((f"photo{i}a.jpg", "image/jpeg", _jpeg(rng, int(rng.lognormvariate(10.0, 0.4)))))
            files.append((f"report{i}.pdf", "application/pdf", _pdf(rng, int(rng.lognormvariate(10.0, 0.5)))))
        else:
            files.append((f"logs{i}.zip", "application/zip", _zip(rng, rng.randrange(1, 5) * 1024 * 1024)))
        out.append(_mail(i, rng, files))
    return out


if __name__ == "__main__":
    import statistics
    import time

    t0 = time.perf_counter()
    mails = corpus(2000)
    sizes = [len(m) for m in mails]
    print(
        f"{len(mails)} mails, {sum(sizes) / 1e6:.1f} MB, mean {statistics.mean(sizes) / 1e3:.1f} KB, "
        f"max {max(sizes) / 1e6:.1f} MB, in {time.perf_counter() - t0:.1f} s"
    )
