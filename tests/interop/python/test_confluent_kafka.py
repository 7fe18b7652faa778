"""librdkafka (through Python confluent-kafka) against Sluice: codecs, acks, and durability across restarts.

Every test produces records whose content is a function of their index, reads them back with `assign`
from explicit partitions, and checks count, offsets, keys, values, headers and CreateTime exactly.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition

from helpers import (
    Rec,
    assert_partition_matches,
    assign_consumer,
    create_topic,
    drain,
    expected_by_partition,
    make_record,
)

RECORDS_PER_CODEC = 100_000
PARTITIONS = 3


class DeliveryLog:
    """Collects delivery reports: record index -> (partition, offset), and the errors."""

    def __init__(self) -> None:
        self.acked: Dict[int, Tuple[int, int]] = {}
        self.errors: List[Tuple[int, KafkaError]] = []

    def callback(self, index: int):
        def on_delivery(err, msg):
            if err is not None:
                self.errors.append((index, err))
            else:
                self.acked[index] = (msg.partition(), msg.offset())

        return on_delivery


def produce_all(producer: Producer, topic: str, records: List[Rec], log: DeliveryLog, flush_timeout_s=120.0):
    """Produces every record (retrying on a full local queue) and waits for all delivery reports."""
    for i, r in enumerate(records):
        while True:
            try:
                producer.produce(
                    topic,
                    value=r.value,
                    key=r.key,
                    partition=r.partition,
                    headers=list(r.headers),
                    timestamp=r.timestamp_ms,
                    on_delivery=log.callback(i),
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    assert remaining == 0, f"{remaining} records still undelivered after {flush_timeout_s}s"


def assert_acks_dense(log: DeliveryLog, records: List[Rec], first_offset: int = 0) -> None:
    """Every record acknowledged, at dense per-partition offsets in production order."""
    assert not log.errors, f"{len(log.errors)} delivery errors, first: {log.errors[0]}"
    assert len(log.acked) == len(records)
    next_offset: Dict[int, int] = {}
    for i, r in enumerate(records):
        partition, offset = log.acked[i]
        assert partition == r.partition
        want = next_offset.get(partition, first_offset)
        assert offset == want, f"record {i}: acknowledged at offset {offset} of partition {partition}, want {want}"
        next_offset[partition] = want + 1


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_100k_records_roundtrip_per_codec(broker, topic_name, codec):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    records = [make_record(i, PARTITIONS) for i in range(RECORDS_PER_CODEC)]
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "compression.type": codec,
            "linger.ms": 5,
            "acks": "all",
        }
    )
    log = DeliveryLog()
    started = time.monotonic()
    produce_all(producer, topic_name, records, log)
    produce_s = time.monotonic() - started
    assert_acks_dense(log, records)

    want = expected_by_partition(records, PARTITIONS)
    started = time.monotonic()
    got = drain(broker.bootstrap, topic_name, {p: len(v) for p, v in want.items()})
    consume_s = time.monotonic() - started
    for p in range(PARTITIONS):
        assert_partition_matches(p, got[p], want[p])
    print(f"{codec}: produced {len(records)} in {produce_s:.2f}s, consumed in {consume_s:.2f}s")


@pytest.mark.parametrize("acks", ["0", "1", "-1"])
def test_acks(broker, topic_name, acks):
    n = 10_000
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    records = [make_record(i, PARTITIONS) for i in range(n)]
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks, "linger.ms": 2})
    log = DeliveryLog()
    produce_all(producer, topic_name, records, log)
    if acks == "0":
        # No response, so no offsets to check (librdkafka reports made-up ones); the read-back below is the test.
        assert not log.errors, f"delivery errors with acks=0: {log.errors[:3]}"
        assert len(log.acked) == n
    else:
        assert_acks_dense(log, records)
    want = expected_by_partition(records, PARTITIONS)
    got = drain(broker.bootstrap, topic_name, {p: len(v) for p, v in want.items()}, timeout_s=60)
    for p in range(PARTITIONS):
        assert_partition_matches(p, got[p], want[p])


def watermarks(bootstrap: str, topic: str, partitions: int) -> Dict[int, Tuple[int, int]]:
    c = assign_consumer(bootstrap)
    try:
        return {p: tuple(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)) for p in range(partitions)}
    finally:
        c.close()


def test_data_survives_clean_restart(broker, topic_name):
    n = 20_000
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    records = [make_record(i, PARTITIONS) for i in range(n)]
    log = DeliveryLog()
    produce_all(Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "compression.type": "lz4"}),
                topic_name, records, log)
    assert_acks_dense(log, records)
    before = watermarks(broker.bootstrap, topic_name, PARTITIONS)

    exit_code = broker.restart()
    assert exit_code == 0, f"SIGTERM shutdown exited with {exit_code}, want 0 (clean shutdown)"

    assert watermarks(broker.bootstrap, topic_name, PARTITIONS) == before
    want = expected_by_partition(records, PARTITIONS)
    got = drain(broker.bootstrap, topic_name, {p: len(v) for p, v in want.items()}, timeout_s=60)
    for p in range(PARTITIONS):
        assert_partition_matches(p, got[p], want[p])

    # Appends continue after the recovered end, not over it.
    more = [make_record(n + i, PARTITIONS) for i in range(PARTITIONS * 10)]
    log2 = DeliveryLog()
    produce_all(Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"}), topic_name, more, log2)
    assert not log2.errors
    for i, r in enumerate(more):
        partition, offset = log2.acked[i]
        assert offset >= before[partition][1], f"offset {offset} reused after restart (end was {before[partition][1]})"


def test_acknowledged_records_survive_sigkill(broker, topic_name):
    """Produce continuously with acks=all, SIGKILL the broker mid-stream, restart: every record acknowledged
    before the kill is at its acknowledged offset with identical content; nothing else but our records."""
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "linger.ms": 1,
            "message.timeout.ms": 10_000,
            "compression.type": "zstd",
        }
    )
    log = DeliveryLog()
    kill_after_acked = 30_000
    i = 0
    deadline = time.monotonic() + 120
    while len(log.acked) < kill_after_acked and time.monotonic() < deadline:
        r = make_record(i, PARTITIONS)
        try:
            producer.produce(topic_name, value=r.value, key=r.key, partition=r.partition,
                             headers=list(r.headers), timestamp=r.timestamp_ms, on_delivery=log.callback(i))
            i += 1
        except BufferError:
            pass
        producer.poll(0)
    assert len(log.acked) >= kill_after_acked, f"only {len(log.acked)} acked in 120s"
    assert not log.errors, f"errors before the kill: {log.errors[:3]}"

    broker.kill()
    # Whatever was in flight at the kill is not acknowledged: drop it so it cannot be retried later.
    producer.purge(in_queue=True, in_flight=True, blocking=False)
    producer.flush(15)
    acked = dict(log.acked)
    produced = i

    broker.start()
    marks = watermarks(broker.bootstrap, topic_name, PARTITIONS)
    acked_by_partition: Dict[int, Dict[int, int]] = {p: {} for p in range(PARTITIONS)}
    for index, (partition, offset) in acked.items():
        acked_by_partition[partition][offset] = index
    for p in range(PARTITIONS):
        low, high = marks[p]
        max_acked = max(acked_by_partition[p], default=-1)
        assert low == 0
        assert high > max_acked, f"partition {p}: high watermark {high} after restart, but offset {max_acked} was acknowledged"

    got = drain(broker.bootstrap, topic_name, {p: marks[p][1] for p in range(PARTITIONS)}, timeout_s=60)
    for p in range(PARTITIONS):
        offsets = [c.offset for c in got[p]]
        assert offsets == list(range(marks[p][1])), f"partition {p}: offsets not dense up to the high watermark"
        for c in got[p]:
            idx = int(dict(c.rec.headers)["idx"])
            assert 0 <= idx < produced, f"partition {p} offset {c.offset}: record {idx} was never produced"
            assert c.rec == make_record(idx, PARTITIONS), f"partition {p} offset {c.offset}: content differs"
            if c.offset in acked_by_partition[p]:
                assert acked_by_partition[p][c.offset] == idx, (
                    f"partition {p} offset {c.offset}: holds record {idx}, "
                    f"but record {acked_by_partition[p][c.offset]} was acknowledged there"
                )
