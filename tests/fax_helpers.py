"""Faxes made by the tests, and a private HylaFAX spool whose real ``faxrcvd`` mails them into a Maildir.

``fax_page(lines)`` renders text (English and Chinese, Noto CJK or WenQuanYi) on an A4 fax page at fine
resolution (204x196 dpi), skews it by 1-2 degrees and adds speckle noise as a real scan does;
``save_tiff(pages, "group3"|"group4")`` writes a multi-page CCITT TIFF, ``save_pdf`` a PDF of the pages.

``HylaSpool`` copies Debian ``hylafax-server``'s scripts into a temporary spool (never the system one)
with a ``sendmail`` shim that writes each mail into ``tmp/`` of a Maildir and renames it into ``new/``,
and runs ``bin/faxrcvd`` on a TIFF exactly as ``faxgetty`` would after a receive.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
from pathlib import Path

from conftest import require_binary, require_server

FONTS = [
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
]
HYLAFAX_BIN = Path("/var/spool/hylafax/bin")


def cjk_font(size: int):
    from PIL import ImageFont

    for path in FONTS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    require_server("a CJK font (fonts-noto-cjk or fonts-wqy-zenhei)", False)
    raise AssertionError("unreachable")


def fax_page(lines: list[str], skew: float = 1.5, noise: float = 0.002, seed: int = 1, size: int = 34):
    """One fax page (1-bit, 1728 px wide, fine mode) with ``lines`` of text, skewed and speckled."""
    from PIL import Image, ImageDraw

    w, h = 1728, 2292  # A4 at 204x196 dpi
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    font = cjk_font(size)
    y = 160
    for line in lines:
        draw.text((140, y), line, font=font, fill=0)
        y += int(size * 1.9)
    img = img.rotate(skew, resample=Image.Resampling.BICUBIC, fillcolor=255, expand=False)
    rnd = random.Random(seed)
    px = img.load()
    for _ in range(int(w * h * noise)):
        px[rnd.randrange(w), rnd.randrange(h)] = 0
    out = img.convert("1")
    out.info["dpi"] = (204, 196)
    return out


def save_tiff(pages: list, compression: str) -> bytes:
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", compression=compression, dpi=(204, 196), save_all=True,
                  append_images=pages[1:])
    return buf.getvalue()


def save_pdf(pages: list) -> bytes:
    buf = io.BytesIO()
    pages[0].save(buf, format="PDF", resolution=204.0, save_all=True, append_images=pages[1:])
    return buf.getvalue()


class HylaSpool:
    """A private HylaFAX spool; ``receive(tiff, tsi)`` runs the real faxrcvd and returns its exit code."""

    def __init__(self, root: Path, maildir: Path, filetype: str = "pdf", sendto: str = "support@bridge.test"):
        require_server("HylaFAX faxrcvd (Debian hylafax-server)", (HYLAFAX_BIN / "faxrcvd").exists())
        for tool in ("faxinfo", "tiff2pdf", "tiffset"):
            require_binary(tool)
        self.root, self.maildir = root, maildir
        for sub in ("etc", "recvq", "log", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copytree(HYLAFAX_BIN, root / "bin")
        shutil.copy("/etc/hylafax/setup.cache", root / "etc" / "setup.cache")
        shutil.copytree("/etc/hylafax/templates", root / "etc" / "templates")
        shim = root / "sendmail-shim"
        # a mail to FaxMaster (the admin notice) is dropped; the fax itself goes into the Maildir
        shim.write_text(
            "#!/bin/sh\n"
            f'n="$(date +%s%N).$$.shim"; t="{maildir}/tmp/$n"\n'
            'cat > "$t"\n'
            f'if grep -qi "^To: FaxMaster" "$t"; then rm -f "$t"; else mv "$t" "{maildir}/new/$n"; fi\n'
        )
        shim.chmod(0o755)
        cache = (root / "etc" / "setup.cache").read_text()
        lines = [f"SENDMAIL='{shim}'" if ln.startswith("SENDMAIL=") else ln for ln in cache.splitlines()]
        (root / "etc" / "setup.cache").write_text("\n".join(lines) + "\n")
        (root / "etc" / "FaxDispatch").write_text(f"SENDTO={sendto}\nFILETYPE={filetype}\n")
        self.n = 0

    def receive(self, tiff: bytes, tsi: str, caller_id: str = "") -> None:
        self.n += 1
        name = f"recvq/fax{self.n:09d}.tif"
        (self.root / name).write_bytes(tiff)
        subprocess.run(["tiffset", "-s", "270", tsi, str(self.root / name)], check=True)
        env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        args = ["bash", "bin/faxrcvd", name, "ttyS0", f"{self.n:09d}", ""]
        if caller_id:
            args.append(caller_id)
        res = subprocess.run(args, cwd=self.root, env=env, capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr.decode(errors="replace")
