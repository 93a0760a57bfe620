import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.servers.kafka import (
    ExternalBroker,
    KafkaBroker,
    TansuBroker,
    broker_from_env,
    parse_broker_env,
)

FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 200}


async def produce(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, group: str, n: int) -> list:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUP,
    )
    await consumer.start()
    try:
        records: list = []
        async with asyncio.timeout(30):
            while len(records) < n:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += batch
        await consumer.commit()
        return records
    finally:
        await consumer.stop()


async def test_produce_and_consume(kafka_broker, unique):
    topic = unique("infra.roundtrip")
    await produce(kafka_broker.bootstrap, topic, 20)
    records = await consume(kafka_broker.bootstrap, topic, unique("infra"), 20)
    assert sorted(r.value for r in records) == sorted(f"m{i}".encode() for i in range(20))
    assert all(r.key == f"k{r.value.decode()[1:]}".encode() for r in records)
    if kafka_broker.kind == "kafka":
        assert {r.partition for r in records} == {0, 1, 2}  # num.partitions=3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ("kafka", None)),
        ("", ("kafka", None)),
        ("kafka", ("kafka", None)),
        ("Kafka ", ("kafka", None)),
        ("tansu", ("tansu", None)),
        ("127.0.0.1:9092", ("external", "127.0.0.1:9092")),
        ("kafka-1:9092, kafka-2:9092", ("external", "kafka-1:9092,kafka-2:9092")),
    ],
)
def test_selector_parses(value, expected):
    assert parse_broker_env(value) == expected


@pytest.mark.parametrize("value", ["redpanda", "localhost", "host:port", ":9092", "h:1,oops"])
def test_selector_rejects(value):
    with pytest.raises(ValueError, match="MAILSVC_TEST_KAFKA"):
        parse_broker_env(value)


@pytest.mark.parametrize(
    ("env", "cls"),
    [
        ({}, KafkaBroker),
        ({"MAILSVC_TEST_KAFKA": "tansu"}, TansuBroker),
        ({"MAILSVC_TEST_KAFKA": "127.0.0.1:1"}, ExternalBroker),
    ],
)
def test_broker_from_env_does_not_start(env, cls):
    broker = broker_from_env(env)
    try:
        assert isinstance(broker, cls)
        assert broker.kind == {KafkaBroker: "kafka", TansuBroker: "tansu"}.get(cls, "external")
        assert broker.bootstrap.startswith("127.0.0.1:")
    finally:
        broker.close()


@pytest.mark.kafka
async def test_apache_kafka_restart_keeps_data(tmp_path, unique):
    topic = unique("infra.restart")
    with KafkaBroker(tmp_path / "kafka") as first:
        await produce(first.bootstrap, topic, 3)
    with KafkaBroker(tmp_path / "kafka") as second:
        assert second.bootstrap == first.bootstrap  # ports are kept with the data
        records = await consume(second.bootstrap, topic, unique("g"), 3)
    assert sorted(r.value for r in records) == [b"m0", b"m1", b"m2"]
