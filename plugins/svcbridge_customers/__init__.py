"""The customer directory: who a message comes from, as a customer the rest of svcbridge can act on.

A ``[[plugins.customers.directory]]`` entry names a customer (an organisation with a service contract)
and how to recognise its people: exact e-mail addresses, e-mail domains (subdomains included) and
phone numbers in E.164. In the normalize stage the first entry that matches the contact sets
``draft.customer``, fills the contact's company and language when the message did not give them, and
puts the customer's ``region`` and free ``labels`` into ``draft.labels`` for classifiers, SLA plugins
and routing. In the classify stage a customer's ``priority`` is a floor: a P2 customer's ticket is at
least P2, never downgraded by it.

Matching order, most specific first: an exact address, then the longest matching domain, then the
phone. Without a match nothing changes (``customer`` stays as another plugin left it), so ``[routing]``
rules with ``customer = "..."`` and the ``local`` ticket list see the same name everywhere.

Example::

    [[plugins.customers.directory]]
    name = "ACME Hospital"
    domains = ["acme-hospital.example"]
    emails = ["it.partner@gmail.com"]
    phones = ["+8675512345678"]
    region = "shenzhen"
    language = "zh-CN"
    priority = "P2"
"""

from __future__ import annotations

from typing import Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from svcbridge import PluginSettings, Priority, TicketDraft, hookimpl

__version__ = "0.1.0"
__all__ = ["Customer", "CustomerDirectory", "find_customer"]


class Customer(BaseModel):
    """One directory entry."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="as used in [routing] customer rules")
    domains: list[str] = Field(default_factory=list, description="e-mail domains, subdomains included")
    emails: list[str] = Field(default_factory=list, description="exact addresses (free-mail users)")
    phones: list[str] = Field(default_factory=list, description="numbers in E.164, +8613800138000")
    company: str | None = Field(default=None, description="company name for contacts; default: name")
    region: str | None = Field(default=None, description="service region, passed on as labels.region")
    language: str | None = Field(default=None, description="notice language when the message has none")
    priority: Priority | None = Field(default=None, description="floor: tickets are at least this urgent")
    labels: dict[str, str] = Field(default_factory=dict, description="free data for other plugins")

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Any:
        return Priority[v.upper()] if isinstance(v, str) and v.upper() in Priority.__members__ else v

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = [d.strip().lower().lstrip("@").rstrip(".") for d in v]
        bad = [d for d in out if not d or "@" in d or "." not in d]
        if bad:
            raise ValueError(f"not a domain: {bad}")
        return out

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        out = [e.strip().lower() for e in v]
        bad = [e for e in out if e.count("@") != 1]
        if bad:
            raise ValueError(f"not an e-mail address: {bad}")
        return out

    @field_validator("phones")
    @classmethod
    def _phones(cls, v: list[str]) -> list[str]:
        out = []
        for raw in v:
            try:
                num = phonenumbers.parse(raw, None)
            except phonenumbers.NumberParseException:
                num = None
            if num is None or not phonenumbers.is_possible_number(num):
                raise ValueError(f"not an international number (E.164, +country...): {raw!r}")
            out.append(phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164))
        return out


class CustomerDirectory(PluginSettings):
    """``[plugins.customers]``: the directory entries, checked for overlaps when the file is loaded."""

    directory: list[Customer] = Field(default_factory=list)
    _emails: dict[str, Customer] = PrivateAttr(default_factory=dict)
    _domains: dict[str, Customer] = PrivateAttr(default_factory=dict)
    _phones: dict[str, Customer] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _index(self) -> CustomerDirectory:
        # an address, domain or number claimed by two customers would route by file order: refuse it
        for attr, index in (("emails", self._emails), ("domains", self._domains), ("phones", self._phones)):
            for c in self.directory:
                for key in getattr(c, attr):
                    other = index.setdefault(key, c)
                    if other is not c:
                        raise ValueError(f"{attr[:-1]} {key!r} is listed for {other.name!r} and {c.name!r}")
        return self

    def match(self, email: str | None, phone: str | None) -> Customer | None:
        if email:
            addr = email.lower()
            if addr in self._emails:
                return self._emails[addr]
            labels = addr.rpartition("@")[2].split(".")
            for i in range(len(labels) - 1):  # support.eu.acme.example, eu.acme.example, acme.example
                found = self._domains.get(".".join(labels[i:]))
                if found:
                    return found
        return self._phones.get(phone) if phone else None


def find_customer(draft: TicketDraft, cfg: CustomerDirectory | None) -> Customer | None:
    return cfg.match(draft.contact.email, draft.contact.phone) if cfg else None


@hookimpl
def register_settings(register: Any) -> None:
    register("customers", CustomerDirectory)


@hookimpl
def normalize_draft(draft: TicketDraft, settings: Any) -> None:
    c = find_customer(draft, settings.plugin_config("customers"))
    if c is None:
        return
    draft.customer = c.name
    draft.contact.company = draft.contact.company or c.company or c.name
    if c.language and not draft.language and not draft.contact.language:
        draft.language = c.language
    if c.region:
        draft.labels.setdefault("region", c.region)
    for k, v in c.labels.items():
        draft.labels.setdefault(k, v)


@hookimpl
def classify_ticket(draft: TicketDraft, settings: Any) -> None:
    c = find_customer(draft, settings.plugin_config("customers"))
    if c is not None and c.priority is not None and draft.priority > c.priority:
        draft.priority = c.priority
