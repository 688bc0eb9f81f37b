"""The e-mail channel: Maildir intake, the shared mail parser, threaded outbound replies.

Settings (``[plugins.email]``)::

    from_address = "support@example.com"
    fallback_charsets = ["gb18030", "big5hkscs", "cp1252"]
    [plugins.email.maildir]          # optional: a Maildir watched for new mail
    path = "var/maildir"
    [plugins.email.outbound]         # spool (files) or smtp
    transport = "spool"
    [[plugins.email.imap]]           # any number of IMAP mailboxes (imap.py, oauth.py)
    name = "imap:support"
    host = "imap.example.com"
    [[plugins.email.graph]]          # Microsoft 365 mailboxes through Graph delta queries (graph.py)
    name = "graph:support"
    user = "support@contoso.example"
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from svcbridge import ParseError, PluginSettings, RawMessage, ThreadMatch, TicketDraft, hookimpl

from . import bounce, mailthread
from .maildir import MaildirSource
from .outbound import MailNotifier
from .parse import parse_email

__version__ = "0.1.0"


class MaildirSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "maildir"
    path: Path = Path("var/maildir")
    after: Literal["move", "delete"] = "move"
    interval: float = Field(default=0.25, gt=0)
    max_size: int = Field(default=50 * 1024 * 1024, ge=1024, description="bigger mail: headers-only ticket")
    settle: float = Field(default=1.0, ge=0, description="seconds a file in new/ must be unchanged")


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = 25
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    timeout: float = 30.0
    ca_file: Path | None = Field(default=None, description="extra CA for a relay with a private certificate")

    def model_post_init(self, _ctx: Any) -> None:
        if self.password_file and self.password is None:
            self.password = SecretStr(self.password_file.read_text(encoding="utf-8").rstrip("\r\n"))

    @model_validator(mode="after")
    def _plaintext_only_locally(self) -> SmtpSettings:
        # a password or customer mail in clear text over a network is never what was meant
        if self.tls == "none" and not _loopback(self.host):
            raise ValueError("tls = none is only allowed for a loopback host; use starttls or implicit")
        return self


class OutboundSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transport: Literal["spool", "smtp"] = "spool"
    spool_dir: Path = Path("var/outgoing")
    # how long a spooled notice's receipt (spool_dir/.sent) is kept: a resend within it writes nothing
    receipt_days: int = Field(default=30, ge=1)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)


class OAuth2Settings(PluginSettings):
    """XOAUTH2 for Microsoft 365 / Gmail (``[plugins.email.imap.oauth2]``); logic in oauth.py."""

    flow: Literal["client_credentials", "refresh_token"] = "refresh_token"
    token_url: str
    client_id: str
    client_secret: SecretStr | None = None  # or client_secret_file
    scope: str | None = None
    refresh_token_file: Path | None = None  # holds the refresh token; a rotated one is written back

    @model_validator(mode="after")
    def _needs_file(self) -> OAuth2Settings:
        if self.flow == "refresh_token" and self.refresh_token_file is None:
            raise ValueError("the refresh_token flow needs refresh_token_file (rotated tokens go there)")
        return self


class ImapSettings(PluginSettings):
    """One mailbox (``[[plugins.email.imap]]``); logic in imap.py. ``password_file`` reads the password."""

    name: str
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    verify: bool = True
    ca_file: Path | None = None
    username: str
    password: SecretStr | None = None
    oauth2: OAuth2Settings | None = None
    folder: str = "INBOX"
    after: Literal["none", "flag", "move", "delete"] = "none"
    flag: str = Field(default="$svcbridge", pattern=r"^\\?[^\s()\\{\]%*\"]+$")
    move_to: str = "Processed"
    batch: int = Field(default=50, ge=1, le=1000)
    batch_bytes: int = Field(default=25 * 1024 * 1024, ge=1024, description="about this much mail per FETCH")
    max_size: int = Field(default=50 * 1024 * 1024, ge=1024, description="bigger mail: headers-only ticket")
    idle: bool = True
    idle_timeout: float = Field(default=600.0, gt=0, le=28 * 60)  # re-IDLE before RFC 2177's 29 minutes
    poll_interval: float = Field(default=60.0, gt=0)
    timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ImapSettings:
        if self.tls == "none" and not _loopback(self.host):
            raise ValueError("tls = none is only allowed for a loopback host; use implicit or starttls")
        if (self.password is None) == (self.oauth2 is None):
            raise ValueError("give exactly one of password (or password_file) and oauth2")
        return self


class GraphSettings(PluginSettings):
    """One Microsoft 365 mail folder read through Graph (``[[plugins.email.graph]]``); logic in graph.py."""

    name: str
    user: str = Field(description="the mailbox: user id or user principal name")
    folder: str = Field(default="inbox", description="a well-known folder name or a folder id")
    oauth2: OAuth2Settings
    base_url: str = "https://graph.microsoft.com/v1.0"
    after: Literal["none", "read", "move", "delete"] = "none"
    move_to: str = Field(default="archive", description="destination folder id or well-known name")
    page_size: int = Field(default=50, ge=1, le=1000)
    poll_interval: float = Field(default=60.0, gt=0)
    max_wait: float = Field(default=60.0, ge=0, description="longest Retry-After waited out in a pass")
    timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> GraphSettings:
        host = urllib.parse.urlsplit(self.base_url)
        if host.scheme != "https" and not (host.scheme == "http" and _loopback(host.hostname or "")):
            raise ValueError("base_url must be https (plain http only for a loopback test server)")
        if self.oauth2.scope is None:
            self.oauth2.scope = "https://graph.microsoft.com/.default"
        return self


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmailSettings(PluginSettings):
    from_address: str = "support@svcbridge.invalid"
    fallback_charsets: list[str] = Field(default_factory=lambda: ["gb18030", "big5hkscs", "cp1252"])
    maildir: MaildirSettings | None = None
    imap: list[ImapSettings] = Field(default_factory=list)
    graph: list[GraphSettings] = Field(default_factory=list)
    outbound: OutboundSettings | None = None
    from_address_aliases: list[str] = Field(default_factory=list)
    ticket_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="sink name -> regex of that system's ticket numbers in subjects",
    )


_state: dict[str, Any] = {"our": set(), "candidates": ("gb18030", "big5hkscs", "cp1252"), "patterns": {}}


@hookimpl
def register_settings(register: Any) -> None:
    register("email", EmailSettings)


def _cfg(settings: Any) -> EmailSettings | None:
    cfg = settings.plugin_config("email")
    if cfg is not None:
        _state["our"] = {
            a.lower() for a in [cfg.from_address, *cfg.from_address_aliases, *settings.our_addresses]
        }
        _state["candidates"] = tuple(cfg.fallback_charsets)
        _state["patterns"] = {k: re.compile(v) for k, v in cfg.ticket_patterns.items()}
    return cfg


@hookimpl
def register_sources(register: Any, settings: Any) -> None:
    cfg = _cfg(settings)
    if cfg and cfg.maildir:
        m = cfg.maildir
        register(MaildirSource(m.name, m.path, m.after, m.interval, m.max_size, m.settle))
    if cfg and cfg.imap:
        # imported only when a mailbox is configured: most installs never load imapclient
        from .imap import ImapSource
        from .oauth import TokenProvider

        for box in cfg.imap:
            tokens = TokenProvider(box.oauth2, allow=settings.outbound_allow) if box.oauth2 else None
            register(ImapSource(box, tokens))
    if cfg and cfg.graph:
        from .graph import GraphSource
        from .oauth import TokenProvider

        for mailbox in cfg.graph:
            allow = settings.outbound_allow
            register(GraphSource(mailbox, TokenProvider(mailbox.oauth2, allow=allow), allow=allow))


@hookimpl
def register_notifiers(register: Any, settings: Any) -> None:
    cfg = _cfg(settings)
    if cfg and cfg.outbound:
        register(MailNotifier(cfg.from_address, cfg.outbound))


@hookimpl
def classify_ticket(draft: TicketDraft, ticket: Any) -> None:
    """A follow-up carries only what is new: quoted history and signature are trimmed.

    Message ids the parser dropped (``msgid.py``) become the label ``bad_message_ids`` here rather than
    in the parser, so a follow-up records them too (a ``ticket_updated`` event in the ticket's trail).
    """
    bad = draft.labels.pop("_bad_message_ids", None)
    if bad:
        draft.labels["bad_message_ids"] = bad
    reply = draft.labels.pop("reply_text", None)
    if ticket is not None and draft.channel == "email" and reply:
        draft.labels["_full_text"] = draft.body_text  # "_": this message's, not kept on the ticket
        draft.body_text = reply
    bounce.classify(draft, ticket)  # a bounce / auto-reply: its event text, email_failing; unmatched: raises


@hookimpl
def parse_message(raw: RawMessage) -> TicketDraft | None:
    if raw.channel not in ("email", "fax-mail") or raw.raw is None:
        return None
    if raw.metadata.get("fetch_error") and not raw.raw:
        # a source journaled a message it could not fetch: quarantine it with the source's reason
        raise ParseError(f"the mail could not be fetched: {raw.metadata['fetch_error']}")
    if not bounce.looks_like_mail(raw.raw):  # binary junk, no header block: never a ticket of garbage
        raise ParseError(f"{bounce.NOT_MAIL}: no header block")
    size = raw.metadata.get("oversize")
    data = raw.raw
    if size:
        # over the source's size limit: a ticket from the headers alone, so the customer is answered
        # and an agent sees who wrote; the whole mail stays in the journal for a manual look
        end = min((i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0), default=len(data))
        notice = f"[svcbridge: this mail is {size} bytes, over the size limit; the original is kept]\r\n"
        # the original MIME structure headers (and their folded lines) go: the body is now the notice
        head = re.sub(rb"(?im)^content-[^\n]*\n(?:[ \t][^\n]*\n)*", b"", data[:end] + b"\n")
        data = head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + notice.encode()
    draft = parse_email(data, our_addresses=_state["our"], candidates=_state["candidates"])
    if size:
        draft.labels["oversize"] = size
    report = bounce.inspect(data)
    if report is not None:  # a bounce or an auto-reply: an event on its ticket, never answered
        bounce.mark(draft, report)
    mailthread.add_content_link(draft)
    return draft


@hookimpl
def thread_message(draft: TicketDraft, lookup: Any) -> ThreadMatch | None:
    match = mailthread.thread(draft, lookup, _state["patterns"])
    if match is None and draft.channel == "email":
        for ref in bounce.thread_refs(draft):  # a bounce quoting our [SB-000123] in its body
            found = lookup.by_ref(ref)
            if found:
                return ThreadMatch(ticket_ref=found.ref, reason=f"bounce or auto-reply about {ref}")
    return match
