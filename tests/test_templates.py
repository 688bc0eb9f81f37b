"""Customer notifications from Jinja2 templates (src/svcbridge/templating.py, templates/): the language
follows the customer's mail (zh-CN, zh-TW, en), HTML is autoescaped, the subject stays one line, and
every state has a label in every shipped language."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import eml
from svcbridge import StatusUpdate, TicketState
from svcbridge.templating import LANGUAGES, environment, pick_language, render

VALUES = {"ref": "SB-000007", "subject": "s", "state": "new", "body": "", "channel": "email", "mail": True}


def drop(tmp_path: Path, name: str, data: bytes) -> None:
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / name).write_bytes(data)


def sent(tmp_path: Path) -> list[EmailMessage]:
    files = sorted((tmp_path / "outgoing").glob("*.eml"))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]  # type: ignore[misc]


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def mail_in(charset: str, subject: str, body: str, msgid: str) -> bytes:
    head = (f"From: Kunde <k@example.com>\r\nTo: support@bridge.test\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
    return head.encode("ascii") + body.encode(charset) + b"\r\n"


@pytest.mark.parametrize(
    ("charset", "body", "lang", "ack_subject", "ack_line", "status_subject"),
    [
        ("gbk", "打印机卡纸，请派人来修理。", "zh-CN", "我们已收到您的请求",
         "已为您创建工单 SB-000001：printer", "您的请求状态：处理中"),
        ("big5", "印表機卡紙，請派人來維修，謝謝。", "zh-TW", "我們已收到您的請求",
         "已為您建立案件 SB-000001：printer", "您的請求狀態：處理中"),
        ("utf-8", "The printer jams on every page.", "en", "We received your request",
         "Ticket SB-000001 was opened for: printer", "Your request is now in progress"),
    ],
)
async def test_notifications_speak_the_customers_language(
    make_app, tmp_path: Path, charset: str, body: str, lang: str, ack_subject: str, ack_line: str,
    status_subject: str,
) -> None:  # fmt: skip
    app = make_app()
    drop(tmp_path, "1", mail_in(charset, "printer", body, "<lang@example.com>"))
    await app.run_once()
    assert app.store.get_ticket("SB-000001").contact.language == lang
    await app.pipeline.apply_status_update(
        StatusUpdate(ticket_ref="SB-000001", system="local", state=TicketState.IN_PROGRESS, external_event_id="1")
    )
    await app.delivery.drain()
    ack, status = sent(tmp_path)
    assert ack["Subject"] == f"[SB-000001] {ack_subject}"
    assert status["Subject"] == f"[SB-000001] {status_subject}"
    text, html = parts(ack)
    assert text.splitlines()[0] == ack_line
    assert f'<html lang="{lang}">' in html and "SB-000001" in html
    assert ack["Auto-Submitted"] == "auto-replied"  # still an automatic mail, whatever the language


async def test_html_is_autoescaped_and_text_is_not(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "1", eml(subject='Screen <img src=x onerror="alert(1)"> & more'))
    await app.run_once()
    await app.pipeline.apply_status_update(StatusUpdate(
        ticket_ref="SB-000001", system="local", state=TicketState.IN_PROGRESS, external_event_id="e",
        public_reply="Use <b>tray 2</b>\nthen restart & wait.",
    ))  # fmt: skip
    await app.delivery.drain()
    ack, _status, reply = sent(tmp_path)
    text, html = parts(ack)
    assert 'Screen <img src=x onerror="alert(1)"> & more' in text
    assert "<img" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; more" in html
    text, html = parts(reply)
    assert text.startswith("Use <b>tray 2</b>\nthen restart & wait.")
    assert "&lt;b&gt;tray 2&lt;/b&gt;<br>\nthen restart &amp; wait.<br>" in html


def test_customer_subject_is_flattened_before_rendering() -> None:
    # a webhook ticket's subject may hold CR/LF; an operator's template may show it in the subject line
    r = render("acknowledgement", "en", {**VALUES, "subject": "x\r\nBcc: victim@example.org"})
    assert "\n" not in r.subject and "\r" not in r.subject
    assert "opened for: x Bcc: victim@example.org\n" in r.text


@pytest.mark.parametrize(
    ("tag", "lang"),
    [("zh-TW", "zh-TW"), ("zh-HK", "zh-TW"), ("zh-Hant-TW", "zh-TW"), ("zh_tw", "zh-TW"), ("zh-CN", "zh-CN"),
     ("zh-Hans", "zh-CN"), ("zh", "zh-CN"), ("en-GB", "en"), ("fr", "en"), (None, "en"), ("", "en")],
)
def test_language_choice(tag: str | None, lang: str) -> None:
    assert pick_language(tag) == lang


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_state_has_a_label_in_every_language(lang: str) -> None:
    labels = environment().get_template(f"{lang}/_common.txt").make_module(VALUES).states
    assert set(labels) == {s.value for s in TicketState}  # a new state needs a label in each language
    subjects = {render("status_changed", lang, {**VALUES, "state": s.value}).subject for s in TicketState}
    assert len(subjects) == len(TicketState) and all(labels[s.value] in str(subjects) for s in TicketState)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_sms_gets_no_mail_footer(lang: str) -> None:
    mail = render("acknowledgement", lang, VALUES).text
    sms = render("acknowledgement", lang, {**VALUES, "channel": "sms", "mail": False}).text
    assert sms.strip() and sms != mail and sms.strip() in mail and len(sms.splitlines()) == 1


# ---------------------------------------------------------------------- the operator's own templates
async def test_operator_templates_replace_shipped_files_one_by_one(make_app, tmp_path: Path) -> None:
    own = tmp_path / "templates"
    (own / "en").mkdir(parents=True)
    (own / "en" / "acknowledgement.txt").write_text(
        "ACME Service: request {{ ref }} logged\n\nDear customer, we logged \"{{ subject }}\". Hotline 400-800-1234.\n"
    )
    app = make_app(notifications={"templates_dir": str(own)})
    drop(tmp_path, "1", eml(subject="Printer jams", msgid="<o1@x>"))
    drop(tmp_path, "3", eml(subject="<script>alert(1)</script>", msgid="<o3@x>"))
    drop(tmp_path, "2", mail_in("gbk", "printer", "打印机卡纸，请派人来修理。", "<o2@x>"))
    await app.run_once()
    by_to = {m["Subject"]: parts(m) for m in sent(tmp_path)}
    own_subject = "[SB-000001] ACME Service: request SB-000001 logged"
    assert own_subject in by_to, list(by_to)
    text, html = by_to[own_subject]
    assert text.strip() == 'Dear customer, we logged "Printer jams". Hotline 400-800-1234.'
    # no own .html: the HTML part says what their text says (escaped), not the shipped wording
    assert "<p>Dear customer, we logged &#34;Printer jams&#34;. Hotline 400-800-1234.</p>" in html
    assert "was opened for" not in html
    assert any(s.endswith("我们已收到您的请求") for s in by_to)  # no own zh-CN file: the shipped text
    xss = next(html for s, (_, html) in by_to.items() if "SB-000001" not in s and "我们" not in s)
    assert "<script>" not in xss and "&lt;script&gt;alert(1)&lt;/script&gt;" in xss


def test_a_broken_operator_template_is_a_config_error(tmp_path: Path) -> None:
    from svcbridge.errors import ConfigError
    from svcbridge.settings import load_settings

    own = tmp_path / "templates"
    (own / "zh-TW").mkdir(parents=True)
    (own / "zh-TW" / "status_changed.txt").write_text("{{ ref }} {{ sate }}\n\n{% if %}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(None, data_dir=tmp_path, notifications={"templates_dir": str(own)})
    assert "notifications.templates_dir" in str(err.value)
    assert "zh-TW/status_changed.txt" in str(err.value)
    with pytest.raises(ConfigError, match="not a directory"):
        load_settings(None, data_dir=tmp_path, notifications={"templates_dir": str(tmp_path / "nope")})
