"""The HTTP API on the worker's web port: customer health, alerts, acks, snoozes, at-risk export.

`GET /customers/{customer_id}` is answered by the worker owning the customer's partition; any
other worker forwards the request there, once (a forwarded request is never forwarded again).
Alert routes read and write the SQL alert store (`database_url`) in a thread. The contract is
docs/openapi.yaml; docs/api.md has examples. Request checks and reply bodies are in
agents.api_formats.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import aiohttp
import structlog
from faust.web import View
from kafka.partitioner.default import murmur2
from sqlalchemy.exc import SQLAlchemyError
from yarl import URL

from agents.alert_sink import open_store
from agents.api_formats import (
    CSV_TYPE,
    JSON_TYPE,
    ApiError,
    Reply,
    alert_filters,
    at_risk_csv,
    at_risk_json,
    check_alert_id,
    invalid,
    json_body,
    json_reply,
    name_field,
    note_field,
    one,
    only,
    prefers_csv,
    time_field,
    transition_json,
    unavailable,
)
from churnwatch.domain.alertwire import Transition
from churnwatch.exceptions import AlertNotFoundError, InvalidAlertRequestError
from churnwatch.store.alerts import AlertPage, AlertRecord
from streams.commands import send_snooze
from streams.topics import CUSTOMERS_TABLE

if TYPE_CHECKING:
    from streams.app import Worker

log = structlog.get_logger(__name__)

STATE_WAIT_SECONDS = 5.0  # for the ingest batch in flight to finish
FORWARD_TIMEOUT_SECONDS = 10.0
SEND_TIMEOUT_SECONDS = 10.0
FORWARDED_HEADER = "X-Churnwatch-Forwarded"  # set on a forwarded request: never forward again
WORKER_HEADER = "X-Churnwatch-Worker"  # the worker that computed a customer's health
ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/customers/{customer_id}"),
    ("GET", "/alerts"),
    ("GET", "/alerts/{alert_id}"),
    ("POST", "/alerts/{alert_id}/ack"),
    ("POST", "/alerts/{alert_id}/snooze"),
    ("GET", "/at-risk"),
)
T = TypeVar("T")


class AlertQueries(Protocol):
    """What the API asks of the alert store (churnwatch.store.alerts.AlertStore)."""

    def list_alerts(
        self,
        status: str | None = None,
        severity: str | None = None,
        reason: str | None = None,
        segment: Mapping[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AlertPage: ...
    def get(self, alert_id: str) -> AlertRecord: ...
    def transitions(self, alert_id: str) -> tuple[Transition, ...]: ...
    def acknowledge(
        self, alert_id: str, by: str, note: str | None, at: datetime
    ) -> AlertRecord: ...
    def snooze(self, alert_id: str, until: datetime, by: str, at: datetime) -> AlertRecord: ...
    def at_risk(self) -> Sequence[AlertRecord]: ...


class KeyOwners(Protocol):
    """Which worker owns a customer's partition."""

    def owner(self, customer_id: str) -> str | None:
        """None: this worker; else the owner's base URL. LookupError: none known right now."""


# Tells the stream to open no alert for a customer before a time (streams.commands).
SnoozeSender = Callable[[str, datetime], Awaitable[None]]


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives a customer's events."""
    return int(murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


class FaustKeyOwners:
    """Owners from the worker's assignment and the group's table metadata."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def owner(self, customer_id: str) -> str | None:
        worker = self._worker
        partition = partition_of(customer_id, worker.settings.partitions)
        if partition in worker.owned_partitions():
            return None
        changelog = worker.customers.changelog_topic.get_topic_name()
        own = URL(str(worker.app.conf.canonical_url)).origin()
        for url, topics in worker.app.router.table_metadata(CUSTOMERS_TABLE).items():
            if partition in topics.get(changelog, ()) and URL(url).origin() != own:
                return str(url)
        raise LookupError(f"no worker owns partition {partition} right now")


def install(
    worker: Worker,
    store: AlertQueries | None = None,
    *,
    owners: KeyOwners | None = None,
    snoozes: SnoozeSender | None = None,
) -> Api:
    """Register the API's views; called again on the same app, swap in what is given (tests).

    `store` defaults to the SQL store at `database_url` (opened on first use), `owners` to the
    Faust assignment, `snoozes` to a control message on the usage topic.
    """
    installed = worker.app.web.views.get(ROUTES[0][1])
    if installed is not None and isinstance(getattr(installed, "api", None), Api):
        api: Api = cast(Any, installed).api
        api.replace(store, owners, snoozes)
        return api
    api = Api(worker, store, owners, snoozes)
    handlers: tuple[Callable[..., Awaitable[Reply]], ...] = (
        api.customer,
        api.alerts,
        api.alert,
        api.ack,
        api.snooze,
        api.at_risk,
    )
    for (method, path), handler in zip(ROUTES, handlers, strict=True):
        worker.app.page(path, name=f"api_{handler.__name__}")(_view(method, handler, api))
    return api


def _view(method: str, handler: Callable[..., Awaitable[Reply]], api: Api) -> type[View]:
    async def respond(self: View, request: Any, **match: str) -> Any:
        reply = await api.serve(request, partial(handler, request, **match))
        headers = {"Content-Type": reply.content_type, **reply.headers}
        return self.bytes(reply.body, status=reply.status, headers=headers)

    attributes = {method.lower(): respond, "api": api, "__module__": __name__}
    return cast(type[View], type(f"Api{handler.__name__.title()}View", (View,), attributes))


class Api:
    """The route handlers and what they need; each returns a Reply or raises ApiError."""

    def __init__(
        self,
        worker: Worker,
        store: AlertQueries | None = None,
        owners: KeyOwners | None = None,
        snoozes: SnoozeSender | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._worker = worker
        self._store = store
        self._opening = asyncio.Lock()
        self._owners: KeyOwners = owners or FaustKeyOwners(worker)
        topic = worker.settings.topics.usage
        self._snoozes: SnoozeSender = snoozes or partial(send_snooze, worker.app, topic)
        self._now = now
        token = worker.settings.api_token
        self._token = None if token is None else token.get_secret_value().encode()
        self._url = str(worker.app.conf.canonical_url)

    def replace(
        self, store: AlertQueries | None, owners: KeyOwners | None, snoozes: SnoozeSender | None
    ) -> None:
        if store is not None:
            self._store = store
        if owners is not None:
            self._owners = owners
        if snoozes is not None:
            self._snoozes = snoozes

    async def serve(self, request: Any, handle: Callable[[], Awaitable[Reply]]) -> Reply:
        try:
            self._authorize(request)
            return await handle()
        except ApiError as error:
            return error.reply()

    def _authorize(self, request: Any) -> None:
        if self._token is None:
            return
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        given = presented.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() == "bearer" and hmac.compare_digest(given, self._token):
            return
        challenge = 'Bearer realm="churnwatch"'
        if scheme:
            challenge += ', error="invalid_token"'
        raise ApiError(
            401,
            "unauthorized",
            "this route needs Authorization: Bearer <token>",
            headers={"WWW-Authenticate": challenge},
        )

    async def customer(self, request: Any, customer_id: str) -> Reply:
        """The customer's health as of its partition's last evaluated day."""
        worker = self._worker
        longest = worker.settings.limits.max_id_length
        if not 0 < len(customer_id) <= longest:
            raise invalid("customer_id", f"customer_id must have 1 to {longest} characters")
        if not worker.settled():
            raise unavailable("rebalancing", "partitions are moving or restoring; retry")
        try:
            owner = self._owners.owner(customer_id)
        except LookupError:
            raise unavailable("owner_unknown", "no worker owns the customer right now") from None
        if owner is not None:
            if FORWARDED_HEADER in request.headers:
                raise unavailable("owner_moved", "the customer's partition moved; retry")
            return await self._forward(request, owner)
        try:
            async with asyncio.timeout(STATE_WAIT_SECONDS), worker.lock:
                found = self._health(customer_id)
        except TimeoutError:
            raise unavailable("busy", "the worker is busy with a batch; retry") from None
        return json_reply(found, headers={WORKER_HEADER: self._url})

    def _health(self, customer_id: str) -> dict[str, Any]:
        worker = self._worker
        state = worker.customer(customer_id)
        if state is None:  # none, or a partition clock's key
            raise ApiError(404, "customer_not_found", "no customer with this id", "customer_id")
        as_of_day = worker.clocks.get(state.partition).evaluated_day
        if as_of_day is None:
            raise unavailable("not_evaluated", "the customer's partition has no day evaluated yet")
        # The low-engagement cutoff of the customer's segment that day (None: not ranked).
        segment = worker.engine.segment_labels(state, as_of_day)
        cutoff = worker.ingest.cutoffs.get(state.partition, {}).get(segment)
        return worker.engine.health(state, as_of_day, cutoff).to_json_dict()

    async def _forward(self, request: Any, owner: str) -> Reply:
        target = URL(str(URL(owner).origin()) + str(request.rel_url), encoded=True)
        headers = {FORWARDED_HEADER: self._url}
        for name in ("Authorization", "Accept"):
            if name in request.headers:
                headers[name] = request.headers[name]
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
        client = self._worker.app.http_client
        try:
            async with client.get(target, headers=headers, timeout=timeout) as response:
                status, body = response.status, await response.read()
                passed = ("Content-Type", "WWW-Authenticate", "Retry-After", WORKER_HEADER)
                kept = {name: response.headers[name] for name in passed if name in response.headers}
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("api_forward_failed", owner=owner, error=type(exc).__name__)
            raise ApiError(
                502, "owner_unreachable", "the worker owning it did not answer"
            ) from None
        content_type = kept.pop("Content-Type", JSON_TYPE)
        return Reply(status, body, content_type, kept)

    async def alerts(self, request: Any) -> Reply:
        """One page of alerts, newest first, filtered."""
        filters = alert_filters(request.query)
        page = await self._stored(lambda store: store.list_alerts(**filters), "cursor")
        items = [alert.as_json_dict() for alert in page.alerts]
        return json_reply({"items": items, "next_cursor": page.next_cursor})

    async def alert(self, request: Any, alert_id: str) -> Reply:
        """An alert's latest state and what people did, with its transitions."""
        check_alert_id(alert_id)

        def read(store: AlertQueries) -> tuple[AlertRecord, tuple[Transition, ...]]:
            return store.get(alert_id), store.transitions(alert_id)

        record, transitions = await self._stored(read)
        body = record.as_json_dict() | {"transitions": [transition_json(t) for t in transitions]}
        return json_reply(body)

    async def ack(self, request: Any, alert_id: str) -> Reply:
        """Record who acknowledged the alert and why."""
        check_alert_id(alert_id)
        body = await json_body(request, required={"by"}, optional={"note"})
        by, note = name_field(body, "by"), note_field(body, "note")
        at = self._now()
        record = await self._stored(lambda store: store.acknowledge(alert_id, by, note, at))
        log.info("api_alert_acknowledged", alert_id=alert_id)
        return json_reply(record.as_json_dict())

    async def snooze(self, request: Any, alert_id: str) -> Reply:
        """Silence the alert until a time, and tell the stream: no new alert opens before it."""
        check_alert_id(alert_id)
        body = await json_body(request, required={"until", "by"}, optional=set())
        until, by = time_field(body, "until"), name_field(body, "by")
        at = self._now()
        if until <= at:
            raise invalid("until", "until must be in the future")
        record = await self._stored(lambda store: store.snooze(alert_id, until, by, at))
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                await self._snoozes(record.customer_id, until)
        except Exception as exc:  # the producer fails in many ways (not started, broker, timeout)
            log.warning("api_snooze_not_sent", alert_id=alert_id, error=type(exc).__name__)
            raise unavailable(
                "stream_unavailable", "the snooze is stored but the stream was not told; retry"
            ) from None
        log.info("api_alert_snoozed", alert_id=alert_id)
        return json_reply(record.as_json_dict())

    async def at_risk(self, request: Any) -> Reply:
        """Every open alert, highest risk first, as JSON or CSV."""
        only(request.query, {"format"})
        fmt = one(request.query, "format", ("json", "csv"))
        records = await self._stored(lambda store: store.at_risk())
        if fmt == "csv" or (fmt is None and prefers_csv(request.headers.get("Accept", ""))):
            segment_by = self._worker.settings.churn.segment_by
            return Reply(200, at_risk_csv(records, segment_by), CSV_TYPE)
        items = [at_risk_json(record) for record in records]
        return json_reply({"items": items, "count": len(items)})

    async def _stored(
        self, call: Callable[[AlertQueries], T], invalid_field: str | None = None
    ) -> T:
        """Run a blocking store call in a thread; map its errors to replies."""
        try:
            store = await self._open()
            return await asyncio.to_thread(call, store)
        except AlertNotFoundError:
            raise ApiError(404, "alert_not_found", "no alert with this id", "alert_id") from None
        except InvalidAlertRequestError as exc:
            raise ApiError(400, "invalid_request", str(exc), invalid_field) from None
        except SQLAlchemyError as exc:
            log.warning("api_store_failed", error=str(exc).splitlines()[0][:300])
            raise unavailable("store_unavailable", "the alert store did not answer") from None

    async def _open(self) -> AlertQueries:
        """The store given, or the SQL store at `database_url`, opened (and migrated) once."""
        async with self._opening:
            if self._store is None:
                url = self._worker.settings.database_url
                self._store = await asyncio.to_thread(open_store, url)
            return self._store
