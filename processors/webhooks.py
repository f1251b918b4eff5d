"""Signed alert webhooks (Standard Webhooks convention) with retries and a delivery log.

Every alert change (:class:`callsense.processors.alerts.AlertEvent`) is POSTed as JSON to each
configured endpoint whose filter matches. Headers::

    webhook-id: msg_...            (same on every retry: receivers deduplicate by it)
    webhook-timestamp: 1763769600  (unix seconds of this attempt)
    webhook-signature: v1,<base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))>

The key is the secret from ``CALLSENSE_WEBHOOK_SECRET``: ``whsec_<base64>`` is decoded, any
other string is used as UTF-8 bytes. Failed attempts (timeout, connection error, 5xx, 408, 429)
are retried with capped exponential backoff and jitter until ``CALLSENSE_WEBHOOK_RETRY_HORIZON_S``
after the event's first attempt (24 h by default; ``CALLSENSE_WEBHOOK_MAX_ATTEMPTS`` may also cap
the attempts); another 4xx is not retried, and 410 Gone disables the endpoint. Every attempt is
logged in ``webhook_deliveries`` and an event already delivered to an endpoint is never sent
there again. The outbox is durable: an alert event's Kafka offset is committed only when every
endpoint is done with it, so after a worker restart it is handed over again and its retries
resume where the log says (same attempt count, same horizon). Each endpoint has its own queue
and sender (:class:`WebhookDispatcher`): a hanging endpoint never delays another.

Endpoints (``CALLSENSE_WEBHOOK_URL``): comma separated; each may carry a filter in its URL
fragment, which is never sent: ``https://ops.example/hook#rule=customer_anger|negative_sustained
&type=raised|resolved&severity=critical&role=customer``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import click
import httpx
from callsense.processors.alerts import AlertEvent

if TYPE_CHECKING:
    from callsense.settings import Settings

SIGNATURE_TOLERANCE_S = 300
logger = logging.getLogger(__name__)


class WebhookVerificationError(Exception):
    """A webhook request whose headers or signature do not verify."""


def secret_key(secret: str) -> bytes:
    """Key bytes of a Standard Webhooks secret (``whsec_<base64>``) or a raw secret string."""
    if not secret:
        raise ValueError("empty webhook secret")
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except ValueError as exc:
            raise ValueError("webhook secret 'whsec_...' is not valid base64") from exc
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Verify a received webhook; returns its id or raises :class:`WebhookVerificationError`."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        raise WebhookVerificationError("missing webhook-id/timestamp/signature header")
    try:
        timestamp = int(ts)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from exc
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance window")
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in sigs.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return msg_id
    raise WebhookVerificationError("no matching v1 signature")


@dataclass(frozen=True)
class Endpoint:
    url: str
    rules: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    def accepts(self, event_type: str, alert: Mapping[str, Any] | None) -> bool:
        if alert is None:  # test messages go everywhere
            return True
        short = event_type.removeprefix("alert.")
        return (
            (not self.types or short in self.types or event_type in self.types)
            and (not self.rules or alert.get("rule") in self.rules)
            and (not self.severities or alert.get("severity") in self.severities)
            and (not self.roles or alert.get("role") in self.roles)
        )


_FILTER_KEYS = {"rule": "rules", "type": "types", "severity": "severities", "role": "roles"}


def parse_endpoints(text: str) -> list[Endpoint]:
    """Endpoints from ``CALLSENSE_WEBHOOK_URL`` (see the module doc for the filter syntax)."""
    out: list[Endpoint] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL must be http(s)://host/...: {item!r}")
        filters: dict[str, frozenset[str]] = {}
        for key, values in parse_qs(parts.fragment, keep_blank_values=False).items():
            if key not in _FILTER_KEYS:
                raise ValueError(f"unknown webhook filter {key!r} (use {sorted(_FILTER_KEYS)})")
            filters[_FILTER_KEYS[key]] = frozenset(v for val in values for v in val.split("|"))
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
        out.append(Endpoint(url=url, **filters))
    return out


@dataclass
class Message:
    """What is sent: id (webhook-id), JSON payload, and the alert (for endpoint filters)."""

    id: str
    type: str
    payload: dict[str, Any]
    alert: dict[str, Any] | None = None

    @classmethod
    def from_alert_event(cls, ev: AlertEvent) -> Message:
        return cls(id=ev.event_id, type=ev.type, payload=ev.payload(), alert=ev.alert)

    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Attempt:
    url: str
    attempt: int
    status_code: int | None
    ok: bool
    error: str | None
    skipped: bool = False


class DeliveryLog:
    """Delivery log in the database (``webhook_deliveries``); sync, called off the loop."""

    def __init__(self, session_factory: Callable[[], Any]) -> None:
        self._sf = session_factory

    def delivered(self, event_id: str, url: str) -> tuple[bool, int, float | None]:
        """(delivered already, attempts so far, epoch of the first attempt or None)."""
        from callsense.storage import alerts as store

        with self._sf() as s:
            first = store.first_attempt_at(s, event_id, url)
            return (
                store.delivered(s, event_id, url),
                store.last_attempt(s, event_id, url),
                first.timestamp() if first is not None else None,
            )

    def record(self, msg: Message, a: Attempt) -> None:
        from callsense.storage import alerts as store

        with self._sf() as s, s.begin():
            store.record_delivery(
                s,
                event_id=msg.id,
                alert_id=(msg.alert or {}).get("id"),
                url=a.url,
                attempt=a.attempt,
                status_code=a.status_code,
                ok=a.ok,
                error=a.error,
            )


@dataclass
class WebhookDeliverer:
    endpoints: list[Endpoint]
    secret: str
    timeout_s: float = 5.0
    max_attempts: int | None = 6  # per hand-over; None: only the horizon ends the retries
    backoff_s: float = 0.5
    backoff_max_s: float = 60.0
    log: DeliveryLog | None = None
    horizon_s: float | None = None  # no attempt after this long since the first one
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    clock: Callable[[], float] = time.time
    transport: httpx.AsyncBaseTransport | None = None

    def __post_init__(self) -> None:
        secret_key(self.secret)  # fail early on a malformed secret
        if self.max_attempts is None and self.horizon_s is None:
            raise ValueError("webhook retries need max_attempts or a horizon")

    def delay(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1``: capped exponential, jittered to 50-100 %."""
        base = min(self.backoff_max_s, self.backoff_s * (2 ** (attempt - 1)))
        return base * (0.5 + 0.5 * self.rng.random())

    def targets(self, msg: Message, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """URLs of the endpoints whose filter accepts ``msg`` (minus ``skip``)."""
        return [
            e.url for e in self.endpoints if e.url not in skip and e.accepts(msg.type, msg.alert)
        ]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.timeout_s, transport=self.transport, follow_redirects=False
        )

    async def deliver(self, msg: Message) -> list[Attempt]:
        """Send one message to every matching endpoint (concurrently); returns all attempts."""
        targets = self.targets(msg)
        if not targets:
            return []
        async with self.client() as client:
            results = await asyncio.gather(*(self.send(client, url, msg) for url in targets))
        return [a for r in results for a in r]

    async def send(self, client: httpx.AsyncClient, url: str, msg: Message) -> list[Attempt]:
        """Deliver ``msg`` to one endpoint: attempts with backoff until one succeeds, the
        answer is not worth retrying, or the attempts or the horizon run out; each one logged
        (a hand-over after a restart continues the logged attempts and horizon)."""
        first, started = 1, self.clock()
        if self.log is not None:
            done, last, first_at = await asyncio.to_thread(self.log.delivered, msg.id, url)
            if done:
                return [Attempt(url, last, None, True, "already delivered", skipped=True)]
            first, started = last + 1, first_at if first_at is not None else started
            if self.horizon_s is not None and self.clock() - started > self.horizon_s:
                return [Attempt(url, last, None, False, "retry horizon passed", skipped=True)]
        body = msg.body()
        out: list[Attempt] = []
        attempt = first
        while True:
            ts = int(time.time())  # the signed timestamp is always the real time
            headers = {
                "content-type": "application/json",
                "user-agent": "callsense-webhooks/1",
                "webhook-id": msg.id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(self.secret, msg.id, ts, body),
            }
            try:
                resp = await client.post(url, content=body, headers=headers)
                ok = 200 <= resp.status_code < 300
                a = Attempt(url, attempt, resp.status_code, ok, None if ok else resp.text[:200])
            except httpx.TimeoutException:
                a = Attempt(url, attempt, None, False, f"timeout after {self.timeout_s:g} s")
            except httpx.HTTPError as exc:
                a = Attempt(url, attempt, None, False, f"{type(exc).__name__}: {exc}"[:300])
            out.append(a)
            if self.log is not None:
                await asyncio.to_thread(self.log.record, msg, a)
            if a.ok or not retryable(a.status_code):
                break
            if self.max_attempts is not None and len(out) >= self.max_attempts:
                break
            delay = self.delay(min(attempt, 30))
            if self.horizon_s is not None and self.clock() + delay - started > self.horizon_s:
                break
            await self.sleep(delay)
            attempt += 1
        return out


def retryable(status_code: int | None) -> bool:
    """Timeouts, connection errors, 5xx, 408 and 429 are worth another attempt; any other
    answer (a 4xx: the receiver refuses this request as it is) is not."""
    return status_code is None or status_code >= 500 or status_code in (408, 429)


class WebhookDispatcher:
    """One queue and one sender per endpoint, so a slow or hanging endpoint delays only its
    own deliveries. ``submit`` returns once the message is queued everywhere it goes (it waits
    while a queue is full: backpressure); ``on_done`` runs when every endpoint has finished
    with it (delivered, given up, or skipped), which is when its Kafka offset may be
    committed. An endpoint answering 410 Gone is disabled until the worker restarts."""

    def __init__(self, deliverer: WebhookDeliverer, queue_size: int = 1000) -> None:
        self.deliverer = deliverer
        self.queue_size = queue_size
        self.disabled: set[str] = set()
        self._queues: dict[str, asyncio.Queue] = {}
        self._tasks: list[asyncio.Task] = []
        self._client: httpx.AsyncClient | None = None

    def _queue(self, url: str) -> asyncio.Queue:
        if url not in self._queues:
            if self._client is None:
                self._client = self.deliverer.client()
            self._queues[url] = asyncio.Queue(self.queue_size)
            self._tasks.append(asyncio.create_task(self._send(url), name=f"webhook {url}"))
        return self._queues[url]

    async def submit(self, msg: Message, on_done: Callable[[], Any] | None = None) -> None:
        targets = self.deliverer.targets(msg, skip=self.disabled)
        left = [len(targets)]

        def one_done() -> None:
            left[0] -= 1
            if left[0] == 0 and on_done is not None:
                on_done()

        if not targets and on_done is not None:
            on_done()
        for url in targets:
            await self._queue(url).put((msg, one_done))

    async def _send(self, url: str) -> None:
        q = self._queues[url]
        while True:
            msg, done = await q.get()
            try:
                if url not in self.disabled:
                    assert self._client is not None  # made with this endpoint's queue
                    attempts = await self.deliverer.send(self._client, url, msg)
                    if attempts and attempts[-1].status_code == 410:
                        self.disabled.add(url)
                        logger.error("webhook endpoint %s answered 410 Gone: disabled", url)
                    elif attempts and not any(a.ok for a in attempts):
                        logger.error("webhook %s (%s) not delivered to %s after %d attempts",
                                     msg.id, msg.type, url, len(attempts))  # fmt: skip
            except Exception:  # a bug in one delivery must not stop this endpoint's sender
                logger.exception("webhook %s to %s failed", msg.id, url)
            finally:
                done()
                q.task_done()

    async def drain(self) -> None:
        """Wait until every queued message has been handled (tests, shutdown)."""
        for q in list(self._queues.values()):
            await q.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


def deliverer_from_settings(settings: Settings, session_factory: Any | None = None):
    """The configured deliverer, or ``None`` when no endpoint is configured."""
    endpoints = parse_endpoints(settings.webhook_url)
    if not endpoints:
        return None
    if settings.webhook_secret is None:
        raise ValueError("CALLSENSE_WEBHOOK_SECRET is required when CALLSENSE_WEBHOOK_URL is set")
    return WebhookDeliverer(
        endpoints=endpoints,
        secret=settings.webhook_secret.get_secret_value(),
        timeout_s=settings.webhook_timeout_s,
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        log=DeliveryLog(session_factory) if session_factory is not None else None,
        horizon_s=settings.webhook_retry_horizon_s,
    )


def probe_message() -> Message:
    now = datetime.now(UTC)
    msg_id = "msg_test_" + hashlib.sha256(now.isoformat().encode()).hexdigest()[:20]
    return Message(
        id=msg_id,
        type="webhook.test",
        payload={
            "type": "webhook.test",
            "timestamp": now.isoformat(),
            "data": {"message": "callsense webhook test"},
        },
    )


@click.group("webhook")
def webhook_group() -> None:
    """Alert webhook tools."""


@webhook_group.command("test")
@click.argument("url")
@click.option("--attempts", type=click.IntRange(1, 20), default=None, help="Max attempts.")
def webhook_test_cmd(url: str, attempts: int | None) -> None:
    """Send a signed test event to URL (with the configured secret, retries and log)."""
    from callsense.settings import get_settings
    from callsense.storage.db import make_engine, session_factory

    settings = get_settings()
    if settings.webhook_secret is None:
        raise click.ClickException("set CALLSENSE_WEBHOOK_SECRET to sign the test event")
    try:
        endpoints = parse_endpoints(url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    engine = make_engine(settings.effective_database_url)
    try:
        from callsense.storage.db import upgrade

        upgrade(settings.effective_database_url)
        deliverer = WebhookDeliverer(
            endpoints=endpoints,
            secret=settings.webhook_secret.get_secret_value(),
            timeout_s=settings.webhook_timeout_s,
            max_attempts=attempts or settings.webhook_max_attempts or 6,
            backoff_s=settings.webhook_backoff_s,
            backoff_max_s=settings.webhook_backoff_max_s,
            log=DeliveryLog(session_factory(engine)),
        )
        msg = probe_message()
        results = asyncio.run(deliverer.deliver(msg))
    finally:
        engine.dispose()
    for a in results:
        state = "ok" if a.ok else "failed"
        click.echo(f"attempt {a.attempt}: {state} status={a.status_code} {a.error or ''}".rstrip())
    click.echo(json.dumps({"webhook_id": msg.id, "delivered": any(a.ok for a in results)}))
    if not any(a.ok for a in results):
        raise SystemExit(1)
