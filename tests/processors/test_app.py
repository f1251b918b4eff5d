"""``processors/app.py`` helpers against real brokers (embedded noida-db and Apache Kafka).

The stream worker sends to topics that the producer's start-up metadata already lists. aiokafka
does not track such a topic, so the next metadata refresh for another topic drops it and the
batches still waiting for it never leave (the worker went silent after its first dead letters,
once in CI). ``track_topic`` must keep every sent-to topic in every refresh.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from callsense.processors.app import track_topic

from callsense.broker import EmbeddedBroker


async def _send_then_refresh_for_another_topic(bootstrap: str, track: bool) -> tuple[bool, bool]:
    """Send to topic A, then make the producer refresh its metadata for topic B while A's batch
    is still lingering. Returns (A was listed by the producer's start-up metadata, A's message
    was acknowledged within 10 s)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 2, 1) for t in ("topic-a", "topic-b")])
    finally:
        await admin.close()
    # a long linger keeps A's batch in the accumulator across the refresh (in the worker it was
    # a busy event loop that did)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1500)
    await producer.start()
    try:
        tracked: set[str] = set()
        listed = "topic-a" in producer.client.cluster.topics()
        if track:
            await track_topic(producer, "topic-a", tracked)
        fut = await producer.send("topic-a", b"value", key=b"k")
        await track_topic(producer, "topic-b", tracked)  # refresh for B alone (and A if tracked)
        try:
            await asyncio.wait_for(fut, 10)
        except TimeoutError:
            return listed, False
        return listed, True
    finally:
        # a stuck batch would make stop() wait for the request timeout
        producer._sender._sender_task.cancel()
        await producer.client.close()


@pytest.mark.parametrize("kind", ["noida", "kafka"])
@pytest.mark.parametrize("track", [False, True], ids=["untracked", "tracked"])
def test_sent_to_topic_survives_a_refresh_for_another_topic(
    request: pytest.FixtureRequest, tmp_path: Path, track: bool, kind: str
) -> None:
    """noida-db answers aiokafka's start-up metadata request (an empty topic list) with every
    topic, so a topic can be known but untracked, and an untracked send stalls. Apache Kafka
    answers it with no topic: the first send tracks its topic, nothing stalls. Tracking is kept
    for the embedded brokers (the demo's default); on Kafka it costs one metadata request."""
    if kind == "kafka":
        bootstrap = request.getfixturevalue("kafka").bootstrap
        listed, delivered = asyncio.run(_send_then_refresh_for_another_topic(bootstrap, track))
        assert (listed, delivered) == (False, True)
        return
    with EmbeddedBroker(kind, data_dir=tmp_path / "broker") as broker:
        listed, delivered = asyncio.run(
            _send_then_refresh_for_another_topic(broker.bootstrap, track)
        )
    # untracked: the library behaviour that stalled the worker (if aiokafka fixes it, this
    # assertion tells us the workaround is no longer needed)
    assert listed
    assert delivered is track


async def test_worker_consumer_fetches_with_the_configured_wait(tmp_path: Path) -> None:
    """Faust hands aiokafka a fixed ``fetch_max_wait_ms=1500``; the worker's consumer uses
    ``CALLSENSE_FETCH_WAIT_MS`` instead (a broker that answers a waiting fetch only when it
    expires delayed every hop by up to 1.5 s)."""
    from callsense.processors.app import create_app

    from callsense.settings import Settings

    settings = Settings(
        kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, fetch_wait_ms=120,
        database_url=f"sqlite:///{tmp_path}/x.db",
    )  # fmt: skip
    app = create_app(settings)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 120
    finally:
        await consumer.stop()


async def test_static_group_membership_under_noida_and_when_configured(tmp_path: Path) -> None:
    """noida-db never drops a killed member from its group: the worker's consumer joins with a
    static instance id there (and wherever CALLSENSE_WORKER_INSTANCE_ID is set), not elsewhere."""
    from callsense.processors.app import create_app

    from callsense.settings import Settings

    base = {"kafka_bootstrap": "127.0.0.1:1", "data_dir": tmp_path, "app_id": "cs-a",
            "database_url": f"sqlite:///{tmp_path}/x.db"}  # fmt: skip
    for extra, expected in [
        ({"broker_kind": "noida"}, "cs-a-worker"),
        ({"broker_kind": "kafka"}, None),
        ({"broker_kind": "kafka", "worker_instance_id": "pod-3"}, "pod-3"),
    ]:
        app = create_app(Settings(**base, **extra))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            assert consumer._group_instance_id == expected, extra
        finally:
            await consumer.stop()
