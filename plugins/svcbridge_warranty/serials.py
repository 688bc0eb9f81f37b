"""Serial and model numbers in customer text: label words and per-vendor patterns, false positives out.

Two ways a serial shows up in a mail, a fax's OCR text or an attachment's name:

- after a **label word**: 序列号 / 序列號 / 机身编号 / 機身編號 / S/N / SN / Serial No. / Service Tag /
  服务编码 ...
  ("序列号：7XK2M9P", "S/N FOC2231X0AB", "serial SN12345"). Strong evidence; the token may be any
  mix of letters and digits, even digits only, as long as it is no phone number or date.
- in the open, matching a **vendor's pattern**: a Dell service tag (7 letters and digits), a Lenovo
  serial (8, starting PF/PC/R9/MJ/...), an HP serial (10, a country/plant prefix such as CND, 5CG),
  a Cisco serial (11: FOC/FDO/FCW/SAL/JAE/... + year and week + 4). Weak evidence: only tokens that mix
  letters and digits, never a token right after an order, invoice, tracking or phone label.

Never a serial: our ticket references (``SB-000123``), phone numbers, dates, postcodes and other bare
digit runs in the open, a country code and a date in the open (``CN20240501``: a shipment), and
any token after an order / PO / invoice / contract / tracking / error-code label.
Every candidate is returned with where and how it was found; the caller prefers one the register
knows. Patterns and label words are configurable (``ExtractionSettings``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

# label words: a serial follows (optionally after ':', '：', '#', 'is', '为', '是')
LABELS = [
    r"序列号",
    r"序列號",
    r"机身编号",
    r"機身編號",
    r"机身序列号",
    r"機身序號",
    r"序號",
    r"机器编号",
    r"主机编号",
    r"服务编码",
    r"快速服务代码",
    r"服务标签",
    r"服務標籤",
    r"S\s*/\s*N",
    r"SN",
    r"Serial\s*(?:No\.?|Number|Num\.?|#)?",
    r"Service\s*Tag",
    r"ST",
]
# a token after these is an order / document / phone number, never a serial
NOT_SERIAL_LABELS = [
    r"订单号?",
    r"訂單(?:編號|號碼?)?",
    r"单号",
    r"單號",
    r"合同号?",
    r"合約(?:編號)?",
    r"发票号?(?:码)?",
    r"發票(?:號碼)?",
    r"快递单号",
    r"运单号",
    r"工单号",
    r"Order\s*(?:No\.?|Number|#|ID)?",
    r"PO\s*(?:No\.?|#)?",
    r"Invoice\s*(?:No\.?|#)?",
    r"Tracking\s*(?:No\.?|Number|#)?",
    r"Case\s*(?:No\.?|#|ID)?",
    r"Ticket\s*(?:No\.?|#|ID)?",
    r"电话",
    r"電話",
    r"手机",
    r"手機",
    r"Tel\.?",
    r"Phone",
    r"Mobile",
    r"邮编",
    r"郵遞區號",
    r"Zip",
    r"错误(?:代码|码)",
    r"錯誤(?:代碼|碼)",
    r"Error\s*(?:Code|No\.?|#)",  # not a bare "error": "error 7XK2M9P" may name the unit
]
VENDOR_PATTERNS: dict[str, str] = {
    # plant code (3 letters) + year and week (4 digits) + 4
    "cisco": r"(?:FOC|FDO|FCW|SAL|JAE|FTX|FCZ|JMX|FXS|FGL|JAF|FHK|FJC|FJZ|FLM|SMG|FVH|WZP|JPG|TTM)"
    r"\d{4}[A-Z0-9]{4}",
    "hp": r"(?:CN[A-Z0-9]|5C[A-Z]|2U[A-Z]|CZC|SGH|MXL|MXQ|USE|JPB|VNB|TW[A-Z0-9]|PHC|VNC)[A-Z0-9]{7}",
    "lenovo": r"(?:P[BCFGHKLNRSWZ]|R9|MJ|MP|S4|J3|J1|06)[A-Z0-9]{6}",
    "dell": r"[A-Z0-9]{7}",
}
MODEL_LABELS = [r"型号", r"型號", r"机型", r"機型", r"Model\s*(?:No\.?|Number)?"]
VENDOR_WORDS = {
    "dell": r"dell|戴尔|戴爾",
    "lenovo": r"lenovo|thinkpad|thinkcentre|thinksystem|联想|聯想",
    "hp": r"\bhp\b|hewlett|惠普|laserjet|elitebook|probook",
    "cisco": r"cisco|思科|catalyst",
}
_SEP = r"[\s:：#=\-\uff0d为為是]*(?:is\s+)?"  # \uff0d: a full-width hyphen
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9\-]{3,29}[A-Za-z0-9]"  # noqa: S105  (a pattern, no password)
_DATE = re.compile(r"^(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])$")
_PHONE = re.compile(r"^(?:1[3-9]\d{9}|0\d{9,11}|09\d{8}|852\d{8}|886\d{8,9}|86\d{11})$")


@dataclass(frozen=True)
class Candidate:
    """One serial found in the text: ``how`` is ``label`` or ``vendor:<name>``."""

    serial: str
    where: str  # subject | body | attachment | ocr
    how: str
    vendor: str | None = None
    label: str = ""

    def as_label(self) -> dict[str, str]:
        d = {"serial": self.serial, "where": self.where, "how": self.how}
        if self.vendor:
            d["vendor"] = self.vendor
        return d


@dataclass
class Extractor:
    """Compiled label words and vendor patterns (``from_settings`` for the configured ones)."""

    labels: list[str] = field(default_factory=lambda: list(LABELS))
    not_serial_labels: list[str] = field(default_factory=lambda: list(NOT_SERIAL_LABELS))
    vendor_patterns: dict[str, str] = field(default_factory=lambda: dict(VENDOR_PATTERNS))
    ref_prefixes: list[str] = field(default_factory=lambda: ["SB"])

    def __post_init__(self) -> None:
        label_alt = "|".join(sorted(self.labels, key=len, reverse=True))
        # (?<![A-Za-z]) keeps 'SN' out of 'DSN' and 'ISN'; the label glued to a token ("SN12345") counts
        self._labelled = re.compile(
            rf"(?<![A-Za-z0-9])(?P<label>{label_alt})(?P<sep>{_SEP})(?P<tok>{_TOKEN})(?![A-Za-z0-9])",
            re.IGNORECASE,
        )
        not_alt = "|".join(sorted(self.not_serial_labels, key=len, reverse=True))
        self._not = re.compile(rf"(?<![A-Za-z])(?:{not_alt}){_SEP}(?P<tok>[A-Za-z0-9][A-Za-z0-9\-+ ]*)", re.I)
        self._vendor = {
            # not inside an e-mail address, a host name, a path or a URL ("zhang88@qq.com")
            name: re.compile(rf"(?<![A-Za-z0-9\-@./_=])({pat})(?![A-Za-z0-9\-@_/]|\.[A-Za-z0-9])")
            for name, pat in self.vendor_patterns.items()
        }
        refs = "|".join(re.escape(p) for p in self.ref_prefixes) or "SB"
        self._ref = re.compile(rf"^(?:{refs})-?\d{{3,}}$", re.IGNORECASE)
        self._model = re.compile(
            rf"(?<![A-Za-z])(?:{'|'.join(MODEL_LABELS)})[\s:：#=]*"
            r"(?P<model>[A-Za-z0-9][A-Za-z0-9\-./+ ]{1,40})",
            re.IGNORECASE,
        )

    def find(self, texts: list[tuple[str, str]]) -> list[Candidate]:
        """Candidates in ``[(where, text), ...]``, labelled ones first, each serial once."""
        found: list[Candidate] = []
        seen: set[str] = set()

        def add(c: Candidate) -> None:
            if c.serial not in seen:
                seen.add(c.serial)
                found.append(c)

        opened: list[Candidate] = []
        for where, text in texts:
            if not text:
                continue
            # full-width letters, digits and punctuation (U+FF21.., a Chinese IME in full-width mode) are
            # the ASCII ones: NFKC folds them, the patterns below are ASCII
            text = unicodedata.normalize("NFKC", text)
            if where == "attachment":  # "photo_CND1234XYZ.jpg": the name's parts, not one word
                text = re.sub(r"[_.]+", " ", text)
            blocked = self._blocked(text)
            for m in self._labelled.finditer(text):
                tok = m["tok"].upper().strip("-")
                if self._refuse(tok, labelled=True) or tok in blocked:
                    continue
                glued = not m["sep"] and re.fullmatch(r"S\s*/?\s*N", m["label"], re.I)
                if glued:  # "SN12345": the register may know "SN12345" or "12345"
                    add(
                        Candidate(
                            (m["label"].replace(" ", "").replace("/", "") + tok).upper(), where, "label"
                        )
                    )
                add(Candidate(tok, where, "label", self._vendor_of(tok), m["label"]))
            for name, rx in self._vendor.items():
                for m in rx.finditer(text):
                    tok = m.group(1).upper()
                    if tok in blocked or self._refuse(tok, labelled=False):
                        continue
                    opened.append(Candidate(tok, where, f"vendor:{name}", name))
        for c in opened:
            add(c)
        return found

    def model(self, texts: list[tuple[str, str]]) -> str | None:
        """The first model named after a model label (型号 / Model: ...), if any."""
        for _where, text in texts:
            m = self._model.search(unicodedata.normalize("NFKC", text or ""))
            if m:
                # a model is a few words at most: "PowerEdge R750 won't boot" is "PowerEdge R750"
                words = m["model"].split()[:3]
                while len(words) > 1 and not any(ch.isdigit() for ch in words[-1]):
                    words.pop()
                return " ".join(words)
        return None

    @staticmethod
    def vendor_word(texts: list[tuple[str, str]]) -> str | None:
        """A vendor named in the text (Dell / 戴尔, 联想, 惠普, 思科 ...), if exactly one."""
        names = {n for n, rx in VENDOR_WORDS.items() for _w, t in texts if re.search(rx, t or "", re.I)}
        return names.pop() if len(names) == 1 else None

    # ------------------------------------------------------------------ helpers
    def _vendor_of(self, tok: str) -> str | None:
        for name, rx in self._vendor.items():
            if name != "dell" and rx.fullmatch(tok):
                return name
        return None

    def _blocked(self, text: str) -> set[str]:
        """Tokens that follow an order / invoice / phone label in this text."""
        out: set[str] = set()
        for m in self._not.finditer(text):
            out.add(m["tok"].strip().upper())
            out.add(re.sub(r"[\s+\-]", "", m["tok"]).upper())
            first = re.match(r"[A-Za-z0-9\-]+", m["tok"])
            if first:
                out.add(first.group().upper())
        return out

    def _refuse(self, tok: str, *, labelled: bool) -> bool:
        if self._ref.match(tok):
            return True  # our own ticket reference
        bare = tok.replace("-", "")
        if bare.isdigit():
            # in the open, digits alone are order numbers, postcodes, phones; after a label a
            # serial may be digits, but never a phone number or a date
            return (not labelled) or bool(_PHONE.match(bare) or _DATE.match(bare)) or len(bare) < 5
        if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", tok):
            return True
        digits = sum(ch.isdigit() for ch in bare)
        if digits == 0:
            return True  # a word after a label ("the serial console failed", "SN: unknown") is no serial
        if not labelled:
            if _DATE.match(bare[2:]):  # "CN20240501": a country code and a date, a shipment or order
                return True
            letters = sum(ch.isalpha() for ch in bare)
            # an English or pinyin word is no serial: a Dell tag mixes letters and digits
            if letters == 0 or digits < 2 or "-" in tok:
                return True
        return len(bare) < 5
