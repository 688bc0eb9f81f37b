"""The one documented contract between svcbridge and its plugins.

Every hook is documented here in pytest's style: what it is for, when it is called, each parameter,
whether it is ``firstresult`` and what an exception means. Parameters and returns carry the real types
(``svcbridge.models``, ``svcbridge.contracts``, ``svcbridge.settings``), imported under
``TYPE_CHECKING`` as pytest's hookspec module does, so this module imports nothing heavy at run time.
``tests/test_hookspecs.py`` fails when a hook lacks a docstring, a ``:param`` line for one of its
arguments, or an annotation that resolves to a real type.

Implementations may be ``def`` or ``async def``: the host awaits what is awaitable (an ``async def``
implementation returns the annotated type through its coroutine). Every hook is called one
implementation at a time by the host (not by pluggy's loop), so a failure is always tied to the plugin
that raised it; hook wrappers (``hookwrapper=True`` / ``wrapper=True``) would never run and a plugin
declaring one is refused at load, as is an implementation whose name matches no hook here or that takes
an argument its hook does not offer. Plugins may accept fewer arguments than a spec lists (pluggy's
opt-in arguments), so hooks can gain parameters later.

A sync implementation runs on the daemon's event loop: while it blocks, no mailbox is read and no
ticket is delivered. Do blocking I/O (a vendor's sync SDK, a database driver, a file scan) from an
``async def`` implementation and hand the blocking call to a thread::

    @hookimpl
    async def enrich_ticket(draft):
        stock = await asyncio.to_thread(erp.stock_for, draft.asset.serial)  # blocks a thread, not the loop
        draft.labels["stock"] = stock

Data flows in a straight line and each hook belongs to one stage::

    source ─▶ journal ─▶ parse ─▶ normalize ─▶ thread ─▶ classify ─▶ enrich ─▶ store ─▶ outbox
                                                                                 │
                         status updates (sinks, webhooks) ─▶ compose_notifications ┘
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from .assets import AssetLookup, AssetRecord, AssetRegister
    from .channels import ChannelDirectory
    from .contracts import Host, Notifier, Sink, Source, TicketLookup, WebhookRoute
    from .models import (
        Notification,
        RawMessage,
        StatusUpdate,
        ThreadMatch,
        Ticket,
        TicketDraft,
        TicketEvent,
    )
    from .parts import PartsErp
    from .settings import PluginSettings, Settings
    from .work import JobKind, TimerKind, WorkQueue

hookspec = pluggy.HookspecMarker("svcbridge")
hookimpl = pluggy.HookimplMarker("svcbridge")

# ---------------------------------------------------------------------------------------------------
# The register callables handed to the register_* hooks. Positional-only, because the host collects
# what it is given positionally: ``register(sink=s)`` would type-check against a named parameter and
# still fail at run time.
# ---------------------------------------------------------------------------------------------------


class RegisterSettings(Protocol):
    """``register(section, model)`` of ``register_settings``."""

    def __call__(self, section: str, model: type[PluginSettings], /) -> None: ...


class RegisterSource(Protocol):
    """``register(source)`` of ``register_sources``."""

    def __call__(self, source: Source, /) -> None: ...


class RegisterRoute(Protocol):
    """``register(route)`` of ``register_routes``."""

    def __call__(self, route: WebhookRoute, /) -> None: ...


class RegisterSink(Protocol):
    """``register(sink)`` of ``register_sinks``."""

    def __call__(self, sink: Sink, /) -> None: ...


class RegisterJobKind(Protocol):
    """``register(kind)`` of ``register_job_kinds``."""

    def __call__(self, kind: JobKind, /) -> None: ...


class RegisterTimerKind(Protocol):
    """``register(kind)`` of ``register_timer_kinds``."""

    def __call__(self, kind: TimerKind, /) -> None: ...


class RegisterErp(Protocol):
    """``register(erp)`` of ``register_erps``."""

    def __call__(self, erp: PartsErp, /) -> None: ...


class RegisterNotifier(Protocol):
    """``register(notifier)`` of ``register_notifiers``."""

    def __call__(self, notifier: Notifier, /) -> None: ...


# ---------------------------------------------------------------------------------------------------
# Start-up: settings and the objects a plugin contributes
# ---------------------------------------------------------------------------------------------------


@hookspec
def register_settings(register: RegisterSettings) -> None:
    """Declare the settings model of a plugin's ``[plugins.<section>]`` TOML table.

    Called once, before anything starts and before ``check-config`` validates the file, so every
    section is validated by its own model and all errors are reported together.

    :param register: ``register(section: str, model: type[PluginSettings])``. Register at most one
        model per section; a second registration of the same section is a configuration error.

    An exception here marks the plugin as failed (its reason is shown by ``svcbridge plugins``) and
    the other plugins start; in strict mode it is re-raised.
    """


@hookspec
def register_sources(register: RegisterSource, settings: Settings) -> None:
    """Contribute intake sources (mailboxes, polled gateways) that submit raw messages.

    Called once when the daemon (or ``run --once``) starts, after settings were validated.

    :param register: ``register(source)``; ``source`` follows ``svcbridge.Source``. Source names must
        be unique across plugins; a duplicate is reported and the second one is not started.
    :param settings: the validated ``svcbridge.Settings``; ``settings.plugin_config(section)`` returns
        this plugin's model instance (or ``None`` when the section is absent).

    An exception here marks the plugin failed; the other plugins' sources still start.
    """


@hookspec
def register_routes(register: RegisterRoute, settings: Settings) -> None:
    """Contribute webhook endpoints served by the daemon under ``/hooks/``.

    Called once when the HTTP app is built.

    :param register: ``register(route)``; ``route`` is a ``svcbridge.WebhookRoute``. The endpoint must
        verify the sender's signature exactly as the provider signs, call ``ctx.submit`` (journal)
        and answer 2xx only after it returned; on ``StoreUnavailable`` answer 503 so the sender retries.
    :param settings: the validated ``svcbridge.Settings``.

    An exception here marks the plugin failed; other routes are served.
    """


@hookspec
def register_sinks(register: RegisterSink, settings: Settings) -> None:
    """Contribute helpdesk sinks that receive tickets and changes through the outbox.

    Called once at start-up. Routing (``[routing]`` in the config) decides which sink gets a ticket.

    :param register: ``register(sink)``; ``sink`` follows ``svcbridge.Sink`` (and optionally has
        ``poll_changes(cursor)`` for helpdesks without webhooks, polled every ``poll_interval`` s).
    :param settings: the validated ``svcbridge.Settings``.

    An exception here marks the plugin failed; items routed to its sinks wait in the outbox.
    """


@hookspec
def register_notifiers(register: RegisterNotifier, settings: Settings) -> None:
    """Contribute notifiers that push messages to customers on one channel (mail reply, SMS).

    Called once at start-up.

    :param register: ``register(notifier)``; ``notifier`` follows ``svcbridge.Notifier``. One
        notifier per channel; a later registration for the same channel replaces none, it is reported.
    :param settings: the validated ``svcbridge.Settings``.

    An exception here marks the plugin failed; its notifications wait in the outbox.
    """


@hookspec
def register_erps(register: RegisterErp, settings: Settings) -> None:
    """Contribute ERP connectors that answer for spare parts: stock per depot, reservations.

    Called once at start-up. The connectors are kept by the host (``Host.erps``, by name) for the
    durable jobs and the ``svcbridge parts`` commands; nothing calls an ERP inside the pipeline.

    :param register: ``register(erp)``; ``erp`` follows ``svcbridge.PartsErp``: ``lookup(part)``,
        ``find_parts(model, category)``, and ``reserve(key, part, qty, depot)`` / ``release(key)`` /
        ``consume(key)``, idempotent on ``key`` (a re-run after a crash between the ERP's commit and
        the host's record finds the reservation by its key and makes no second one). Names are
        unique across plugins; a duplicate is reported and the second one is ignored.
    :param settings: the validated ``svcbridge.Settings``.

    An exception here marks the plugin failed; parts jobs that need its ERP wait and retry.
    """


@hookspec
def register_job_kinds(register: RegisterJobKind, settings: Settings) -> None:
    """Contribute kinds of durable job: remote lookups and other slow work (warranty, OCR, stock).

    Called once at start-up. A job is asked for with ``jobs.enqueue(kind, data, key)`` from
    ``classify_ticket`` / ``enrich_ticket`` (or from another job or timer) and runs after the ticket
    is committed, never inside the pipeline's batch; what its ``run`` returns (a
    ``svcbridge.TicketChange``) is stored on the ticket and sent to its helpdesks.

    :param register: ``register(kind)``; ``kind`` is a ``svcbridge.JobKind`` (name, ``run``, time
        budget, attempts, backoff). Names are unique across plugins; a duplicate is reported and the
        second is ignored. Jobs of a kind no plugin registers wait (``svcbridge jobs list``).
    :param settings: the validated ``svcbridge.Settings``.

    An exception here marks the plugin failed; its jobs wait.
    """


@hookspec
def register_timer_kinds(register: RegisterTimerKind, settings: Settings) -> None:
    """Contribute named timers: SLA warnings, escalations, surveys, RMA reminders, callbacks due.

    Called once at start-up. A timer is set with ``jobs.schedule(name, at, data)`` (moved by setting
    it again, dropped with ``jobs.cancel(name)``); it fires once at its time, even with several
    replicas and after downtime (``Timer.late`` says how late), and what its ``fire`` returns (a
    ``svcbridge.TicketChange``) is stored on the ticket and sent to its helpdesks.

    :param register: ``register(kind)``; ``kind`` is a ``svcbridge.TimerKind`` (name, ``fire``).
    :param settings: the validated ``svcbridge.Settings``.

    An exception here marks the plugin failed; its timers wait until a plugin handles them.
    """


# ---------------------------------------------------------------------------------------------------
# Lifecycle: open what a plugin keeps for the process's lifetime, and close it again
# ---------------------------------------------------------------------------------------------------


@hookspec
def startup(app: Host) -> None:
    """Open what the plugin keeps while the process runs: HTTP clients, connection pools, caches.

    Called once when the daemon (``svcbridge run``) or ``run --once`` starts, after the sources, sinks
    and notifiers were registered and before any source polls; one plugin at a time, in plugin order.
    ``async def`` is the usual form (awaited before the next plugin starts). Parse workers, the separate
    processes that parse a large backlog, do not call it: ``parse_message`` must not rely on it.

    :param app: the running instance as a ``svcbridge.Host``: ``app.settings`` and
        ``app.plugin_config(section)`` (this plugin's validated ``[plugins.<section>]`` model or ``None``).

    An exception marks the plugin failed (logged as ``plugin_startup_failed`` with the plugin's name):
    its hooks are no longer called, ``shutdown`` included, so release what was half opened before
    raising. Sources, sinks and notifiers it registered stay registered and report their own errors
    (make them fail visibly without what ``startup`` opened). The other plugins start; in strict mode
    it is re-raised.
    """


@hookspec
def shutdown(app: Host) -> None:
    """Close what ``startup`` opened.

    Called once when the daemon stops (after the grace period, when intake, the pipeline and delivery
    have done their last work) or when ``run --once`` ends, failure or not; one plugin at a time, in
    plugin order. Not called for a plugin that failed before (at load, registration or ``startup``).

    :param app: the same ``svcbridge.Host`` that ``startup`` was given.

    An exception is logged (``plugin_shutdown_failed`` with the plugin's name) and the other plugins
    still shut down; it never changes the exit code.
    """


# ---------------------------------------------------------------------------------------------------
# Per message: the pipeline stages, in the order they run
# ---------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def parse_message(raw: RawMessage) -> TicketDraft | None:
    """Turn one journaled raw message into a ``TicketDraft``.

    Called once per journal entry, first stage of the pipeline. Return ``None`` when the message is not
    for this plugin (another channel or format); the first non-``None`` draft wins (firstresult).

    :param raw: the ``svcbridge.RawMessage`` exactly as the source journaled it (bytes, never pre-decoded).

    Raising (``ParseError`` or anything else) quarantines the message with plugin, stage and error;
    it can be retried with ``svcbridge quarantine retry`` after a fix. When no plugin returns a draft
    the message is quarantined as "no parser".
    """


@hookspec
def normalize_draft(draft: TicketDraft, raw: RawMessage, settings: Settings) -> None:
    """Normalise contact and customer data in place (directory lookups, E.164 phones, company names).

    Called for every plugin, in plugin order, after parsing. Return value is ignored.

    :param draft: the ``svcbridge.TicketDraft``; modify it in place.
    :param raw: the ``svcbridge.RawMessage`` it came from (read-only).
    :param settings: the validated ``svcbridge.Settings`` (``settings.plugin_config(section)`` gives
        this plugin's own table); like every hook argument, take it only if you need it.

    Raising quarantines the message (stage ``normalize``).
    """


@hookspec(firstresult=True)
def thread_message(draft: TicketDraft, lookup: TicketLookup) -> ThreadMatch | None:
    """Decide whether this message belongs to an existing ticket, or is a duplicate of one.

    Called once per message after normalisation; the first non-``None`` answer wins (firstresult).
    The built-in default (``trylast``) matches message ids and ``[SB-000123]`` subject tags.

    :param draft: the ``svcbridge.TicketDraft`` (links hold this message's ids, thread_refs the ids it
        refers to).
    :param lookup: a ``svcbridge.TicketLookup`` for read-only queries (by ref, by external link, a
        contact's open ticket, a contact's ticket whose satisfaction survey awaits an answer).

    Return a ``svcbridge.ThreadMatch`` (``duplicate=True`` when the same message is already stored, so
    nothing new is created) or ``None`` for a new ticket. Raising quarantines the message.
    """


@hookspec
def classify_ticket(
    draft: TicketDraft, ticket: Ticket | None, settings: Settings, jobs: WorkQueue, assets: AssetLookup
) -> None:
    """Set priority, fault level, SLA policy and deadlines on the draft, in place.

    Called for every plugin after threading.

    :param draft: the ``svcbridge.TicketDraft`` to adjust.
    :param ticket: the existing ``svcbridge.Ticket`` for a follow-up, ``None`` for a new ticket.
    :param settings: the validated ``svcbridge.Settings``.
    :param jobs: a ``svcbridge.WorkQueue`` for this ticket: ``jobs.enqueue(kind, data)`` asks for a
        durable job, ``jobs.schedule(name, at)`` / ``jobs.cancel(name)`` set timers; written with the
        ticket in the batch's commit.
    :param assets: a ``svcbridge.AssetLookup``: ``await assets.get(serial)`` answers for a serial
        (``asset_lookup`` with ``inline=True``, then the local register); ``assets.register`` is the
        local register, read-only. Call it from an ``async def`` implementation.

    What a plugin sets here (priority, fault level, category, customer, asset, labels) is stored on
    the ticket, on a follow-up too: then a ``ticket_updated`` event names the plugin and the change
    is sent to the ticket's helpdesks. Raising quarantines the message (stage ``classify``).
    """


@hookspec
def enrich_ticket(
    draft: TicketDraft, ticket: Ticket | None, settings: Settings, jobs: WorkQueue, assets: AssetLookup
) -> None:
    """Add outside knowledge in place: warranty per part, spare-parts stock, customer contract.

    Called for every plugin after classification, inside the pipeline's batch: never call a remote
    system here. Ask for a durable job instead (``jobs.enqueue``): the ticket is created at once and
    the job's answer arrives later as a ``ticket_updated`` event and a note in the helpdesk. What a
    plugin sets on the draft is kept as for ``classify_ticket``. An exception here quarantines the
    message (stage ``enrich``).

    :param draft: the ``svcbridge.TicketDraft`` to enrich.
    :param ticket: the existing ``svcbridge.Ticket`` for a follow-up, ``None`` for a new ticket.
    :param settings: the validated ``svcbridge.Settings``.
    :param jobs: the ``svcbridge.WorkQueue`` of this ticket (see ``classify_ticket``).
    :param assets: the ``svcbridge.AssetLookup`` (see ``classify_ticket``): which unit a serial is,
        whose, its parts and dates.
    """


@hookspec(firstresult=True)
def asset_lookup(serial: str, register: AssetRegister, inline: bool) -> AssetRecord | None:
    """Answer for a serial number instead of (or before) svcbridge's local asset register: an ERP or CMDB.

    Called by the host's ``AssetLookup.get`` whenever a plugin asks for a unit: from the classify and
    enrich stages (``inline=True``) and from jobs and timers through ``Host.assets`` (``inline=False``).
    The first non-``None`` answer wins (firstresult); when every plugin answers ``None`` the local
    register answers.

    :param serial: the serial, normalised (upper case, no spaces; ``svcbridge.assets.normalize_serial``).
    :param register: svcbridge's own register, read-only (``svcbridge.AssetRegister``): merge with it,
        or fall back to it, as the source of truth demands.
    :param inline: ``True`` inside the pipeline's batch: answer only from what the plugin holds
        locally (a cache, a mirror) or return ``None``, never call a remote system (intake must not
        wait for it). ``False`` inside a durable job: a remote call is fine (it is retried on failure).

    Return a ``svcbridge.AssetRecord`` (its ``source`` naming the system, e.g. ``erp``) or ``None``.
    An exception is logged with the plugin's name and the lookup goes on as if it answered ``None``
    (inline, so intake never stops on it); in a job it propagates and the job is retried.
    """


# ---------------------------------------------------------------------------------------------------
# After the store: status changes and what the customer is told
# ---------------------------------------------------------------------------------------------------


@hookspec
def status_updated(ticket: Ticket, update: StatusUpdate, jobs: WorkQueue) -> None:
    """Observe a status change or agent reply reported by a helpdesk or vendor.

    Called for every plugin after the change was committed (ticket state and event trail updated).

    :param ticket: the ``svcbridge.Ticket`` after the change.
    :param update: the ``svcbridge.StatusUpdate`` as reported.
    :param jobs: the ticket's ``svcbridge.WorkQueue``: move or cancel its timers (an SLA clock that
        stops while the ticket waits for the customer or for parts), ask for jobs; written right
        after the hooks returned.

    An exception is logged with the plugin name and does not undo the change.
    """


@hookspec
def compose_notifications(
    ticket: Ticket,
    event: TicketEvent,
    draft: TicketDraft | None,
    settings: Settings,
    channels: ChannelDirectory,
) -> list[Notification] | None:
    """Say what the customer should be told about an event; every plugin's list is gathered.

    Called in the same transaction that stores a new message (event ``received``) or applies a status
    update (``status_changed``, ``reply``); the notifications become outbox rows, so they are sent at
    least once, with an idempotency key, after the commit.

    :param ticket: the ``svcbridge.Ticket`` as stored.
    :param event: the ``svcbridge.TicketEvent`` that triggered this (``received``, ``status_changed``...).
    :param draft: the ``svcbridge.TicketDraft`` for ``received`` events, else ``None``. Never answer
        a draft with ``automated=True`` (bounces, auto-replies).
    :param settings: the validated ``svcbridge.Settings`` (``settings.notifications.templates_dir``
        holds the operator's own templates).
    :param channels: the ``svcbridge.ChannelDirectory`` of the registered notifiers:
        ``channels.reach(ticket)`` says on which channel and at which address the customer can be
        told (the ticket's own channel, else ``[notifications] fallback_channels``) and whether the
        notice may carry HTML.

    Return a list of ``svcbridge.Notification`` or ``None``. Raising quarantines the message for a
    ``received`` event; for a status update it is logged and the update still commits.
    """
