"""The form's HTML in zh-CN, zh-TW and en: every value that reaches the page is escaped.

No script and no inline event handlers (the console's CSP forbids them too); the honeypot field is
hidden with a class, so a person never fills it and a form-filling bot does.
"""

from __future__ import annotations

from html import escape

TEXTS = {
    "en": {
        "title": "Report a fault",
        "intro": "Tell us what is wrong. We answer by e-mail or SMS.",
        "name": "Your name",
        "company": "Company",
        "email": "E-mail",
        "phone": "Mobile phone",
        "serial": "Serial number",
        "description": "What is wrong?",
        "files": "Photos or documents",
        "submit": "Send",
        "website": "Leave this field empty",
        "thanks": "Thank you. Your report was received; we will confirm it by e-mail or SMS.",
        "err_contact": "Give an e-mail address or a mobile number.",
        "err_email": "This e-mail address does not look right.",
        "err_phone": "This phone number does not look right.",
        "err_description": "Please describe the fault.",
        "err_files": "Too many or too large files.",
        "err_token": "The form expired. Please send it again.",
        "err_rate": "Too many reports from your address. Please try again later.",
        "err_size": "The report is too large.",
    },
    "zh-CN": {
        "title": "故障报修",
        "intro": "请描述故障情况，我们会通过邮件或短信回复您。",
        "name": "姓名",
        "company": "单位",
        "email": "电子邮箱",
        "phone": "手机号码",
        "serial": "设备序列号",
        "description": "故障描述",
        "files": "照片或文件",
        "submit": "提交",
        "website": "请勿填写此项",
        "thanks": "谢谢\uff01我们已收到您的报修，稍后将通过邮件或短信确认。",
        "err_contact": "请填写电子邮箱或手机号码。",
        "err_email": "电子邮箱格式不正确。",
        "err_phone": "手机号码格式不正确。",
        "err_description": "请填写故障描述。",
        "err_files": "文件过多或过大。",
        "err_token": "表单已过期，请重新提交。",
        "err_rate": "提交过于频繁，请稍后再试。",
        "err_size": "提交内容过大。",
    },
    "zh-TW": {
        "title": "故障報修",
        "intro": "請描述故障情況，我們會以電子郵件或簡訊回覆您。",
        "name": "姓名",
        "company": "單位",
        "email": "電子郵件",
        "phone": "手機號碼",
        "serial": "設備序號",
        "description": "故障描述",
        "files": "照片或文件",
        "submit": "送出",
        "website": "請勿填寫此欄",
        "thanks": "謝謝\uff01我們已收到您的報修，稍後將以電子郵件或簡訊確認。",
        "err_contact": "請填寫電子郵件或手機號碼。",
        "err_email": "電子郵件格式不正確。",
        "err_phone": "手機號碼格式不正確。",
        "err_description": "請填寫故障描述。",
        "err_files": "檔案過多或過大。",
        "err_token": "表單已過期，請重新送出。",
        "err_rate": "送出過於頻繁，請稍後再試。",
        "err_size": "送出內容過大。",
    },
}
LANGS = tuple(TEXTS)

_STYLE = (
    "body{font:15px system-ui,sans-serif;margin:2em auto;max-width:40em;padding:0 1em}"
    "label{display:block;margin-top:1em}input,textarea{width:100%;box-sizing:border-box;padding:.4em}"
    "textarea{height:10em}.hp{position:absolute;left:-10000px;height:0;overflow:hidden}"
    ".err{color:#a00}button{margin-top:1.5em;padding:.5em 2em}"
)


def pick_language(asked: str | None, accept: str, default: str) -> str:
    """``?lang=``, else the first Accept-Language the form speaks, else the form's default."""
    if asked in TEXTS:
        return str(asked)
    for part in accept.split(","):
        tag = part.split(";")[0].strip()
        low = tag.lower()
        if low in ("zh-tw", "zh-hk", "zh-mo", "zh-hant") or low.startswith("zh-hant"):
            return "zh-TW"
        if low.startswith("zh"):
            return "zh-CN"
        if low.startswith("en"):
            return "en"
    return default if default in TEXTS else "en"


def form_page(name: str, title: str, lang: str, token: str, values: dict[str, str], errors: list[str]) -> str:
    t = TEXTS[lang]
    v = {k: escape(values.get(k, ""), quote=True) for k in ("name", "company", "email", "phone", "serial")}
    desc = escape(values.get("description", ""))
    errs = "".join(f'<p class="err">{escape(t[e])}</p>' for e in errors)
    langs = " · ".join(f'<a href="?lang={code}">{code}</a>' for code in LANGS)
    head = escape(title or t["title"])
    action = f"/form/{escape(name, quote=True)}?lang={lang}"
    return f"""<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{head}</title>
<style>{_STYLE}</style></head><body><p>{langs}</p><h1>{head}</h1><p>{escape(t["intro"])}</p>
{errs}<form method="post" action="{action}" enctype="multipart/form-data">
<input type="hidden" name="csrf_token" value="{escape(token, quote=True)}">
<div class="hp"><label>{escape(t["website"])}
<input name="website" tabindex="-1" autocomplete="off"></label></div>
<label>{t["name"]}<input name="name" maxlength="100" value="{v["name"]}"></label>
<label>{t["company"]}<input name="company" maxlength="200" value="{v["company"]}"></label>
<label>{t["email"]}<input name="email" type="email" maxlength="200" value="{v["email"]}"></label>
<label>{t["phone"]}<input name="phone" type="tel" maxlength="40" value="{v["phone"]}"></label>
<label>{t["serial"]}<input name="serial" maxlength="100" value="{v["serial"]}"></label>
<label>{t["description"]}<textarea name="description" maxlength="20000" required>{desc}</textarea></label>
<label>{t["files"]}<input name="files" type="file" multiple></label>
<button type="submit">{t["submit"]}</button></form></body></html>"""


def thanks_page(title: str, lang: str) -> str:
    t = TEXTS[lang]
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{escape(title or t["title"])}'
        f"</title><style>{_STYLE}</style></head><body><h1>{escape(title or t['title'])}</h1>"
        f"<p>{escape(t['thanks'])}</p></body></html>"
    )
