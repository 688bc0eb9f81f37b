"""The REST2 calls the RT connector makes (RT 5.0, ``/REST/2.0``), and how files go into RT.

``RtClient`` only knows RT's endpoints and their quirks; the HTTP itself is its sink's (``HelpdeskSink``:
one client per event loop, ``Authorization: token ...``). Every call therefore goes through
``svcbridge.http_request``, so failures already mean what the host needs: 429/5xx/timeouts raise
``NotReady``, 401/403 ``AuthFailed``, other 4xx (RT answers 400 for bad input) ``PermanentError``;
redirects to another host are never followed with the token; an answer that is not JSON is ``NotReady``.

RT quirks handled here (measured against Debian's request-tracker5 5.0.3):

- correspond/comment answer ``201 ["Correspondence added"]`` and put the new transaction in ``Location``
  (``/REST/2.0/transaction/<id>``); that is the only place the transaction id appears.
- Transactions are searched with TransactionSQL (see ``transactions``). A ``query`` containing "[" anywhere
  is mistaken for a JSON search by RT 5.0.3 (an unanchored regex) and answered with a 500.
- ``?fields=Content`` on an attachment *collection* returns decoded text; ``GET /attachment/N`` returns
  it base64-encoded. Asking a collection for ``Parent`` crashes RT with a 500, so it is never asked for.
- A transaction's ``Data`` holds the Subject of a correspondence or comment.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from svcbridge import Attachment, HelpdeskSink, PermanentError

TXN_FIELDS = "Type,Field,OldValue,NewValue,ObjectType,ObjectId,Creator,Created,Data"


def _name(ref: Any) -> str:
    """RT renders users as ``{"type": "user", "id": "<name>"}``; return the name."""
    if isinstance(ref, dict):
        return str(ref.get("id", ""))
    return str(ref or "")


def rt_file_type(att: Attachment) -> str:
    """The MIME type to give RT for an attachment so that RT stores its bytes unchanged.

    RT transcodes every text/* part that is not UTF-8 into UTF-8 (measured: latin-1 and gb2312 text
    came back re-encoded). Such parts go in as application/octet-stream, which RT keeps byte-exact.
    """
    ctype = (att.content_type or "application/octet-stream").strip()
    main = ctype.split(";", 1)[0].strip().lower()
    if not main.startswith("text/"):
        return main or "application/octet-stream"
    charset = ""
    for param in ctype.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    try:
        (att.data or b"").decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    if charset and charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        return "application/octet-stream"
    return main


def rt_attachments(atts: list[Attachment]) -> tuple[list[dict[str, str]], list[Attachment]]:
    """REST2 ``Attachments`` entries, and the files RT cannot take (it refuses empty ones)."""
    out: list[dict[str, str]] = []
    for att in atts:
        if att.data:
            out.append(
                {
                    "FileName": att.original_name or att.safe_name,
                    "FileType": rt_file_type(att),
                    "FileContent": base64.b64encode(att.data).decode("ascii"),
                }
            )
    return out, [a for a in atts if not a.data]


class RtClient:
    """RT's REST2 resources, called through `sink` (its HTTP client, error classes and label)."""

    def __init__(self, sink: HelpdeskSink) -> None:
        self.sink = sink

    # ------------------------------------------------------------------ tickets
    async def search_tickets(
        self, query: str, fields: str = "Subject,Status,Created"
    ) -> list[dict[str, Any]]:
        params = {"query": query, "fields": fields, "per_page": 100, "orderby": "id", "order": "ASC"}
        data = await self.sink.call("GET", "tickets", "ticket search", params=params)
        return list(data.get("items") or []) if isinstance(data, dict) else []

    async def get_ticket(self, ticket_id: str) -> dict[str, Any]:
        data = await self.sink.call("GET", f"ticket/{int(ticket_id)}", f"get ticket {ticket_id}")
        return data if isinstance(data, dict) else {}

    async def create_ticket(self, body: dict[str, Any]) -> str:
        data = await self.sink.call("POST", "ticket", "create ticket", json=body)
        tid = str(data.get("id", "")) if isinstance(data, dict) else ""
        if not tid.isdigit():
            raise PermanentError(f"RT create ticket: no ticket id in the answer: {str(data)[:200]}")
        return tid

    async def update_ticket(self, ticket_id: str, body: dict[str, Any]) -> list[str]:
        what = f"update ticket {ticket_id}"
        data = await self.sink.call("PUT", f"ticket/{int(ticket_id)}", what, json=body)
        return [str(m) for m in data] if isinstance(data, list) else []

    async def add_message(self, ticket_id: str, kind: str, body: dict[str, Any]) -> str | None:
        """Correspond or comment; returns the new transaction id (from Location) when RT gives it."""
        what = f"{kind} on ticket {ticket_id}"
        resp = await self.sink.request("POST", f"ticket/{int(ticket_id)}/{kind}", what, json=body)
        location = resp.headers.get("Location", "")
        tail = location.rstrip("/").rsplit("/", 1)[-1]
        return tail if "/transaction/" in location and tail.isdigit() else None

    # ------------------------------------------------------------------ transactions
    async def transactions(
        self, query: str, *, per_page: int = 100, order: str = "ASC"
    ) -> list[dict[str, Any]]:
        """A TransactionSQL search, ordered by id.

        TransactionSQL (``?query=``), not the JSON search: with ``ObjectType = 'RT::Ticket'`` ANDed at the
        top, RT checks rights in SQL (``$UseSQLForACLChecks``, on by default), so a page is never emptied
        by transactions of tickets we may not see. The JSON search filters after LIMIT: measured, a page
        of other queues' transactions came back empty although ours followed, which would stall a poll.
        """
        params = {"query": query, "fields": TXN_FIELDS, "per_page": per_page, "orderby": "id", "order": order}
        data = await self.sink.call("GET", "transactions", "transaction search", params=params)
        return list(data.get("items") or []) if isinstance(data, dict) else []

    async def last_transaction_id(self) -> int:
        items = await self.transactions("ObjectType = 'RT::Ticket' AND id > 0", per_page=1, order="DESC")
        return int(items[0]["id"]) if items else 0

    async def message_parts(self, txn_id: str) -> list[dict[str, Any]]:
        """The MIME parts of a transaction, without their content (that can be a big file)."""
        data = await self.sink.call(
            "GET",
            f"transaction/{int(txn_id)}/attachments",
            f"parts of transaction {txn_id}",
            params={"fields": "ContentType,Filename,ContentLength", "per_page": 100},
        )
        items = data.get("items") if isinstance(data, dict) else None
        return [p for p in items or [] if isinstance(p, dict)]

    async def attachment_bytes(self, attachment_id: str) -> bytes:
        """One attachment's stored bytes (``GET /attachment/N`` returns them base64-encoded)."""
        data = await self.sink.call("GET", f"attachment/{int(attachment_id)}", f"attachment {attachment_id}")
        content = data.get("Content") if isinstance(data, dict) else None
        try:
            return base64.b64decode(str(content or ""), validate=False)
        except (binascii.Error, ValueError):
            raise PermanentError(f"RT attachment {attachment_id}: content is not base64") from None

    @staticmethod
    def creator(txn: dict[str, Any]) -> str:
        return _name(txn.get("Creator"))

    @staticmethod
    def users(value: Any) -> list[str]:
        return [_name(u) for u in value] if isinstance(value, list) else []
