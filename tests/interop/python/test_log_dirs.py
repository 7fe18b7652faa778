"""DescribeLogDirs (key 35) and AlterReplicaLogDirs (key 34, KIP-113) driven by kafka-python's admin client.

A single node with two `log.dirs`: a partition's replica is moved to the other directory while a producer keeps
producing (acks=all); DescribeLogDirs shows it in the new directory with no future replica; every acknowledged
record is read back, before and after a restart. Kafka's refusals: LOG_DIR_NOT_FOUND for a path outside
`log.dirs`, UNKNOWN_TOPIC_OR_PARTITION for a partition the cluster does not have.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from kafka import KafkaConsumer, KafkaProducer, TopicPartition, TopicPartitionReplica
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import LogDirNotFoundError, NoError, UnknownTopicOrPartitionError

from helpers import flatten_config_errors

DESCRIBE_LOG_DIRS = 35
ALTER_REPLICA_LOG_DIRS = 34


def admin_client(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-pytest-log-dirs", request_timeout_ms=15_000)


def two_dir_broker(broker_factory, tmp_path: Path):
    dirs = [tmp_path / "logs-a", tmp_path / "logs-b"]
    broker = broker_factory({"log.dirs": ",".join(str(d) for d in dirs)})
    return broker, [str(d.resolve()) for d in dirs]


def replicas_by_dir(admin: KafkaAdminClient, topic: Optional[str] = None) -> Dict[str, List[Tuple[str, int, int, bool, int]]]:
    """{log dir: [(topic, partition, size, is_future, offset_lag)]} from DescribeLogDirs (this single broker)."""
    [answer] = admin.describe_log_dirs(topic_partitions=None if topic is None else {topic: [0]})
    out: Dict[str, List[Tuple[str, int, int, bool, int]]] = {}
    for d in answer["log_dirs"]:
        assert d["error_code"] == 0, d
        out[d["log_dir"]] = [
            (t["name"], p["partition_index"], p["partition_size"], p["is_future_key"], p["offset_lag"])
            for t in d["topics"]
            for p in t["partitions"]
        ]
    return out


def where(replicas: Dict[str, list], topic: str) -> List[Tuple[str, bool]]:
    return sorted((d, r[3]) for d, rs in replicas.items() for r in rs if r[0] == topic)


def consume_all(bootstrap: str, topic: str, end: int) -> List[Tuple[int, bytes]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: List[Tuple[int, bytes]] = []
        deadline = time.monotonic() + 60
        while len(got) < end and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500, max_records=10_000).values():
                got.extend((m.offset, m.value) for m in msgs)
        return got
    finally:
        consumer.close()


def test_a_replica_moves_to_the_other_log_dir_under_load_without_losing_records(broker_factory, tmp_path, topic_name):
    broker, dirs = two_dir_broker(broker_factory, tmp_path)
    versions = broker.api_versions()
    assert versions[DESCRIBE_LOG_DIRS] == (1, 4)
    assert versions[ALTER_REPLICA_LOG_DIRS] == (1, 2)
    admin = admin_client(broker.bootstrap)
    try:
        # Small segments, so the move copies many sealed segments besides the active one.
        admin.create_topics(
            [NewTopic(topic_name, 1, 1, topic_configs={"segment.bytes": str(1024 * 1024)})], timeout_ms=15_000
        )
        broker_id = admin.describe_cluster()["brokers"][0]["broker_id"]

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=2, max_block_ms=20_000)
        futures = [producer.send(topic_name, b"before-%d-" % i + b"x" * 500, partition=0) for i in range(12_000)]
        producer.flush(timeout=60)
        acked: Dict[int, bytes] = {
            f.get(timeout=30).offset: b"before-%d-" % i + b"x" * 500 for i, f in enumerate(futures)
        }

        before = replicas_by_dir(admin)
        assert set(before) == set(dirs), before
        [(source, future)] = where(before, topic_name)
        assert not future
        [(_, _, size, _, lag)] = [r for r in before[source] if r[0] == topic_name]
        assert size > 12_000 * 500, before
        assert lag == 0
        for d, total, usable in [
            (r["log_dir"], r["total_bytes"], r["usable_bytes"])
            for r in admin.describe_log_dirs()[0]["log_dirs"]
        ]:
            assert total > 0 and 0 <= usable <= total, (d, total, usable)
        target = next(d for d in dirs if d != source)

        # Keep producing while the replica moves.
        stop = threading.Event()
        produced: List[Tuple[object, bytes]] = []
        errors: List[BaseException] = []

        def keep_producing() -> None:
            i = 0
            try:
                while not stop.is_set():
                    value = b"during-%d-" % i + b"y" * 200
                    produced.append((producer.send(topic_name, value, partition=0), value))
                    i += 1
                    if i % 200 == 0:
                        time.sleep(0.01)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        t = threading.Thread(target=keep_producing, daemon=True)
        t.start()
        time.sleep(0.2)
        tpr = TopicPartitionReplica(topic_name, 0, broker_id)
        assert admin.alter_replica_log_dirs({tpr: target}) == {tpr: NoError}
        seen_future = False
        deadline = time.monotonic() + 60
        while True:
            now = where(replicas_by_dir(admin, topic_name), topic_name)
            seen_future |= (target, True) in now
            if now == [(target, False)]:
                break
            assert time.monotonic() < deadline, f"the move did not finish: {now}"
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        t.join(timeout=30)
        assert not errors, errors
        producer.flush(timeout=60)
        for f, value in produced:
            acked[f.get(timeout=30).offset] = value
        producer.close(timeout=10)
        assert len(produced) > 0
        # Moving it again to where it is is a no-op success.
        assert admin.alter_replica_log_dirs({tpr: target}) == {tpr: NoError}
        assert where(replicas_by_dir(admin), topic_name) == [(target, False)]

        end = max(acked) + 1
        assert sorted(acked) == list(range(end)), "acknowledged offsets are dense"
        got = consume_all(broker.bootstrap, topic_name, end)
        assert got == sorted(acked.items()), "every acknowledged record is read back at its offset"
        # The old directory no longer holds the partition (renamed for deletion, then removed).
        assert not (Path(source) / f"{topic_name}-0").exists()
        assert (Path(target) / f"{topic_name}-0").is_dir()
    finally:
        admin.close()

    broker.restart()
    admin = admin_client(broker.bootstrap)
    try:
        assert where(replicas_by_dir(admin), topic_name) == [(target, False)]
    finally:
        admin.close()
    assert consume_all(broker.bootstrap, topic_name, end) == sorted(acked.items())
    print(f"future replica observed during the move: {seen_future}")


def test_kafkas_errors_for_unknown_dirs_and_partitions(broker_factory, tmp_path, topic_name):
    broker, dirs = two_dir_broker(broker_factory, tmp_path)
    admin = admin_client(broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic_name, 1, 1)], timeout_ms=15_000)
        broker_id = admin.describe_cluster()["brokers"][0]["broker_id"]
        tpr = TopicPartitionReplica(topic_name, 0, broker_id)
        assert admin.alter_replica_log_dirs({tpr: str(tmp_path / "not-a-log-dir")}) == {tpr: LogDirNotFoundError}
        missing = TopicPartitionReplica(topic_name + "-missing", 0, broker_id)
        assert admin.alter_replica_log_dirs({missing: dirs[0]}) == {missing: UnknownTopicOrPartitionError}
        # Nothing moved; the empty partition is listed in exactly one directory.
        assert [r[1] for r in where(replicas_by_dir(admin), topic_name)] == [False]
    finally:
        admin.close()


def test_a_log_dir_move_is_throttled_until_the_throttle_is_removed(broker_factory, tmp_path, topic_name):
    """`replica.alter.log.dirs.io.max.bytes.per.second` (a dynamic broker config, set with kafka-python's
    alter_configs): a 6 MB replica moving at 500 kB/s is still a future replica seconds later with most of it not
    copied; once the config is deleted the move completes. Unthrottled it takes well under a second."""
    from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType

    broker, dirs = two_dir_broker(broker_factory, tmp_path)
    admin = admin_client(broker.bootstrap)
    try:
        # Segments of 1 MiB (the smallest Kafka 4 allows), so the copy is paced segment by segment.
        admin.create_topics(
            [NewTopic(topic_name, 1, 1, topic_configs={"segment.bytes": str(1 << 20)})], timeout_ms=15_000
        )
        broker_id = admin.describe_cluster()["brokers"][0]["broker_id"]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        for i in range(6_000):
            producer.send(topic_name, b"%06d" % i + b"z" * 1_000, partition=0)
        producer.flush(timeout=60)
        producer.close(timeout=10)
        [(source, _)] = where(replicas_by_dir(admin), topic_name)
        target = next(d for d in dirs if d != source)

        key = "replica.alter.log.dirs.io.max.bytes.per.second"
        resource = ConfigResource(ConfigResourceType.BROKER, str(broker_id), {key: "500000"})
        result = admin.alter_configs([resource])
        assert all(e is None or getattr(e, "errno", 0) == 0 for e in flatten_config_errors(result)), result
        described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(broker_id))])
        assert described["broker"][str(broker_id)][key]["value"] == "500000"

        tpr = TopicPartitionReplica(topic_name, 0, broker_id)
        started = time.monotonic()
        assert admin.alter_replica_log_dirs({tpr: target}) == {tpr: NoError}
        time.sleep(3)
        replicas = replicas_by_dir(admin, topic_name)
        assert (target, True) in where(replicas, topic_name), f"the throttled move finished within 3 s: {replicas}"
        [future_size] = [r[2] for r in replicas[target] if r[0] == topic_name and r[3]]
        elapsed = time.monotonic() - started
        print(f"{future_size} bytes of 6 MB copied in {elapsed:.1f} s at 500 kB/s")
        # The rate for the time so far, a second's burst and one segment.
        assert future_size <= 500_000 * (elapsed + 1) + (1 << 20), f"{future_size} bytes in {elapsed:.1f} s"

        admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, str(broker_id),
                                            {key: (AlterConfigOp.DELETE, None)})])
        deadline = time.monotonic() + 30
        while where(replicas_by_dir(admin, topic_name), topic_name) != [(target, False)]:
            assert time.monotonic() < deadline, "the move did not finish once the throttle was removed"
            time.sleep(0.05)
        print(f"move completed {time.monotonic() - started:.1f} s after it started")
        assert len(consume_all(broker.bootstrap, topic_name, 6_000)) == 6_000
    finally:
        admin.close()
