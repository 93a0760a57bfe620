"""Poison messages on every consumed topic, through Apache Kafka into the real services.

For every (service, topic) pair a service consumes: malformed JSON, binary junk, empty and
``null`` values, an unknown schema_version, an unknown field, an oversized value (~900 KB) and a
wrong type, then one valid message, all with the same key (so the same partition). Each poison
record must land in ``<topic>.dlq`` with its original bytes, key and the ``x-dlq-*`` headers; the
valid one must be handled (counted as consumed, committed, not dead-lettered), so the partition
keeps moving. One instance of each service serves all its topics.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from services.event_triggers.app import create_app as create_triggers
from services.mail_scanner.app import create_app as create_scanner
from services.mass_mailer.app import create_app as create_mailer
from shared.consumer import MAX_REASON_CHARS
from shared.metrics import MESSAGES_CONSUMED
from shared.topics import CONSUMED_TOPICS, dlq
from tests.integration.harness import AUTH, eventually
from tests.reliability.hostile_support import Running, fleet, read_all
from tests.servers.smtp import SmtpSink

pytestmark = pytest.mark.timeout(300)

SECRET_MARKER = "PRIVATE-CONTENT-7c1e"  # in poison values: must never be echoed in a DLQ reason


def _now(hours: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


# One valid message per topic; ``n`` makes ids unique. ``field`` is the bounded string field the
# oversized and wrong-type poisons attack.
def contact(n: str) -> dict[str, Any]:
    return {
        "kind": "contact.upserted",
        "contact_id": f"c-{n}",
        "email": f"p{n}@example.org",
        "first_name": "Eve",
    }


def membership(n: str) -> dict[str, Any]:
    return {"kind": "target_group.member_added", "target_group_id": f"g-{n}", "contact_id": f"c-{n}"}


def outbound(n: str) -> dict[str, Any]:
    return {"correlation_id": f"poison-{n}", "to": [f"p{n}@example.org"], "subject": "ok", "text": "body"}


def bulk(n: str) -> dict[str, Any]:
    # A mailing that does not exist (or is not sending): the sender ignores the batch.
    return {"mailing_id": 987654, "template_version_id": 1, "recipients": [
        {"delivery_id": 1, "contact_id": f"c-{n}", "email": f"p{n}@example.org"}]}  # fmt: skip


def delivery(n: str) -> dict[str, Any]:
    return {"correlation_id": f"et:1:{n}", "recipient": f"p{n}@example.org", "status": "sent"}


def mass_event(n: str) -> dict[str, Any]:
    return {"kind": "mass_event.created", "event_id": f"e-{n}", "event_number": "E1", "name": "Fair",
            "start": _now(48), "end": _now(50), "time_zone": "Europe/Berlin"}  # fmt: skip


def registration(n: str) -> dict[str, Any]:
    return {"kind": "registration.created", "registration_id": f"r-{n}", "event_id": f"e-{n}",
            "contact_id": f"c-{n}", "contact": {"email": f"p{n}@example.org"}}  # fmt: skip


def template(n: str) -> dict[str, Any]:
    return {
        "kind": "template.upserted",
        "template_id": int(n[:6], 16),
        "name": f"T{n}",
        "current_version_id": 1,
    }


VALID: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "crm.contacts": (contact, "contact_id"),
    "crm.target-groups": (membership, "target_group_id"),
    "mail.outbound.transactional": (outbound, "correlation_id"),
    "mail.outbound.bulk": (bulk, "mailing_id"),
    "mail.delivery-events": (delivery, "correlation_id"),
    "crm.mass-events": (mass_event, "event_id"),
    "crm.registrations": (registration, "registration_id"),
    "mail.templates": (template, "name"),
}
SERVICES = {"mass_mailer": create_mailer, "mail_scanner": create_scanner, "event_triggers": create_triggers}
PAIRS = [
    ("mass_mailer", "crm.contacts"),
    ("mass_mailer", "crm.target-groups"),
    ("mass_mailer", "mail.outbound.transactional"),
    ("mass_mailer", "mail.outbound.bulk"),
    ("mass_mailer", "mail.delivery-events"),
    ("mail_scanner", "crm.contacts"),
    ("event_triggers", "crm.mass-events"),
    ("event_triggers", "crm.registrations"),
    ("event_triggers", "mail.templates"),
    ("event_triggers", "mail.delivery-events"),
]


def poisons(topic: str, n: str) -> dict[str, bytes]:
    """name -> raw value. Every one must be dead-lettered at validation (attempt 0)."""
    make, field = VALID[topic]
    good = make(n)

    def variant(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}).encode()

    return {
        "malformed-json": json.dumps(good).encode()[:-7] + f'"{SECRET_MARKER}'.encode(),
        "binary": b"\xff\xfe\x00\x81" + SECRET_MARKER.encode() + bytes(range(256)),
        "empty": b"",
        "null": b"null",
        "schema-version": variant(schema_version=2),
        "unknown-field": variant(unexpected_field=SECRET_MARKER),
        "oversized": variant(**{field: SECRET_MARKER + "x" * 900_000}),
        "wrong-type": variant(**{field: {"$ne": [SECRET_MARKER]}}),
    }


@pytest.fixture(scope="module")
async def services(kafka_broker, tmp_path_factory) -> AsyncIterator[dict[str, Running]]:
    sink = SmtpSink()
    sink.start()
    try:
        async with fleet(
            SERVICES,
            kafka_broker,
            tmp_path_factory.mktemp("poison"),
            smtp_host=sink.host,
            smtp_port=sink.port,
        ) as running:
            yield running
    finally:
        sink.stop()


def test_every_consumed_topic_is_covered(services: dict[str, Running]) -> None:
    """The pairs above are what the services really subscribe to, and cover CONSUMED_TOPICS."""
    subscribed = set()
    for service, running in services.items():
        prefix = running.settings.kafka_topic_prefix
        for subscriber in running.app.service.broker.subscribers:
            for topic in subscriber.topic_names:
                subscribed.add((service, topic.removeprefix(prefix)))
    assert subscribed == set(PAIRS)
    assert {topic for _, topic in PAIRS} == set(CONSUMED_TOPICS) == set(VALID)


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return -1 if meta is None else meta.offset


async def handled_evidence(running: Running, topic: str, n: str) -> bool:
    """What the valid message changed, where the service shows it through its API."""
    client = running.client
    if running.app.service.name == "mass_mailer" and topic == "crm.contacts":
        return (await client.get(f"/v1/contacts/c-{n}", headers=AUTH)).status_code == 200
    if topic == "crm.target-groups":
        return (await client.get(f"/v1/target-groups/g-{n}", headers=AUTH)).status_code == 200
    if topic == "mail.outbound.transactional":
        return (await client.get(f"/v1/transactional/poison-{n}", headers=AUTH)).status_code == 200
    if topic == "crm.contacts":  # the scanner's requesters
        reply = await client.get("/v1/requesters", params={"email": f"p{n}@example.org"}, headers=AUTH)
        return reply.status_code == 200
    if topic == "crm.mass-events":
        return (await client.get(f"/v1/mass-events/e-{n}", headers=AUTH)).status_code == 200
    return True  # no API shows it: the consumed counter and the committed offset must do


@pytest.mark.parametrize(("service", "topic"), PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
async def test_poison_is_dead_lettered_and_the_partition_keeps_moving(
    services: dict[str, Running], kafka_broker, service: str, topic: str
) -> None:
    running = services[service]
    n = uuid.uuid4().hex[:12]
    key = f"key-{n}".encode()
    bad = poisons(topic, n)
    make, _ = VALID[topic]
    if topic == "crm.registrations":  # its event first, so the registration has somewhere to go
        await _publish(
            kafka_broker.bootstrap,
            running.topic("crm.mass-events"),
            key,
            [json.dumps(mass_event(n)).encode()],
        )
    before = MESSAGES_CONSUMED.labels(topic)._value.get()
    sent = await _publish(
        kafka_broker.bootstrap, running.topic(topic), key, [*bad.values(), json.dumps(make(n)).encode()]
    )
    partition = {p for p, _ in sent}
    assert len(partition) == 1  # same key, same partition: the valid one is behind the poison
    valid_partition, valid_offset = sent[-1]

    dead = await eventually(lambda: _dead(kafka_broker.bootstrap, running, topic, key, len(bad)), timeout=60)
    by_offset = {int(h["x-dlq-offset"]): (r, h) for r, h in dead}
    expected_offsets = {offset: name for (_, offset), name in zip(sent, bad, strict=False)}
    assert set(by_offset) == set(expected_offsets), (sorted(by_offset), expected_offsets)
    for offset, name in expected_offsets.items():
        record, headers = by_offset[offset]
        assert record.value == bad[name], name  # original bytes kept
        assert record.key == key
        assert headers["x-dlq-topic"] == topic and headers["x-dlq-partition"] == str(valid_partition)
        assert headers["x-dlq-attempts"] == "0", (name, headers)  # refused at validation, not retried
        assert headers["x-dlq-exception"] and headers["x-dlq-failed-at"], (name, headers)
        reason = headers["x-dlq-reason"]
        assert reason and len(reason) <= MAX_REASON_CHARS, (name, reason)
        assert SECRET_MARKER not in reason, (name, reason)  # names the problem, never echoes the input
        if name == "schema-version":
            assert "schema_version" in reason, reason
        if name in ("oversized", "wrong-type"):
            assert VALID[topic][1] in reason, (name, reason)
    assert valid_offset not in by_offset, "the valid message was dead-lettered"

    group = f"{running.settings.group(service)}.{topic}"
    tp = TopicPartition(running.topic(topic), valid_partition)
    await eventually(lambda: _past(kafka_broker.bootstrap, group, tp, valid_offset), timeout=60)
    await eventually(lambda: MESSAGES_CONSUMED.labels(topic)._value.get() > before, timeout=60)
    await eventually(lambda: handled_evidence(running, topic, n), timeout=60)


async def _past(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> bool:
    return await committed(bootstrap, group, tp) > offset


async def _dead(bootstrap: str, running: Running, topic: str, key: bytes, count: int) -> list | None:
    records = await read_all(bootstrap, running.topic(dlq(topic)), running.settings.kafka_partitions)
    mine = [(r, {k: v.decode() for k, v in r.headers}) for r in records if r.key == key]
    return mine if len(mine) >= count else None


async def _publish(bootstrap: str, topic: str, key: bytes, values: list[bytes]) -> list[tuple[int, int]]:
    """Send in order; returns (partition, offset) of each record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
    await producer.start()
    try:
        found = []
        for value in values:
            meta = await producer.send_and_wait(topic, value, key=key)
            found.append((meta.partition, meta.offset))
        return found
    finally:
        await producer.stop()


SOAK_RECORDS_PER_TOPIC = 400


@pytest.mark.soak
@pytest.mark.parametrize(("service", "topic"), PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
async def test_soak_random_corruption_never_stalls_a_partition(
    services: dict[str, Running], kafka_broker, service: str, topic: str
) -> None:
    """Hundreds of valid and randomly corrupted records (byte flips, cuts, splices) on few keys:
    every record is either handled or dead-lettered, and every partition's commit reaches its end."""
    running = services[service]
    rng = random.Random(f"{service}-{topic}")
    make, _ = VALID[topic]
    values, valid = [], 0
    for i in range(SOAK_RECORDS_PER_TOPIC):
        n = uuid.UUID(int=rng.getrandbits(128)).hex[:12]
        raw = bytearray(json.dumps(make(n)).encode())
        if i % 2:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(raw) + 1)
                choice = rng.randrange(3)
                if choice == 0:
                    raw[at : at + 1] = bytes([rng.randrange(256)])
                elif choice == 1:
                    del raw[at:]
                else:
                    raw[at:at] = rng.choice([b'"', b"{", b"}", b"\x00", b"9" * 50, b'"schema_version":7,'])
        else:
            valid += 1
        values.append(bytes(raw))
    before = MESSAGES_CONSUMED.labels(topic)._value.get()
    sent: list[tuple[int, int]] = []
    for key in range(4):
        part = values[key::4]
        sent += await _publish(kafka_broker.bootstrap, running.topic(topic), f"soak-{key}".encode(), part)
    group = f"{running.settings.group(service)}.{topic}"
    for partition in {p for p, _ in sent}:
        last = max(o for p, o in sent if p == partition)
        tp = TopicPartition(running.topic(topic), partition)
        await eventually(lambda tp=tp, last=last: _past(kafka_broker.bootstrap, group, tp, last), timeout=300)
    handled = MESSAGES_CONSUMED.labels(topic)._value.get() - before
    dead = [
        r
        for r in await read_all(
            kafka_broker.bootstrap, running.topic(dlq(topic)), running.settings.kafka_partitions
        )
        if r.key and r.key.startswith(b"soak-")
    ]
    print(
        f"\nRESULT topic={topic} service={service} records={len(values)} handled={handled} dead={len(dead)}"
    )
    assert handled >= valid and handled + len(dead) == len(values)
