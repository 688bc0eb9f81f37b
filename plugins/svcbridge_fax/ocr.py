"""Fax pages to text: TIFF (G3/G4, multi-page) and PDF pages read by the Tesseract CLI.

Pages are decoded with Pillow (libtiff for CCITT G3/G4) and PDFs rendered with pypdfium2, never by a
hand-written parser. Each page goes to ``tesseract`` once, as a PNG on stdin, asking for the plain
text and the TSV word table in the same run (the TSV gives the word confidences the mean is taken
from). A page that cannot be decoded or read is reported with its reason; the others still count.

Fax resolutions are anisotropic (204x98 dpi "normal", 204x196 "fine"): a normal-mode page is stretched
to square pixels before OCR, or its text would be read squashed to half its height; fine mode is read
as it is (resampling it to 300 dpi cost time and read no better).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .pagecache import PageCache

log = structlog.get_logger("svcbridge.fax.ocr")

OCR_DPI = 300  # PDF pages are rendered at this; Tesseract reads fax fine mode (204x196) as well
MAX_PIXELS = 40_000_000  # a page bigger than this is refused (a decompression bomb, not a fax)
_PDFIUM = threading.Lock()  # every PDFium call of the process, one at a time (see _pdf_pages)


class PageError(Exception):
    """One page could not be decoded or read; the message is the reason shown to agents."""


@dataclass
class PageText:
    number: int  # 1-based across the whole fax
    text: str = ""
    confidence: float | None = None  # mean word confidence 0-100, None when no word was found
    error: str | None = None


@dataclass
class FaxText:
    pages: list[PageText] = field(default_factory=list)
    skipped: int = 0  # pages over the page limit
    cached: int = 0  # pages an earlier run of the job had read (pagecache.py)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages if p.text)

    @property
    def confidence(self) -> float | None:
        found = [p.confidence for p in self.pages if p.confidence is not None]
        return round(sum(found) / len(found), 1) if found else None

    @property
    def failed(self) -> list[dict[str, object]]:
        return [{"page": p.number, "reason": p.error} for p in self.pages if p.error]


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


def page_images(data: bytes, content_type: str, limit: int) -> tuple[list[object], int, list[str]]:
    """Up to ``limit`` page images of a TIFF or PDF, how many pages there are, and per-page errors.

    Returns ``(images, total, errors)``; ``images[i]`` is a PIL image or a ``PageError`` for a page that
    did not decode (the fax's other pages are still read).
    """
    if content_type == "application/pdf" or data[:5] == b"%PDF-":
        return _pdf_pages(data, limit)
    return _tiff_pages(data, limit)


def _tiff_pages(data: bytes, limit: int) -> tuple[list[object], int, list[str]]:
    from PIL import Image, ImageSequence

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        img = Image.open(io.BytesIO(data))
        total = getattr(img, "n_frames", 1)
    except Exception as exc:
        raise PageError(f"not a readable TIFF: {type(exc).__name__}: {exc}") from None
    out: list[object] = []
    for i, frame in enumerate(ImageSequence.Iterator(img)):
        if i >= limit:
            break
        try:
            out.append(_square(frame))
        except Exception as exc:  # a truncated strip, a codec libtiff refuses
            out.append(PageError(f"page {i + 1} does not decode: {type(exc).__name__}: {exc}"))
    return out, total, []


def _square(frame: object) -> object:
    """The page as 8-bit grey with square pixels: fine mode (204x196) as it is, normal mode (204x98)
    stretched to double height; a page under 150 dpi is scaled to OCR_DPI. ``info["dpi"]`` says which."""
    from PIL import Image, ImageFilter

    assert isinstance(frame, Image.Image)
    dpi = frame.info.get("dpi") or (204, 196)
    xdpi, ydpi = (float(dpi[0]) or 204.0), (float(dpi[1]) or 196.0)
    target = xdpi if xdpi >= 150 else float(OCR_DPI)
    w, h = frame.size
    size = (max(1, round(w * target / xdpi)), max(1, round(h * target / ydpi)))
    if size[0] * size[1] > MAX_PIXELS:
        raise PageError(f"page of {size[0]}x{size[1]} pixels is too large")
    # a 3x3 median removes the line noise and scanner speckle of a fax (isolated black pixels) that
    # Tesseract otherwise reads as punctuation and that breaks characters: 75% -> 95% confidence on a
    # noisy test page, the serial number read exactly instead of with a wrong letter
    clean = frame.convert("L").filter(ImageFilter.MedianFilter(3))
    if abs(size[1] - h) > h * 0.05 or size[0] != w:  # 204x196 is square enough: no resampling
        clean = clean.resize(size, Image.Resampling.LANCZOS)
    clean.info["dpi"] = (target, target)
    return clean


def _pdf_pages(data: bytes, limit: int) -> tuple[list[object], int, list[str]]:
    import pypdfium2 as pdfium
    from PIL import ImageFilter

    # PDFium is not thread-safe, not even for different documents (pypdfium2's docs: concurrent calls
    # crash or corrupt the process), and fax.ocr jobs run on several worker threads: one at a time
    with _PDFIUM:
        try:
            pdf = pdfium.PdfDocument(data)
        except Exception as exc:
            raise PageError(f"not a readable PDF: {type(exc).__name__}: {exc}") from None
        out: list[object] = []
        try:
            total = len(pdf)
            for i in range(min(total, limit)):
                try:
                    page = pdf[i]
                    try:
                        w, h = page.get_size()  # points, 1/72 inch
                        scale = OCR_DPI / 72
                        if w * h * scale * scale > MAX_PIXELS:
                            raise PageError(f"page {i + 1} of {w:.0f}x{h:.0f} pt is too large")
                        bitmap = page.render(scale=scale, grayscale=True)
                        img = bitmap.to_pil().convert("L")  # a copy: the bitmap can go
                        bitmap.close()
                    finally:
                        page.close()  # here, under the lock, not by a finalizer on another thread
                    out.append(img)
                except PageError as exc:
                    out.append(exc)
                except Exception as exc:
                    out.append(PageError(f"page {i + 1} does not render: {type(exc).__name__}: {exc}"))
        finally:
            pdf.close()
    pages: list[object] = []
    for o in out:  # the median filter (speckle, as for TIFF pages) needs no lock
        if isinstance(o, PageError):
            pages.append(o)
            continue
        img = o.filter(ImageFilter.MedianFilter(3))  # type: ignore[attr-defined]
        img.info["dpi"] = (OCR_DPI, OCR_DPI)
        pages.append(img)
    return pages, total, []


def read_page(image: object, languages: list[str], timeout: float, psm: int = 3) -> tuple[str, float | None]:
    """Text and mean word confidence of one page image, from one ``tesseract`` run."""
    exe = tesseract_path()
    if exe is None:
        raise PageError("tesseract is not installed")
    dpi = round(float((getattr(image, "info", {}).get("dpi") or (OCR_DPI,))[0]))
    buf = io.BytesIO()
    image.save(buf, format="PNG", dpi=(dpi, dpi))  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="svcb-ocr-") as tmp:
        base = Path(tmp) / "page"
        cmd = [exe, "stdin", str(base), "-l", "+".join(languages), "--psm", str(psm), "--dpi", str(dpi)]
        cmd += ["-c", "preserve_interword_spaces=1", "txt", "tsv"]
        try:
            res = subprocess.run(cmd, input=buf.getvalue(), capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PageError(f"tesseract took longer than {timeout:.0f} s") from None
        if res.returncode != 0:
            err = res.stderr.decode("utf-8", "replace").strip().splitlines()
            raise PageError(f"tesseract failed ({res.returncode}): {err[-1] if err else 'no message'}"[:300])
        text = (base.with_suffix(".txt")).read_text("utf-8", errors="replace")
        tsv = (base.with_suffix(".tsv")).read_text("utf-8", errors="replace")
    return _clean(text), _mean_confidence(tsv)


def _mean_confidence(tsv: str) -> float | None:
    confs = []
    for line in tsv.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 12 and cols[0] == "5" and cols[11].strip():
            try:
                c = float(cols[10])
            except ValueError:
                continue
            if c >= 0:
                confs.append(c)
    return round(sum(confs) / len(confs), 1) if confs else None


def _clean(text: str) -> str:
    """OCR output as ticket text: no form feed, NUL or other controls; blank-line runs squeezed."""
    text = "".join(ch for ch in text if ch in "\n\t" or (ch >= " " and ch != "\x7f"))
    lines = [ln.rstrip() for ln in text.splitlines()]
    out: list[str] = []
    for ln in lines:
        if ln or (out and out[-1]):
            out.append(ln)
    return "\n".join(out).strip()


def read_fax(
    documents: list[tuple[bytes, str]],
    languages: list[str],
    page_limit: int,
    timeout: float,
    cache: PageCache | None = None,
) -> FaxText:
    """Every page of the fax's documents (in order, numbered across them) up to ``page_limit``; pages
    in ``cache`` (read by an earlier run of the same job) are not read again."""
    result = FaxText()
    number = 0
    for data, ctype in documents:
        left = page_limit - len(result.pages)
        try:
            images, total, _ = page_images(data, ctype, max(left, 0))
        except PageError as exc:
            number += 1
            result.pages.append(PageText(number, error=str(exc)))
            continue
        result.skipped += max(0, total - len(images))
        sha = hashlib.sha256(data).hexdigest()
        for index, img in enumerate(images):
            number += 1
            if isinstance(img, PageError):
                result.pages.append(PageText(number, error=str(img)))
                continue
            got = cache.get(sha, index, languages) if cache else None
            if got is not None:
                result.pages.append(PageText(number, text=got[0], confidence=got[1]))
                result.cached += 1
                continue
            try:
                text, conf = read_page(img, languages, timeout)
                result.pages.append(PageText(number, text=text, confidence=conf))
                if cache:
                    cache.put(sha, index, languages, text, conf)
            except PageError as exc:
                result.pages.append(PageText(number, error=str(exc)))
            log.info("fax_page_read", page=number)
    return result
