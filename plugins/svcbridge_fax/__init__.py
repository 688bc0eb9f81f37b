"""The fax channel: fax-to-mail becomes a ``fax`` ticket, its pages are read by Tesseract afterwards.

Intake reuses the e-mail parser (``svcbridge_email`` parses the mail as it parses any other); this
plugin's ``normalize_draft`` runs first (``tryfirst``) and turns a mail that a rule recognises as a
fax (``detect.py``) into a draft of channel ``fax``: the contact is the sender's fax number in E.164
(the fax server's own address is no way to reach the customer), so the customer directory
(``svcbridge_customers``, ``phones``) finds the customer by it in the same stage. The ticket first says
"fax received from +86..., N pages"; the pages stay attached.

OCR is a durable job (``fax.ocr``) asked for in ``enrich_ticket``: it runs after the ticket is
committed, so a 20-page fax never holds up the next mail's ticket. Its text is stored on the ticket
as the label ``ocr_text`` (with ``ocr`` = languages, mean confidence, pages read and failed pages and
their reasons), written with a ``ticket_updated`` event and sent to the helpdesks as an internal
note. The job runs once per fax (its key is the ticket and the pages' hashes); a crash mid-OCR leaves
the job claimed, and it runs again after the restart: nothing is lost, nothing is recorded twice.

Settings (``[plugins.fax]``)::

    default_region = "CN"               # for national numbers (0532 8888 1234)
    builtin_rules = true                # HylaFAX faxrcvd, eFax, RingCentral, "Fax from <number>"
    [[plugins.fax.rules]]
    name = "carrier"
    senders = ["fax2mail@carrier.example"]
    attachment_types = ["application/pdf"]
    [plugins.fax.trust.carrier]         # who may send that gateway's faxes (default: its senders)
    authenticated = true                # and only with our MTA's DKIM/SPF/DMARC pass for its domain
    authserv_ids = ["mx.example.com"]
    [plugins.fax.ocr]
    languages = ["chi_sim", "eng"]
    page_limit = 20
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from svcbridge import (
    ExternalLink,
    JobKind,
    NotReady,
    PluginSettings,
    RawMessage,
    TicketChange,
    TicketDraft,
    WebhookRoute,
    hookimpl,
)

from . import ocr
from .detect import (
    BUILTIN_RULES,
    BUILTIN_TRUST,
    FAX_TYPES,
    FaxRule,
    GatewayTrust,
    detect,
    distrust,
    e164,
    header_sender,
)
from .gateways import SinchFaxRoute, TelnyxFaxRoute, parse_gateway_fax
from .outbound import FaxMediaRoute, FaxNotifier
from .pagecache import PageCache

__version__ = "0.1.0"
log = structlog.get_logger("svcbridge.fax")
JOB = "fax.ocr"
MAX_OCR_TEXT = 50_000  # characters kept on the ticket; a 20-page fax of dense text is about 60,000


class OcrSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    languages: list[str] = Field(default_factory=lambda: ["chi_sim", "eng"], min_length=1)
    page_limit: int = Field(default=20, ge=1, le=500, description="pages read per fax; the rest are counted")
    page_timeout: float = Field(default=120.0, gt=0, description="seconds Tesseract may take on one page")
    then_jobs: list[str] = Field(
        default_factory=list,
        description="job kinds asked for once the text is stored (serial extraction, classification "
        "on the OCR text); their job sees the ticket with labels ocr_text and ocr",
    )


class TelnyxFaxSettings(PluginSettings):  # PluginSettings: <secret>_file reads a file
    """``[plugins.fax.telnyx]``: Telnyx Programmable Fax (inbound webhook, outbound faxes)."""

    public_key: str = Field(description="the account's Ed25519 public key, base64 (Mission Control portal)")
    api_key: SecretStr = Field(description="API v2 key: media downloads from Telnyx hosts, sending faxes")
    path: str = "telnyx/fax"
    tolerance: float = Field(default=300.0, gt=0, le=3600, description="seconds a timestamp may be off")
    max_media: int = Field(default=20 * 1024 * 1024, ge=1024, description="largest fax document fetched")
    api_base: str = "https://api.telnyx.com"
    connection_id: str | None = Field(default=None, description="fax application id, for sending faxes")
    from_number: str | None = Field(default=None, description="our fax number in E.164, for sending")
    public_url: str | None = Field(default=None, description="base URL Telnyx fetches outgoing faxes from")


class SinchFaxSettings(PluginSettings):  # PluginSettings: <secret>_file reads a file
    """``[plugins.fax.sinch]``: Sinch Fax v2.1 (Phaxio) callbacks and sending."""

    callback_token: SecretStr = Field(description="the callback (webhook) token that signs callbacks")
    public_url: str = Field(description="base URL Sinch calls, e.g. https://bridge.example.com")
    path: str = "sinch/fax"
    max_media: int = Field(default=20 * 1024 * 1024, ge=1024)
    api_base: str = "https://api.phaxio.com"
    api_key: str | None = None
    api_secret: SecretStr | None = None


class FaxSettings(PluginSettings):
    default_region: str | None = Field(default=None, description="ISO region for national numbers: CN, TW")
    builtin_rules: bool = True
    rules: list[FaxRule] = Field(default_factory=list)
    ocr: OcrSettings = Field(default_factory=OcrSettings)
    telnyx: TelnyxFaxSettings | None = None
    sinch: SinchFaxSettings | None = None
    outbound: Literal["telnyx", "sinch"] | None = Field(
        default=None, description="gateway that sends notices to fax customers as a fax"
    )
    font: str | None = Field(default=None, description="TrueType/OpenType font for fax notices (CJK)")
    trust: dict[str, GatewayTrust] = Field(
        default_factory=dict, description="per rule (gateway): allowed senders, sources, authentication"
    )

    @model_validator(mode="after")
    def _outbound(self) -> FaxSettings:
        if self.outbound == "telnyx":
            t = self.telnyx
            if t is None or not (t.connection_id and t.from_number and t.public_url):
                raise ValueError(
                    "outbound = telnyx needs [plugins.fax.telnyx] connection_id, from_number, public_url"
                )
        if self.outbound == "sinch" and (
            self.sinch is None or not (self.sinch.api_key and self.sinch.api_secret)
        ):
            raise ValueError("outbound = sinch needs [plugins.fax.sinch] api_key and api_secret")
        return self

    @model_validator(mode="after")
    def _trust(self) -> FaxSettings:
        names = {r.name for r in self.rules} | set(BUILTIN_TRUST)
        unknown = sorted(set(self.trust) - names)
        if unknown:
            raise ValueError(f"trust: no fax rule named {', '.join(unknown)}")
        return self

    def all_rules(self) -> list[FaxRule]:
        return [*self.rules, *(BUILTIN_RULES if self.builtin_rules else [])]

    def trust_for(self, rule: str) -> GatewayTrust:
        """The gateway's trust settings; senders left out are its own address(es)."""
        trust = self.trust.get(rule) or GatewayTrust()
        if trust.senders is None:
            own = next((r.senders for r in self.rules if r.name == rule), None)
            default = own if own is not None else BUILTIN_TRUST.get(rule, [])
            trust = trust.model_copy(update={"senders": list(default)})
        return trust


_host: dict[str, Any] = {}  # the running App (``startup``): the OCR job reads the stored pages through it


@hookimpl
def register_settings(register: Any) -> None:
    register("fax", FaxSettings)


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg: FaxSettings | None = settings.plugin_config("fax")
    if cfg is None:
        return
    if cfg.telnyx is not None:
        t = cfg.telnyx
        route = TelnyxFaxRoute(
            t, settings.outbound_allow, transport=cfg.transport, host=lambda: _host.get("app")
        )
        register(WebhookRoute(path=t.path, endpoint=route, name=f"telnyx:{t.path}"))
        if cfg.outbound == "telnyx":  # the rendered outgoing faxes Telnyx fetches
            media = FaxMediaRoute(Path(settings.data_dir) / "fax-outbox")
            path = t.path.strip("/") + "/media/{name}"
            register(WebhookRoute(path=path, endpoint=media, methods=("GET",), name=f"telnyx-media:{t.path}"))
    if cfg.sinch is not None:
        route_s = SinchFaxRoute(cfg.sinch)
        register(WebhookRoute(path=cfg.sinch.path, endpoint=route_s, name=f"sinch:{cfg.sinch.path}"))


@hookimpl
def register_notifiers(register: Any, settings: Any) -> None:
    cfg: FaxSettings | None = settings.plugin_config("fax")
    if cfg is not None and cfg.outbound is not None:
        register(FaxNotifier(cfg, Path(settings.data_dir), settings.outbound_allow, cfg.transport))


@hookimpl
def classify_ticket(draft: TicketDraft, ticket: Any, settings: Any) -> None:
    """A fax customer without a fax gateway to answer on is answered on the fallback channel: the
    directory's e-mail address of their customer becomes the contact's (the fax server's never does)."""
    if draft.channel != "fax" or ticket is not None or draft.contact.email or not draft.customer:
        return
    directory = settings.plugin_config("customers")
    for entry in getattr(directory, "directory", None) or []:
        if entry.name == draft.customer and entry.emails:
            draft.contact.email = entry.emails[0]
            draft.labels["fax_reply_email"] = entry.emails[0]
            return
    if not draft.contact.phone:
        # nobody to tell: agents see it (and the helpdesk), instead of a notice that never leaves
        draft.labels["notify_unreachable"] = "fax from an unknown number and no customer e-mail"


@hookimpl
def parse_message(raw: RawMessage) -> TicketDraft | None:
    if raw.channel != "fax" or not raw.source.startswith(("telnyx:", "sinch:")):
        return None
    return parse_gateway_fax(raw)


@hookimpl
def startup(app: Any) -> None:
    _host["app"] = app


@hookimpl
def shutdown(app: Any) -> None:
    if _host.get("app") is app:
        _host.pop("app", None)


@hookimpl(tryfirst=True)  # before the customer directory, which then finds the customer by the fax number
def normalize_draft(draft: TicketDraft, raw: RawMessage, settings: Any) -> None:
    cfg: FaxSettings | None = settings.plugin_config("fax")
    if cfg is None or raw.raw is None:
        return
    if draft.channel == "fax":  # from a gateway: a national number is read in the configured region
        number = (draft.labels.get("fax") or {}).get("raw_from")
        if not draft.contact.phone and number:
            draft.contact.phone = e164(str(number), cfg.default_region)
        return
    if draft.channel != "email":
        return
    sender = header_sender(raw.raw)
    looks = [r for r in cfg.all_rules() if r.matches(sender, draft.subject, draft.attachments)]
    reasons = {r.name: distrust(cfg.trust_for(r.name), raw.raw, sender, raw.source) for r in looks}
    trusted = [r for r in looks if reasons[r.name] is None]
    if looks and not trusted:
        # anyone can write a subject like a fax server's: the mail stays a mail (its caller id naming
        # a customer would otherwise make it that customer's fax ticket)
        first = looks[0].name
        draft.labels["fax_lookalike"] = {"rule": first, "reason": reasons[first]}
        log.warning("fax_lookalike", rule=first, reason=reasons[first])
        return
    info = detect(trusted, sender, draft.subject, draft.body_text, draft.attachments, cfg.default_region)
    if info is None:
        return
    pages = [a for a in draft.attachments if a.content_type.lower() in FAX_TYPES]
    draft.channel = "fax"
    # the mail's sender is the fax server, never the customer: answering it would mail the fax machine
    draft.contact.email = None
    # the mail's language is the fax server's template's, not the customer's: the directory or OCR says
    draft.language = draft.contact.language = None
    draft.contact.name = info.tsi if info.tsi and info.tsi != info.number else draft.contact.name
    if info.number:
        draft.contact.phone = info.number
    who = info.number or info.tsi or "an unknown number"
    count = f", {info.pages} page(s)" if info.pages else ""
    draft.subject = f"Fax received from {who}{count}"
    original = draft.body_text.strip()
    draft.body_text = (
        f"Fax received from {who}{count}. {len(pages)} document(s) attached; "
        "the text read from the pages (OCR) follows as a note.\n\n" + original
    ).strip()
    draft.labels["fax"] = {**info.label(), "documents": len(pages)}
    if info.comm_id:
        draft.links.append(ExternalLink(system="fax", kind="comm_id", value=f"{info.rule}:{info.comm_id}"))
    log.info("fax_detected", rule=info.rule, number=info.number, pages=info.pages)


def ocr_pages(draft: TicketDraft) -> list[dict[str, str]]:
    return [
        {"safe_name": a.safe_name, "sha256": a.sha256, "content_type": a.content_type.lower()}
        for a in draft.attachments
        if a.content_type.lower() in FAX_TYPES and a.content_type.lower() != "application/postscript"
    ]


@hookimpl
def enrich_ticket(draft: TicketDraft, settings: Any, jobs: Any) -> None:
    cfg: FaxSettings | None = settings.plugin_config("fax")
    if cfg is None or not cfg.ocr.enabled or draft.channel != "fax":
        return
    pages = ocr_pages(draft)
    if not pages:
        return
    # one job per fax: a follow-up fax on the same ticket has other pages, hence another key
    digest = hashlib.sha256("".join(p["sha256"] for p in pages).encode()).hexdigest()[:16]
    jobs.enqueue(JOB, {"documents": pages}, key=f"{jobs.ticket_ref}:{digest}")


def run_ocr(job: Any, work: Any) -> TicketChange | None:
    """The ``fax.ocr`` job: read the stored pages, return the text as a ticket change.

    The jobs of ``then_jobs`` are asked for in the same transaction that stores the text, so they run
    after it and see it on ``job.ticket.labels["ocr_text"]``; once per fax (their key names this job's).
    """
    app = _host.get("app")
    if app is None:
        raise NotReady("the fax plugin has not started")
    cfg: FaxSettings = app.plugin_config("fax") or FaxSettings()
    if job.ticket is None:
        return None
    documents: list[tuple[bytes, str]] = []
    missing = []
    for doc in job.data.get("documents", []):
        data = app.attachment_data(job.ticket.id, doc["safe_name"])
        if data is None:
            missing.append(doc["safe_name"])
        else:
            documents.append((data, doc["content_type"]))
    cache = PageCache(Path(app.settings.data_dir) / "ocr-pages")
    cache.prune()
    result = ocr.read_fax(documents, cfg.ocr.languages, cfg.ocr.page_limit, cfg.ocr.page_timeout, cache)
    text = result.text[:MAX_OCR_TEXT]
    summary: dict[str, Any] = {
        "languages": cfg.ocr.languages,
        "confidence": result.confidence,
        "pages_read": sum(1 for p in result.pages if not p.error),
        "pages_failed": result.failed,
        "pages_skipped": result.skipped,
        "pages_from_earlier_run": result.cached,
        "truncated": len(result.text) > MAX_OCR_TEXT,
        "job": job.id,
    }
    if missing:
        summary["documents_missing"] = missing
    note = _note(result, summary)
    for kind in cfg.ocr.then_jobs:
        work.enqueue(kind, {"after": JOB, "label": "ocr_text"}, key=f"{job.key}:{kind}")
    return TicketChange(labels={"ocr_text": text, "ocr": summary}, note=note)


def _note(result: ocr.FaxText, summary: dict[str, Any]) -> str:
    conf = f"{summary['confidence']:.0f}%" if summary["confidence"] is not None else "n/a"
    head = f"[OCR of the fax, {summary['pages_read']} page(s), mean confidence {conf}]"
    lines = [head]
    for f in result.failed:
        lines.append(f"[page {f['page']} could not be read: {f['reason']}]")
    if result.skipped:
        lines.append(f"[{result.skipped} page(s) over the page limit were not read; see the attachment]")
    return "\n".join(lines) + "\n\n" + (result.text[:MAX_OCR_TEXT] or "(no text found)")


@hookimpl
def register_job_kinds(register: Any, settings: Any) -> None:
    cfg: FaxSettings | None = settings.plugin_config("fax")
    if cfg is not None:
        # a 20-page fax at a few seconds a page: the budget grows with the page limit
        budget = cfg.ocr.page_limit * cfg.ocr.page_timeout + 60
        register(JobKind(JOB, run_ocr, timeout=budget, max_attempts=5, backoff_initial=30.0))
