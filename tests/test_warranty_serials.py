"""Serial / model extraction and the fault category (issue 14 items 2 and 4), over realistic zh-CN, zh-TW and
English texts; order numbers, phone numbers, dates, postcodes and our ticket references never become serials."""

from __future__ import annotations

import pytest

from svcbridge_warranty.category import categorize, override_command
from svcbridge_warranty.serials import Extractor
from svcbridge_warranty.settings import DEFAULT_CATEGORIES, WarrantySettings

EX = Extractor()


def found(text: str, where: str = "body") -> list[tuple[str, str]]:
    return [(c.serial, c.how) for c in EX.find([(where, text)])]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # zh-CN: label word with a full-width colon; the order number and mobile number stay out
        (
            "您好，我们机房的服务器序列号：7XK2M9P 今天早上无法开机，订单号 DX20240301，联系电话 13800138000。",
            [("7XK2M9P", "label")],
        ),
        ("机身编号为 J1ABCDE，屏幕黑屏。快递单号 SF1234567890", [("J1ABCDE", "label")]),
        ("戴尔笔记本，服务编码 ABC1234，发票号 88776655", [("ABC1234", "label")]),
        # zh-TW: 機身編號 / 序號, a Taiwanese mobile and a postcode are not serials
        (
            "機身編號: FOC2231X0AB，交換機無法連線。聯絡電話 0912345678，郵遞區號 10491",
            [("FOC2231X0AB", "label")],
        ),
        ("印表機序號 CND1234XYZ 一直卡紙，訂單編號 TW20241231001", [("CND1234XYZ", "label")]),
        # en: "serial SN12345" keeps the whole token; PO, ticket ref and date ignored
        (
            "Hi, serial SN12345 won't power on. Our PO# 4500012345, ref SB-000123, since 2024-03-01",
            [("SN12345", "label")],
        ),
        ("S/N: CND1234XYZ printer jams. Tracking No. 1Z999AA10123456784", [("CND1234XYZ", "label")]),
        ("Service Tag 5CD2XY1 keeps rebooting", [("5CD2XY1", "label")]),
        ("SN:12345678 fan noise", [("12345678", "label")]),
        # glued label: both readings are candidates, the register decides
        ("SN7XK2M9P dead", [("SN7XK2M9P", "label"), ("7XK2M9P", "label")]),
        # no label: vendor patterns in the open
        ("Laptop PF3ABCD1 blue screen after update", [("PF3ABCD1", "vendor:lenovo")]),
        ("Switch FDO2145Y1ZZ port 3 link down", [("FDO2145Y1ZZ", "vendor:cisco")]),
        ("the printer 5CG1234ABC says toner low", [("5CG1234ABC", "vendor:hp")]),
    ],
)
def test_serials_found(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Re: [SB-000123] still broken, please call +86 138 0013 8000 or 021-62345678",
        "订单号：AB12CD3，请尽快发货",  # an order number shaped like a Dell tag, after an order label
        "訂單編號 PF3ABCD1 已出貨",  # even a Lenovo-shaped token, after 訂單編號
        "Invoice No. CN12345678 attached, PO 5CG1234ABC",
        "邮编 200120，电话 13912345678，日期 20240229",
        "Meeting on 2024-02-29 at 10:00, room 301, order 4500012345",
        "Please reply to zhang88@qq.com or visit https://example.com/ABC1234X",
        "Ticket SB000456 was closed, call 0912-345-678",
        "SNMP traps from the DSN server, ISN 12345",  # SN inside other words is no label
        "We need 12 units of model 7010 by 2024/03/01, budget 1234567",
        "The serial console failed, SN: unknown, Serial Number is missing",  # words after labels
        "Our ST Louis office and the 1st floor printer",
        "序列号看不清楚，机身编号 unknown",
    ],
)
def test_false_positives_never_become_serials(text: str) -> None:
    assert found(text) == []


def test_every_candidate_recorded_labelled_first_and_places_named() -> None:
    cands = EX.find(
        [
            ("subject", "Switch FOC2231X0AB and laptop PF3ABCD1 down"),
            ("body", "序列号：7XK2M9P"),
            ("attachment", "photo_CND1234XYZ.jpg"),
        ]
    )
    assert [(c.serial, c.where, c.how) for c in cands] == [
        ("7XK2M9P", "body", "label"),
        ("FOC2231X0AB", "subject", "vendor:cisco"),
        ("PF3ABCD1", "subject", "vendor:lenovo"),
        ("CND1234XYZ", "attachment", "vendor:hp"),
    ]
    assert cands[0].as_label() == {"serial": "7XK2M9P", "where": "body", "how": "label"}


def test_model_and_vendor_words() -> None:
    texts = [("body", "型号：PowerEdge R750，戴尔服务器无法开机")]
    assert EX.model(texts) == "PowerEdge R750"
    assert EX.vendor_word(texts) == "dell"
    assert EX.model([("body", "Model: ThinkPad T14 Gen 3 keeps crashing")]) == "ThinkPad T14"
    assert EX.vendor_word([("body", "聯想 and 惠普 both")]) is None  # two vendors: not one


def test_configured_labels_and_patterns() -> None:
    cfg = WarrantySettings.model_validate(
        {
            "extraction": {
                "labels": ["资产编号"],
                "vendor_patterns": {"huawei": r"21\d{8}[A-Z0-9]{10}"},
                "not_serial_labels": ["合同编号"],
            }
        }
    )
    ex = cfg.extractor("SB")
    assert [c.serial for c in ex.find([("body", "资产编号：ZC-88721，合同编号 HT12345A")])] == ["ZC-88721"]
    assert [c.how for c in ex.find([("body", "unit 2102351234ABCDEFGHIJ down")])] == ["vendor:huawei"]
    with pytest.raises(ValueError):
        WarrantySettings.model_validate({"extraction": {"vendor_patterns": {"x": "(unclosed"}}})
    # another ticket prefix is refused as a reference, not the default one
    ex2 = WarrantySettings().extractor("HD")
    assert ex2.find([("body", "序列号 HD-000123")]) == []


@pytest.mark.parametrize(
    ("subject", "body", "category"),
    [
        ("服务器无法开机", "昨晚断电后就不开机了", "power"),
        ("電腦無法開機", "按電源鍵沒有反應", "power"),
        ("Server won't power on", "PSU LED is amber, no power", "power"),
        ("显示器黑屏", "屏幕一直闪", "display"),
        ("螢幕花屏", "", "display"),
        ("Switch link down", "packet loss on the uplink, no connectivity", "network"),
        ("交換機無法連線", "網路斷了", "network"),
        ("打印机卡纸", "每次打印都卡纸", "printing"),
        ("Printer paper jam", "toner low too", "printing"),
        ("Hello", "just a question about our invoice", None),
        # a quoted earlier mail does not decide this message's category
        ("Re: thanks", "> the printer had a paper jam\nall fine now", None),
    ],
)
def test_fault_category(subject: str, body: str, category: str | None) -> None:
    assert categorize(subject, body, DEFAULT_CATEGORIES)[0] == category


def test_category_override_command() -> None:
    assert override_command("looked at it\n#category display\n", DEFAULT_CATEGORIES) == "display"
    assert override_command("/category Network", DEFAULT_CATEGORIES) == "network"
    assert override_command("#category nonsense", DEFAULT_CATEGORIES) is None
    assert override_command("the category is display", DEFAULT_CATEGORIES) is None


def fw(text: str) -> str:
    """``text`` as a Chinese IME in full-width mode types it: ASCII letters, digits and ':' '/' ' ' full
    width (built here, so the test file holds no look-alike characters)."""
    return "".join(
        "\u3000" if ch == " " else chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"您好，{fw('SN:CND1234XYZ')} 打印机无法开机", [("CND1234XYZ", "label")]),
        (f"序列號{fw(':7XK2M9P')}，無法開機", [("7XK2M9P", "label")]),
        (f"{fw('S/N FOC2231X0AB')} switch offline", [("FOC2231X0AB", "label")]),
        # full-width in the open: still an HP serial; a full-width mobile number still none
        (f"打印机 {fw('CND1234XYZ')} 卡纸，电话 {fw('13800138000')}", [("CND1234XYZ", "vendor:hp")]),
        # a full-width order number after an order label stays blocked
        (f"订单号{fw(':DX20240301AB')}，序列号{fw(':7XK2M9P')}", [("7XK2M9P", "label")]),
    ],
)
def test_full_width_text_is_read_as_ascii(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # a country code and a date: how couriers and shops number shipments and orders, no HP serial
        "物流 CN20240501 已签收，请查收",
        "Your parcel CN20240501 was delivered",
        "TW20241231 已到貨，請確認",
        # an error code on the screen is no Lenovo serial
        "屏幕显示错误代码 PC000123，无法启动",
        "Error code PC000123 on screen after boot",
        "錯誤代碼 PS1234AB 一直出現",
    ],
)
def test_shipment_refs_and_error_codes_in_the_open_are_no_serials(text: str) -> None:
    assert found(text) == []


def test_a_bare_error_word_does_not_hide_the_unit() -> None:
    assert found("Boot error 7XK2M9P again, S/N FOC2231X0AB") == [
        ("FOC2231X0AB", "label"),
        ("7XK2M9P", "vendor:dell"),
    ]


def test_a_real_hp_serial_with_a_date_like_tail_after_a_label_is_kept() -> None:
    # after a label word the evidence is strong: only the open match is refused
    assert found("S/N: CN20240501 printer jams") == [("CN20240501", "label")]
