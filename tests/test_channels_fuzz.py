"""Property-based tests of issue 17's parsers and verifiers (marker ``fuzz``, as tests/test_fuzz.py):
arbitrary bytes and hostile headers give a clean refusal (False, ``ParseError``, ``ValueError``, a 4xx)
and never an exception; verifiers never accept a tampered body, timestamp or signature; the SMS text
rules are total and keep their promises (segments within bounds, clean text has no controls)."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcbridge import ParseError, RawMessage, TicketDraft
from svcbridge_fax.detect import BUILTIN_RULES, detect, e164
from svcbridge_fax.gateways import parse_gateway_fax, parse_multipart
from svcbridge_fax.signatures import phaxio_signature, phaxio_verify, telnyx_public_key, telnyx_verify
from svcbridge_phone import parse_message as parse_call
from svcbridge_phone.cti import _fields as cti_fields
from svcbridge_sms import parse_message as parse_sms
from svcbridge_sms.text import clean, fit, keyword, segments

pytestmark = pytest.mark.fuzz
EXAMPLES = int(os.environ.get("SVCBRIDGE_FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = telnyx_public_key(base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode())
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@FUZZ
@given(body=st.binary(max_size=2000), ts=st.text(max_size=30), sig=st.text(max_size=200))
def test_telnyx_verify_never_raises_and_refuses_junk(body, ts, sig) -> None:
    assert telnyx_verify(PUB, body, ts, sig, 300) is not None


@FUZZ
@given(body=st.binary(max_size=2000), flip=st.integers(min_value=0, max_value=10_000))
def test_telnyx_verify_refuses_any_tampering(body, flip) -> None:
    ts = str(int(time.time()))
    sig = base64.b64encode(KEY.sign(ts.encode() + b"|" + body)).decode()
    assert telnyx_verify(PUB, body, ts, sig) is None
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        assert telnyx_verify(PUB, tampered, ts, sig) is not None
    assert telnyx_verify(PUB, body, str(int(ts) + 1), sig) is not None


@FUZZ
@given(params=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=50)), max_size=8),
       data=st.binary(max_size=500), sig=st.text(max_size=80))
def test_phaxio_verify(params, data, sig) -> None:
    url = "https://bridge.example.com/hooks/sinch/fax"
    good = phaxio_signature("tok", url, params, [("filename", data)])
    assert phaxio_verify("tok", url, params, [("filename", data)], good)
    assert not phaxio_verify("tok", url, params, [("filename", data + b"x")], good)
    assert phaxio_verify("tok", url, params, [("filename", data)], sig) == (sig.strip().lower() == good)


@FUZZ
@given(ctype=st.text(max_size=80), body=st.binary(max_size=3000))
def test_multipart_parser_refuses_cleanly(ctype, body) -> None:
    try:
        params, files = parse_multipart("multipart/form-data; boundary=" + ctype, body)
    except ValueError:
        return
    assert all(isinstance(v, str) for _k, v in params) and all(isinstance(d, bytes) for _n, d, _t in files)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=2000), st.builds(lambda o: json.dumps(o).encode(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20))))
def test_journaled_channel_entries_parse_or_raise_parse_error(raw) -> None:
    for channel, source, parse in (("fax", "telnyx:telnyx/fax", parse_gateway_fax), ("sms", "telnyx-sms:x", parse_sms),
                                   ("sms", "aliyun-sms:x", parse_sms), ("phone", "cti", parse_call)):
        msg = RawMessage(channel=channel, source=source, external_id="x", raw=raw)
        try:
            draft = parse(msg)
        except ParseError:
            continue
        assert draft is None or isinstance(draft, TicketDraft)


@FUZZ
@given(body=st.binary(max_size=2000), json_type=st.booleans())
def test_cti_fields_refuse_cleanly(body, json_type) -> None:
    try:
        fields = cti_fields(body, "application/json" if json_type else "application/x-www-form-urlencoded")
    except (ValueError, RecursionError):
        return
    assert isinstance(fields, dict)


@FUZZ
@given(text=st.text(max_size=600), parts=st.integers(min_value=1, max_value=5))
def test_sms_text_rules_are_total(text, parts) -> None:
    enc, n = segments(text)
    units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
    assert enc in ("gsm7", "ucs2") and n >= 1 and (n == 1 or units > 70)
    assert segments(fit(text, parts))[1] <= parts
    out = clean(text)
    assert not CONTROL.search(out)
    assert keyword(text) in (None, "stop", "start")


@FUZZ
@given(sender=st.text(max_size=60), subject=st.text(max_size=200), body=st.text(max_size=500),
       region=st.sampled_from([None, "CN", "TW", "US"]))
def test_fax_detection_and_numbers_never_raise(sender, subject, body, region) -> None:
    info = detect(BUILTIN_RULES, sender, subject, body, [], region)
    assert info is None or info.number is None or info.number.startswith("+")
    n = e164(subject, region)
    assert n is None or n.startswith("+")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just("\x00"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["data", "payload", "from", "to", "id", "text", "media", "phone_number", "fax_id",
                         "page_count", "fax", "content", "sequence_id", "content_type", "event_type"]),
        inner, max_size=5),
    max_leaves=25)


@FUZZ
@given(provider=st.sampled_from(["telnyx", "sinch", "aliyun", "other"]), event=JSONISH, fields=JSONISH,
       up=JSONISH, media=JSONISH, error=JSONISH)
def test_provider_shaped_entries_parse_or_raise_parse_error(provider, event, fields, up, media, error) -> None:
    doc = {"provider": provider, "event": event, "fields": fields, "up": up, "media": media, "media_error": error}
    raw = json.dumps(doc).encode()
    for channel, source, parse in (("fax", "telnyx:telnyx/fax", parse_gateway_fax), ("sms", "telnyx-sms:x", parse_sms)):
        try:
            draft = parse(RawMessage(channel=channel, source=source, external_id="x", raw=raw))
        except ParseError:
            continue
        assert isinstance(draft, TicketDraft)
        dumped = json.dumps(draft.model_dump(mode="json", exclude={"attachments"}))
        assert "\\u0000" not in dumped, dumped  # PostgreSQL refuses NUL, in JSON too


@FUZZ
@given(kind=st.sampled_from(["missed", "answered", "other", None]), fields=st.dictionaries(
    st.sampled_from(["number", "call_id", "to", "cause", "answered_by", "ticket_ref", "late_for", "fault", "from"]),
    JSONISH, max_size=6))
def test_journaled_calls_parse_or_raise_parse_error(kind, fields) -> None:
    raw = json.dumps({**fields, "kind": kind}).encode()
    try:
        draft = parse_call(RawMessage(channel="phone", source="cti", external_id="x", raw=raw))
    except ParseError:
        assert kind not in ("missed", "answered")
        return
    dumped = json.dumps(draft.model_dump(mode="json"))
    assert "\\u0000" not in dumped and draft.channel == "phone"
