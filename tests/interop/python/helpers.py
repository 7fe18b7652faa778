"""Shared helpers for the Python interop suites: deterministic records, topic creation, draining partitions.

Records are generated from their index so the expected content of every offset is known exactly; consumers
read with `assign` to explicit partitions from the beginning (no consumer group needed for fetching).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

#: CreateTime of record 0; record i carries BASE_TIMESTAMP_MS + i.
BASE_TIMESTAMP_MS = 1_763_000_000_000


@dataclass(frozen=True)
class Rec:
    """One record as a client sees it."""

    partition: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Tuple[Tuple[str, bytes], ...]
    timestamp_ms: int


def make_record(i: int, partitions: int) -> Rec:
    """Record number `i`: key, a compressible value of varying length, two headers and a CreateTime."""
    filler = (b"sluice-%08d;" % i) * (1 + i % 13)
    return Rec(
        partition=i % partitions,
        key=b"key-%d" % i,
        value=b"value-%d|" % i + filler,
        headers=(("idx", b"%d" % i), ("origin", b"pytest-\xff\x00bin")),
        timestamp_ms=BASE_TIMESTAMP_MS + i,
    )


def expected_by_partition(records: Iterable[Rec], partitions: int) -> Dict[int, List[Rec]]:
    """Records grouped by partition in production order (= offset order for one in-order producer)."""
    out: Dict[int, List[Rec]] = {p: [] for p in range(partitions)}
    for r in records:
        out[r.partition].append(r)
    return out


def create_topic(bootstrap: str, name: str, partitions: int, configs: Optional[Dict[str, str]] = None) -> None:
    """Creates a topic with CreateTopics (confluent-kafka AdminClient) and waits until Metadata shows it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs or {})],
        operation_timeout=10,
        request_timeout=15,
    )
    futures[name].result(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            if all(p.leader >= 0 for p in t.partitions.values()):
                return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} with {partitions} partitions not visible in Metadata after creation")


def assign_consumer(bootstrap: str, extra: Optional[dict] = None) -> Consumer:
    """A librdkafka consumer for `assign()` use: a group.id is mandatory in confluent-kafka, but no group
    protocol is used (no subscribe, no commits)."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-interop-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra or {})
    return Consumer(conf)


@dataclass
class Consumed:
    """What was read back from one partition: (offset, Rec) in the order delivered."""

    offset: int
    rec: Rec


def drain(
    bootstrap: str,
    topic: str,
    counts: Dict[int, int],
    timeout_s: float = 120.0,
    start_offsets: Optional[Dict[int, int]] = None,
    extra: Optional[dict] = None,
) -> Dict[int, List[Consumed]]:
    """Reads `counts[p]` records from each partition p (from `start_offsets[p]`, default the beginning).

    Stops as soon as every partition has its count, or at `timeout_s` (then returns what it has: the
    caller's assertions report the shortfall). Raises on any consumer error.
    """
    consumer = assign_consumer(bootstrap, extra)
    try:
        consumer.assign(
            [
                TopicPartition(topic, p, (start_offsets or {}).get(p, -2))  # -2 = OFFSET_BEGINNING
                for p in counts
            ]
        )
        got: Dict[int, List[Consumed]] = {p: [] for p in counts}
        remaining = sum(counts.values())
        deadline = time.monotonic() + timeout_s
        while remaining > 0 and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                ts_type, ts = msg.timestamp()
                rec = Rec(
                    partition=msg.partition(),
                    key=msg.key(),
                    value=msg.value(),
                    headers=tuple((k, v) for k, v in (msg.headers() or [])),
                    timestamp_ms=ts,
                )
                got[msg.partition()].append(Consumed(msg.offset(), rec))
                remaining -= 1
        return got
    finally:
        consumer.close()


def assert_partition_matches(partition: int, got: List[Consumed], want: List[Rec], first_offset: int = 0) -> None:
    """Offsets dense from `first_offset`, and every record identical to the one produced there."""
    assert len(got) == len(want), (
        f"partition {partition}: consumed {len(got)} records, produced {len(want)}"
        + (f"; first missing/extra around offset {first_offset + min(len(got), len(want))}")
    )
    for i, (c, w) in enumerate(zip(got, want)):
        assert c.offset == first_offset + i, f"partition {partition}: record #{i} has offset {c.offset}"
        assert c.rec == w, f"partition {partition} offset {c.offset}: got {c.rec!r}, want {w!r}"


def flatten_config_errors(result):
    """kafka-python's alter_configs answer, {type: {name: error}} or a list of responses, as a flat list."""
    if isinstance(result, dict):
        return [e for names in result.values() for e in (names.values() if isinstance(names, dict) else [names])]
    return list(result) if isinstance(result, list) else [result]
