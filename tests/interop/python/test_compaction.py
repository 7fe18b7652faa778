"""Log compaction (Kafka's log cleaner) seen only through clients: confluent-kafka and kafka-python.

- A `cleanup.policy=compact` topic takes 1,000 keys x 1,000 updates (1M small records, uncompressed and lz4)
  and then a tombstone for 50 of the keys. Once the segment holding the tombstones has rolled, a consumer from
  the beginning reads one record per live key, each the key's last update, and no deleted key once its
  tombstone's `delete.retention.ms` has passed. Nothing but the cleaner removes records here, so a missing key
  or an older value is the cleaner's doing.
- A consumer group that commits the same partition 5,000 times: once the segment holding the commits (over
  1 MiB, 5,000 small batches) rolls, `__consumer_offsets` shrinks to about its last commit, and that commit
  survives a restart (the coordinator loads the compacted log).

Sizes come from DescribeLogDirs (kafka-python's admin client; confluent-kafka's has no describe_log_dirs). The
cleaner only cleans segments that are not active, so the brokers roll segments quickly (`segment.ms` or
`log.roll.ms`) and the tests append one more record after the roll time for the last full segment to roll.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Dict, List, Optional, Tuple

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from kafka.admin import KafkaAdminClient

from helpers import assign_consumer, create_topic

KEYS = 1000
UPDATES = 1000
#: Keys 0..DELETED-1 get a tombstone after their last update.
DELETED = 50
#: The topic's `segment.ms`: the active segment rolls on the first append after it is this old.
SEGMENT_MS = 2000
#: The topic's `delete.retention.ms`: how long a tombstone stays readable once the cleaner has seen it.
DELETE_RETENTION_MS = 1000
#: How long the cleaner may take to reach one record per key once the last segment rolled.
CONVERGE_TIMEOUT_S = 60.0
#: Broker settings: a cleaner that looks for work every 200 ms instead of every 15 s.
CLEANER_OVERRIDES = {"log.cleaner.backoff.ms": "200"}
FILLER_KEY = b"filler"


def key(k: int) -> bytes:
    return b"key-%04d" % k


def value(k: int, update: int) -> bytes:
    return b"%04d:%04d" % (k, update)


def admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-pytest-compaction", request_timeout_ms=15_000)


def partition_sizes(kadmin: KafkaAdminClient, topic: str) -> Dict[int, int]:
    """{partition: size in bytes} of `topic` on this single broker, from DescribeLogDirs."""
    [answer] = kadmin.describe_log_dirs()
    sizes: Dict[int, int] = {}
    for d in answer["log_dirs"]:
        assert d["error_code"] == 0, d
        for t in d["topics"]:
            if t["name"] == topic:
                for p in t["partitions"]:
                    sizes[p["partition_index"]] = p["partition_size"]
    return sizes


def cleaner_passes(log_text: str) -> List[Dict[str, str]]:
    """The broker's "log cleaned" lines (one per cleaner pass) as {field: value}."""
    passes = []
    for line in log_text.splitlines():
        if "log cleaned cleaner=" in line:
            passes.append(dict(re.findall(r"(\w+)=(\S+)", line)))
    return passes


class SizeSampler:
    """Samples a partition's size every `every_s` in the background; `peak` is the largest seen."""

    def __init__(self, bootstrap: str, topic: str, every_s: float = 0.5) -> None:
        self.kadmin = admin(bootstrap)
        self.topic = topic
        self.every_s = every_s
        self.samples: List[int] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_event.is_set():
            size = partition_sizes(self.kadmin, self.topic).get(0)
            if size is not None:
                self.samples.append(size)
            self.stop_event.wait(self.every_s)

    def __enter__(self) -> "SizeSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        self.kadmin.close()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


def produce_updates(bootstrap: str, topic: str, codec: str) -> None:
    """Every key's UPDATES values, key by key within each round (so a key's updates span the whole log), then a
    tombstone for each of the first DELETED keys. Raises if any record is not acknowledged."""
    errors: List[KafkaError] = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "batch.num.messages": 100_000,
            "compression.type": codec,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "on_delivery": on_delivery,
        }
    )

    def send(k: bytes, v: Optional[bytes]) -> None:
        while True:
            try:
                producer.produce(topic, key=k, value=v, partition=0)
                return
            except BufferError:
                producer.poll(0.05)

    for update in range(UPDATES):
        for k in range(KEYS):
            send(key(k), value(k, update))
        producer.poll(0)
    for k in range(DELETED):
        send(key(k), None)
    assert producer.flush(120) == 0, "records still unacknowledged after 120 s"
    assert not errors, f"{len(errors)} records failed, first: {errors[0]}"


def produce_one(bootstrap: str, topic: str, k: bytes, v: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=k, value=v, partition=0)
    assert producer.flush(30) == 0


def read_all(bootstrap: str, topic: str) -> Tuple[List[Tuple[int, bytes, Optional[bytes]]], int]:
    """Every record of partition 0 below the high watermark: ([(offset, key, value)], high watermark)."""
    consumer = assign_consumer(bootstrap, {"fetch.max.bytes": 52_428_800})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, -2)])
        got: List[Tuple[int, bytes, Optional[bytes]]] = []
        deadline = time.monotonic() + 60
        while high > 0 and (not got or got[-1][0] < high - 1) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                got.append((msg.offset(), msg.key(), msg.value()))
        return got, high
    finally:
        consumer.close()


def describe_read(records: List[Tuple[int, bytes, Optional[bytes]]]) -> str:
    counts = Counter(k for _, k, _ in records)
    repeated = sum(1 for c in counts.values() if c > 1)
    tombstones = sum(1 for _, _, v in records if v is None)
    return f"{len(records)} records, {len(counts)} keys, {repeated} keys more than once, {tombstones} tombstones"


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_a_compacted_topic_keeps_the_latest_value_of_each_key(broker_factory, topic_name, codec):
    broker = broker_factory(CLEANER_OVERRIDES)
    create_topic(
        broker.bootstrap,
        topic_name,
        1,
        {
            "cleanup.policy": "compact",
            # Kafka 4's smallest segment (KIP-1030): the 1M records make 5 (lz4) to 20 (none) segments.
            "segment.bytes": "1048576",
            "segment.ms": str(SEGMENT_MS),
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": str(DELETE_RETENTION_MS),
        },
    )
    started = time.monotonic()
    with SizeSampler(broker.bootstrap, topic_name) as sampler:
        produce_updates(broker.bootstrap, topic_name, codec)
        produced_s = time.monotonic() - started
        # The segment holding the tombstones rolls on the first append after `segment.ms`.
        time.sleep(SEGMENT_MS / 1000 + 0.5)
        produce_one(broker.bootstrap, topic_name, FILLER_KEY, b"roll")

        live = {key(k): value(k, UPDATES - 1) for k in range(DELETED, KEYS)}
        live[FILLER_KEY] = b"roll"
        deleted = {key(k) for k in range(DELETED)}
        kadmin = admin(broker.bootstrap)
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        records: List[Tuple[int, bytes, Optional[bytes]]] = []
        high = 0
        try:
            while time.monotonic() < deadline:
                # Reading 1M records takes seconds: read once the partition is about the compacted size.
                if partition_sizes(kadmin, topic_name).get(0, 1 << 62) < 256 * 1024:
                    records, high = read_all(broker.bootstrap, topic_name)
                    keys = [k for _, k, _ in records]
                    if len(records) <= len(live) and not deleted & set(keys):
                        break
                time.sleep(0.5)
            final_size = partition_sizes(kadmin, topic_name)[0]
        finally:
            kadmin.close()
        converged_s = time.monotonic() - started
    passes = cleaner_passes(broker.log_path.read_text(errors="replace"))
    removed = sum(int(p.get("records_removed", "0")) for p in passes)
    print(
        f"codec={codec}: produced {KEYS * UPDATES + DELETED} records in {produced_s:.1f}s; high watermark {high}; "
        f"partition size peak {sampler.peak} B -> {final_size} B (shrink x{sampler.peak / max(final_size, 1):.0f}); "
        f"{len(passes)} cleaner passes removed {removed} records; converged {converged_s:.1f}s after the first "
        f"produce; read {describe_read(records)}"
    )

    assert high == KEYS * UPDATES + DELETED + 1, "offsets are kept by compaction: the high watermark is the count"
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    assert records and records[-1][0] == high - 1, f"the last record (the filler) is read: {describe_read(records)}"
    last: Dict[bytes, Optional[bytes]] = {}
    for _, k, v in records:
        last[k] = v
    resurrected = sorted(deleted & set(last))
    assert not resurrected, (
        f"{len(resurrected)} deleted keys still read {CONVERGE_TIMEOUT_S:.0f}s after their tombstones "
        f"(delete.retention.ms={DELETE_RETENTION_MS}), e.g. {resurrected[:3]}: {describe_read(records)}"
    )
    missing = sorted(set(live) - set(last))
    assert not missing, f"{len(missing)} live keys lost, e.g. {missing[:3]}: {describe_read(records)}"
    stale = sorted(k for k, v in live.items() if last[k] != v)
    assert not stale, f"{len(stale)} keys read last with an older value, e.g. {stale[:3]} -> {last[stale[0]]!r}"
    assert len(records) == len(live), f"one record per live key: {describe_read(records)}"
    assert sampler.peak > 20 * final_size, f"the partition shrank from {sampler.peak} B only to {final_size} B"


#: Commits of the same partition by one group.
COMMITS = 5000
#: `log.roll.ms` of the group test's broker: `__consumer_offsets` (100 MiB segments) rolls by time only, here once
#: the commits are done, so they make one segment of over 1 MiB (5,000 batches of about 250 bytes).
OFFSETS_ROLL_MS = 3000
#: Fewest bytes one OffsetCommit appends: a 61-byte batch header, plus a record whose key holds the group
#: and topic names and whose value holds the offset and timestamps.
MIN_COMMIT_BYTES = 150


def test_consumer_offsets_of_a_group_committing_often_shrink_to_its_last_commit(broker_factory, topic_name):
    broker = broker_factory(
        {**CLEANER_OVERRIDES, "log.roll.ms": str(OFFSETS_ROLL_MS), "offsets.topic.num.partitions": "1"}
    )
    create_topic(broker.bootstrap, topic_name, 1)
    group = f"committer-{topic_name}"
    consumer = assign_consumer(broker.bootstrap, {"group.id": group})
    kadmin = admin(broker.bootstrap)
    started = time.monotonic()
    try:
        for i in range(1, COMMITS + 1):
            consumer.commit(offsets=[TopicPartition(topic_name, 0, i)], asynchronous=False)
        committed_s = time.monotonic() - started
        size_committed = partition_sizes(kadmin, "__consumer_offsets")[0]
        # The commits' segment rolls on the first append after `log.roll.ms`.
        time.sleep(OFFSETS_ROLL_MS / 1000 + 0.5)
        consumer.commit(offsets=[TopicPartition(topic_name, 0, COMMITS + 1)], asynchronous=False)
        _, high = consumer.get_watermark_offsets(TopicPartition("__consumer_offsets", 0), timeout=10)
        appended_at_least = MIN_COMMIT_BYTES * (COMMITS + 1)
        deadline = time.monotonic() + 30
        size = partition_sizes(kadmin, "__consumer_offsets")[0]
        while size * 20 > appended_at_least and time.monotonic() < deadline:
            time.sleep(0.25)
            size = partition_sizes(kadmin, "__consumer_offsets")[0]
    finally:
        kadmin.close()
        consumer.close()
    passes = [p for p in cleaner_passes(broker.log_path.read_text(errors="replace")) if p.get("topic") == "__consumer_offsets"]
    print(
        f"{COMMITS + 1} commits ({COMMITS} in {committed_s:.1f}s), __consumer_offsets high watermark {high}; "
        f"size {size_committed} B after {COMMITS} commits -> {size} B "
        f"{time.monotonic() - started:.1f}s after the first commit; {len(passes)} cleaner passes, the last "
        f"{passes[-1] if passes else None}"
    )
    assert high >= COMMITS + 1, f"every commit appended a record: high watermark {high}"
    assert size * 20 <= appended_at_least, (
        f"__consumer_offsets still {size} B 30 s after its segment of {size_committed} B rolled "
        f"({len(passes)} cleaner passes, the last {passes[-1] if passes else None})"
    )

    # The coordinator loads the compacted log after a restart: the last commit is still the group's offset.
    broker.restart()
    consumer = assign_consumer(broker.bootstrap, {"group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic_name, 0)], timeout=30)
    finally:
        consumer.close()
    assert tp.error is None and tp.offset == COMMITS + 1, tp
