"""Signed webhooks against a real local HTTP receiver: signature, retries with backoff after
failures and a timeout, exactly-once arrival by id, delivery log, filters, the CLI."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator

import pytest
from callsense.processors.alerts import AlertEngine
from callsense.processors.webhooks import (
    Message,
    WebhookDeliverer,
    WebhookVerificationError,
    parse_endpoints,
    sign,
    verify,
)
from support.webhooks import SECRET, Receiver


@pytest.fixture
def sf(database_url: str) -> Iterator:
    from callsense.storage.db import make_engine, session_factory

    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


def alert_messages() -> list[Message]:
    eng = AlertEngine()
    call = [
        {
            "call_id": "w1",
            "speaker": "ch1",
            "role": "customer",
            "start_ms": i * 1000,
            "end_ms": i * 1000 + 3000,
            "label": "angry",
            "confidence": 0.9,
            "uncertain": False,
        }
        for i in range(6)
    ]
    events = [e for ev in call for e in eng.feed(ev)] + eng.end_call_local("w1")
    return [Message.from_alert_event(e) for e in events]


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_rejects_tampering_wrong_secret_and_stale_timestamps() -> None:
    body = b'{"a":1}'
    ts = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRET, "msg_1", ts, body),
    }
    assert verify(SECRET, headers, body) == "msg_1"
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(SECRET, headers, b'{"a":2}')
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, body)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(SECRET, headers, body, now=ts + 3600)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(SECRET, {"webhook-id": "x"}, body)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    d = WebhookDeliverer(endpoints=[], secret=SECRET, backoff_s=1.0, backoff_max_s=8.0)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (7, 8.0)]:
        samples = [d.delay(attempt) for _ in range(200)]
        assert all(base * 0.5 <= s <= base for s in samples)
        assert max(samples) - min(samples) > base * 0.3  # jitter, not a constant


def test_endpoint_filters() -> None:
    eps = parse_endpoints(
        "http://a.example/h, http://b.example/h?x=1#rule=negative_sustained&type=raised|resolved"
    )
    assert [e.url for e in eps] == ["http://a.example/h", "http://b.example/h?x=1"]
    alert = {"rule": "customer_anger", "severity": "warning", "role": "customer"}
    assert eps[0].accepts("alert.updated", alert)
    assert not eps[1].accepts("alert.raised", alert)
    assert eps[1].accepts("alert.raised", {**alert, "rule": "negative_sustained"})
    assert not eps[1].accepts("alert.updated", {**alert, "rule": "negative_sustained"})
    with pytest.raises(ValueError, match="unknown webhook filter"):
        parse_endpoints("http://a.example/h#colour=red")
    with pytest.raises(ValueError, match="http"):
        parse_endpoints("ftp://a.example/h")


def test_receiver_fails_then_recovers_and_the_alert_arrives_exactly_once(sf) -> None:
    from callsense.processors.webhooks import DeliveryLog

    from callsense.storage.alerts import recent_deliveries

    raised = alert_messages()[0]
    assert raised.type == "alert.raised"
    with Receiver(fail_first=3, slow_s=0.8) as recv:
        d = WebhookDeliverer(
            endpoints=parse_endpoints(recv.url),
            secret=SECRET,
            timeout_s=0.4,
            max_attempts=6,
            backoff_s=0.05,
            backoff_max_s=0.2,
            log=DeliveryLog(sf),
        )
        attempts = asyncio.run(d.deliver(raised))
        # at-least-once upstream: the same event is handed over again after a "crash"
        again = asyncio.run(d.deliver(raised))
        time.sleep(0.9)  # let the slow handler finish before counting
    assert [a.ok for a in attempts] == [False, False, False, True]
    assert attempts[1].error and "timeout" in attempts[1].error
    assert attempts[0].status_code == 503
    assert again[0].skipped
    assert all(r["valid"] for r in recv.requests)  # every attempt was correctly signed
    assert {r["id"] for r in recv.requests} == {raised.id}  # same webhook-id on each retry
    assert recv.accepted == {raised.id: 1}  # arrived exactly once
    body = recv.requests[-1]["body"]
    assert body["type"] == "alert.raised" and body["data"]["id"] == raised.alert["id"]
    assert body["data"]["rule"] == "customer_anger" and body["data"]["call_id"] == "w1"
    with sf() as s:
        log = sorted(recent_deliveries(s), key=lambda r: r.attempt)
    assert [(r.attempt, r.ok) for r in log] == [(1, False), (2, False), (3, False), (4, True)]
    assert {r.alert_id for r in log} == {raised.alert["id"]}


def test_gives_up_after_max_attempts_and_logs_each(sf) -> None:
    from callsense.processors.webhooks import DeliveryLog

    msg = alert_messages()[0]
    with Receiver(fail_first=100) as recv:
        d = WebhookDeliverer(
            endpoints=parse_endpoints(recv.url),
            secret=SECRET,
            max_attempts=3,
            backoff_s=0.01,
            log=DeliveryLog(sf),
        )
        attempts = asyncio.run(d.deliver(msg))
    assert [a.ok for a in attempts] == [False, False, False]
    assert recv.accepted == {}


def test_each_lifecycle_change_is_delivered_to_matching_endpoints() -> None:
    msgs = alert_messages()
    assert [m.type for m in msgs] == ["alert.raised", "alert.resolved"]
    with Receiver() as all_recv, Receiver() as resolved_only:
        d = WebhookDeliverer(
            endpoints=parse_endpoints(f"{all_recv.url},{resolved_only.url}#type=resolved"),
            secret=SECRET,
        )
        for m in msgs:
            asyncio.run(d.deliver(m))
    assert [r["body"]["type"] for r in all_recv.requests] == ["alert.raised", "alert.resolved"]
    assert [r["body"]["type"] for r in resolved_only.requests] == ["alert.resolved"]
    assert msgs[0].id != msgs[1].id


def test_cli_webhook_test_sends_a_signed_event(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from callsense.cli import main
    from callsense.settings import get_settings

    monkeypatch.setenv("CALLSENSE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("CALLSENSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CALLSENSE_DATABASE_URL", "")
    monkeypatch.setenv("CALLSENSE_WEBHOOK_BACKOFF_S", "0.01")
    get_settings.cache_clear()
    try:
        with Receiver(fail_first=1) as recv:
            result = CliRunner().invoke(main, ["webhook", "test", recv.url])
        assert result.exit_code == 0, result.output
        assert "attempt 1: failed status=503" in result.output
        assert "attempt 2: ok status=204" in result.output
        assert recv.requests[-1]["valid"] and recv.requests[-1]["body"]["type"] == "webhook.test"
        with Receiver(fail_first=100) as bad:
            result = CliRunner().invoke(main, ["webhook", "test", bad.url, "--attempts", "2"])
        assert result.exit_code == 1
    finally:
        get_settings.cache_clear()


def _dispatch(endpoints: str, msgs: list, **kw) -> tuple[list[str], object]:
    """Submit ``msgs`` to a dispatcher and wait for all of them; the ids whose on_done ran."""
    from callsense.processors.webhooks import WebhookDispatcher

    done: list[str] = []

    async def run() -> object:
        d = WebhookDispatcher(
            WebhookDeliverer(endpoints=parse_endpoints(endpoints), secret=SECRET, **kw)
        )
        for m in msgs:
            await d.submit(m, on_done=lambda m=m: done.append(m.id))
        await d.drain()
        await d.close()
        return d

    return done, asyncio.run(run())


def _messages(n: int) -> list:
    from callsense.processors.webhooks import Message

    return [Message(id=f"msg_{i}", type="alert.raised", payload={"i": i}, alert=None)
            for i in range(n)]  # fmt: skip


def test_a_hanging_endpoint_never_delays_another() -> None:
    from callsense.processors.webhooks import WebhookDispatcher

    msgs = _messages(5)
    with Receiver(hang_s=3.0) as hanging, Receiver() as healthy:

        async def run() -> tuple[int, int]:
            d = WebhookDispatcher(WebhookDeliverer(
                endpoints=parse_endpoints(f"{hanging.url},{healthy.url}"), secret=SECRET,
                timeout_s=0.5, max_attempts=2, backoff_s=0.05,
            ))  # fmt: skip
            for m in msgs:
                await d.submit(m)
            deadline = time.monotonic() + 10
            while len(healthy.accepted) < len(msgs) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            pending = d._queues[hanging.url].qsize()
            await d.close()
            return len(healthy.accepted), pending

        delivered, pending_at_hanging = asyncio.run(run())
    assert delivered == 5  # every message reached the healthy endpoint ...
    assert pending_at_hanging >= 3  # ... while the hanging one was still on its first ones


def test_410_disables_the_endpoint_and_other_4xx_are_not_retried() -> None:
    msgs = _messages(2)
    with Receiver(fail_first=100, fail_status=410) as gone:
        done, d = _dispatch(gone.url, msgs, max_attempts=5, backoff_s=0.01)
    assert len(gone.requests) == 1 and d.disabled == {gone.url}  # no retry, nothing more sent
    assert done == ["msg_0", "msg_1"]  # both finished (the second skipped): offsets may commit
    with Receiver(fail_first=100, fail_status=400) as refusing:
        done, d = _dispatch(refusing.url, msgs, max_attempts=5, backoff_s=0.01)
    assert [r["id"] for r in refusing.requests] == ["msg_0", "msg_1"]  # one attempt each
    assert d.disabled == set() and done == ["msg_0", "msg_1"]
    with Receiver(fail_first=2, fail_status=429) as throttled:
        done, d = _dispatch(throttled.url, msgs[:1], max_attempts=5, backoff_s=0.01)
    assert len(throttled.requests) == 3 and throttled.accepted == {"msg_0": 1}  # 429: retried


class FakeTime:
    """A clock that starts now and moves only when the deliverer sleeps; ``on_sleep`` runs after
    each sleep (e.g. to bring a receiver back, or to kill the worker)."""

    def __init__(self, on_sleep=None) -> None:
        self.now = time.time()
        self.start = self.now
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s
        if self.on_sleep is not None:
            self.on_sleep(self)


def _durable(recv: Receiver, sf, fake: FakeTime, horizon_s: float = 86400.0) -> WebhookDeliverer:
    from callsense.processors.webhooks import DeliveryLog

    return WebhookDeliverer(
        endpoints=parse_endpoints(recv.url), secret=SECRET, max_attempts=None,
        horizon_s=horizon_s, backoff_s=0.5, backoff_max_s=60.0, log=DeliveryLog(sf),
        sleep=fake.sleep, clock=fake,
    )  # fmt: skip


def test_a_receiver_down_for_ten_minutes_gets_the_alert_once(sf) -> None:
    """Retries go on past any attempt count until the receiver is back (the horizon is a day);
    the alert arrives once by id. Time is simulated: the deliverer sleeps on a fake clock."""
    msg = alert_messages()[0]
    with Receiver(fail_first=10**9) as recv:

        def back_after_ten_minutes(t: FakeTime) -> None:
            if t.now - t.start >= 600:
                recv.fail_first = 0

        fake = FakeTime(back_after_ten_minutes)
        attempts = asyncio.run(_durable(recv, sf, fake).deliver(msg))
    assert attempts[-1].ok and not any(a.ok for a in attempts[:-1])
    assert 600 <= fake.now - fake.start < 600 + 60  # no wait longer than the 60 s cap
    assert len(attempts) > 6  # more than the old fixed six attempts
    assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
    assert recv.accepted == {msg.id: 1}


def test_retries_resume_after_a_worker_restart_and_stop_at_the_horizon(sf) -> None:
    """A worker killed between retries: the next hand-over of the same event (Kafka redelivers
    it, its offset was never committed) continues the logged attempts and delivers once; an
    event whose first attempt is older than the horizon is not sent again."""
    msgs = alert_messages()

    class Killed(Exception):
        pass

    def kill_after_three(t: FakeTime) -> None:
        if recv.requests and len(recv.requests) >= 3:
            raise Killed

    with Receiver(fail_first=10**9) as recv:
        with pytest.raises(Killed):
            asyncio.run(_durable(recv, sf, FakeTime(kill_after_three)).deliver(msgs[0]))
        recv.fail_first = 0  # the receiver is back; a new worker takes over
        after = asyncio.run(_durable(recv, sf, FakeTime()).deliver(msgs[0]))
        again = asyncio.run(_durable(recv, sf, FakeTime()).deliver(msgs[0]))
    assert [(a.attempt, a.ok) for a in after] == [(4, True)]
    assert again[0].skipped and recv.accepted == {msgs[0].id: 1}

    with Receiver(fail_first=10**9) as down:
        fake = FakeTime()
        gave_up = asyncio.run(_durable(down, sf, fake, horizon_s=300).deliver(msgs[1]))
        assert not any(a.ok for a in gave_up) and fake.now - fake.start <= 300
        n = len(down.requests)
        later = FakeTime()
        later.now += 400  # handed over again after the horizon
        late = asyncio.run(_durable(down, sf, later, horizon_s=300).deliver(msgs[1]))
    assert late[0].skipped and late[0].error == "retry horizon passed"
    assert len(down.requests) == n
