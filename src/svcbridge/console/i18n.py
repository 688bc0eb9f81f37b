"""The console's two languages: English (the keys) and Simplified Chinese.

Templates write ``{{ _("Tickets") }}``; the English text is the key, ``ZH`` holds the translation, and a
test checks that every key a template uses has one. zh-CN is chosen when the browser's Accept-Language
puts Chinese before English (zh, zh-CN, zh-Hans, and also zh-TW / zh-HK: a Chinese reader is better served
by Simplified Chinese than by English); otherwise English.
"""

# ruff: noqa: E501, RUF001  (a translation table: one line per text; Chinese punctuation is meant)
from __future__ import annotations

from collections.abc import Callable

LANGS = ("en", "zh-CN")

ZH: dict[str, str] = {
    "svcbridge console": "svcbridge 控制台",
    "Overview": "概览",
    "Tickets": "工单",
    "Quarantine": "隔离区",
    "Outbox": "发件箱",
    "Plugins": "插件",
    "Audit": "审计",
    "SLA": "服务等级",
    "Assets": "资产",
    "RMA": "返修",
    "Reports": "报表",
    "Log in": "登录",
    "Log out": "退出",
    "User": "用户",
    "Password": "密码",
    "Wrong user name or password.": "用户名或密码错误。",
    "Too many failed logins; try again later.": "登录失败次数过多，请稍后再试。",
    "Ready": "就绪",
    "Not ready": "未就绪",
    "What to do": "处理方法",
    "Problem": "问题",
    "Sources": "接入源",
    "Source": "接入源",
    "State": "状态",
    "Last success": "最近成功",
    "Last error": "最近错误",
    "Retry in": "重试倒计时",
    "Lag": "延迟",
    "Failures": "失败次数",
    "ok": "正常",
    "failing": "失败",
    "down": "故障",
    "unknown": "未知",
    "Journal backlog": "待处理消息",
    "oldest": "最早",
    "Quarantined": "已隔离",
    "Target": "目标",
    "Pending": "待发送",
    "Parked": "已暂停",
    "Dead": "失败终止",
    "Circuit": "熔断器",
    "Tickets per hour (24 h)": "每小时工单数（24 小时）",
    "Tickets (24 h)": "工单（24 小时）",
    "Nothing is stuck.": "没有积压。",
    "Search": "搜索",
    "reference, customer, contact, serial, text": "编号、客户、联系人、序列号、内容",
    "any": "全部",
    "Priority": "优先级",
    "Channel": "渠道",
    "Subject": "主题",
    "Contact": "联系人",
    "Customer": "客户",
    "Created": "创建时间",
    "Next deadline": "下一截止时间",
    "No tickets.": "没有工单。",
    "Previous": "上一页",
    "Next": "下一页",
    "Page": "页",
    "Messages": "消息",
    "Attachments": "附件",
    "Download": "下载",
    "Event trail": "事件记录",
    "Helpdesk links": "服务台链接",
    "Deadlines": "截止时间",
    "overdue": "已超时",
    "Change state": "更改状态",
    "Reply to the customer": "回复客户",
    "Add a note": "添加备注",
    "Send": "发送",
    "Save": "保存",
    "Apply": "应用",
    "HTML version (sanitised, scripts never run)": "HTML 版本（已清理，脚本不会执行）",
    "Read-only account: actions are not available.": "只读账号：不能执行操作。",
    "Reason": "原因",
    "Plugin": "插件",
    "Stage": "阶段",
    "At": "时间",
    "Raw message": "原始消息",
    "Retry": "重试",
    "Drop": "丢弃",
    "Drop this message? It stays in the journal, marked dropped, and is not processed.": "确定丢弃这条消息吗？它会以“已丢弃”状态保留在日志中，不再处理。",
    "Yes, drop it": "确定丢弃",
    "This item was delivered. Replay sends it again: a customer notice reaches the customer twice.": "该条目已送达。重新发送会再发一次：客户会收到两次同样的通知。",
    "Yes, send it again": "确定再次发送",
    "Cancel": "取消",
    "Nothing in quarantine.": "隔离区为空。",
    "Status": "状态",
    "Kind": "类型",
    "Attempts": "尝试次数",
    "Replay": "重新发送",
    "Replay all dead items of this target": "重新发送该目标的全部失败项",
    "Unpark this target": "恢复该目标",
    "No items.": "没有记录。",
    "Version": "版本",
    "Origin": "来源",
    "Hooks": "钩子",
    "Settings": "设置",
    "set": "已设置",
    "unset": "未设置",
    "Who": "操作人",
    "What": "操作",
    "When": "时间",
    "Object": "对象",
    "Coming soon": "即将推出",
    "SLA clocks, breaches and pauses per policy will be shown here once the SLA engine lands; "
    "deadlines already filled show on each ticket.": "SLA 引擎上线后，这里将显示各策略的计时、超时和暂停；已填写的截止时间显示在每个工单上。",
    "The asset register (serial numbers, warranty, sites) will be browsable here once it lands.": "资产登记（序列号、保修、站点）上线后可在此浏览。",
    "Return merchandise authorisations and their shipments will be listed here once RMA lands.": "返修授权（RMA）及其物流上线后将在此列出。",
    "Reports (volumes, response times, SLA compliance) will be made here once reporting lands.": "报表（工单量、响应时间、SLA 达成率）上线后将在此生成。",
    "Done.": "已完成。",
    "Not allowed.": "不允许。",
    "The form expired; reload the page and try again.": "表单已过期，请刷新页面后重试。",
    "Time zone": "时区",
    "Live": "实时",
    "Dead letters": "失败终止项",
    "Alerts": "告警",
    "note": "备注",
    "Problems": "问题",
    "no messages": "没有消息",
    "Download raw": "下载原始消息",
    "All": "全部",
    "Policy": "策略",
    "Serial number": "序列号",
    "Parts": "部件",
    "No such unit in the register.": "资产登记中没有该设备。",
    "oauth_token_expires_in": "OAuth 令牌剩余有效期",
    "health_facts_error": "状态信息错误",
    "SLA breached": "已违反 SLA",
    "sink_not_configured": "服务台未配置",
    "no_notifier": "无通知渠道",
    "target_parked": "目标已暂停",
    "source_failing": "接入源故障",
    "alert": "告警",
    "plugin_failed": "插件加载失败",
    "fix the plugin's settings (the reason says what), restart; until then what it serves (a source, a helpdesk, a channel) does nothing": "修正该插件的设置（原因中有说明）后重启；在此之前，它负责的接入源、服务台或渠道都不工作。",
    "configure the sink's plugin section (or fix [routing]); see Plugins for a failed plugin; its items wait in the outbox and go out once it exists": "配置该服务台插件的设置（或修正 [routing]）；在“插件”页查看失败的插件。其待发项保留在发件箱中，配置好后自动发送。",
    "configure the channel's outbound side (e.g. [plugins.email.outbound]) or [notifications] fallback_channels, restart, then replay the parked notices": "配置该渠道的发送端（如 [plugins.email.outbound]）或 [notifications] fallback_channels，重启后重新发送已暂停的通知。",
    "fix the target's credentials or address, then unpark it on the Outbox page (or restart): its items go out again": "修正该目标的凭据或地址，然后在“发件箱”页恢复该目标（或重启），其待发项将重新发送。",
    "check the source's server, address and credentials; the error says what failed": "检查接入源的服务器、地址和凭据；错误信息说明了失败原因。",
    "see the error; the Outbox or Jobs list shows the affected items": "查看错误信息；发件箱或任务列表中可以看到受影响的条目。",
}


def pick(accept_language: str | None) -> str:
    """``zh-CN`` when the first language the browser names (by q-value) is Chinese, else ``en``."""
    best: tuple[float, int, str] | None = None
    for pos, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        tag = tag.strip().lower()
        if not tag or q <= 0:
            continue
        lang = "zh-CN" if tag.split("-")[0] == "zh" else "en" if tag.split("-")[0] in ("en", "*") else None
        if lang is None:
            continue
        key = (-q, pos, lang)
        if best is None or key < best:
            best = key
    return best[2] if best else "en"


def translator(lang: str) -> Callable[[str], str]:
    if lang == "zh-CN":
        return lambda text: ZH.get(text, text)
    return lambda text: text
