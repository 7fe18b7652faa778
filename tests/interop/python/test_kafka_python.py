"""kafka-python (pure-Python client) against Sluice: version inference, produce/consume, topic and config admin."""

from __future__ import annotations

import os
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import InvalidReplicationFactorError, InvalidTopicError, TopicAlreadyExistsError

#: The Apache Kafka release whose API versions Sluice advertises (Produce v11 / Fetch v16 / Metadata v12 /
#: ListOffsets v8 = Kafka 3.8). Override with SLUICE_KAFKA_VERSION=major.minor if the claim moves.
CLAIMED_KAFKA_VERSION = tuple(int(x) for x in os.environ.get("SLUICE_KAFKA_VERSION", "3.8").split("."))


def admin_client(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-pytest-admin", request_timeout_ms=15_000)


def test_version_inference_matches_claimed_kafka_version(broker):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=None)
    try:
        inferred = consumer.config["api_version"]
    finally:
        consumer.close()
    assert tuple(inferred[:2]) == CLAIMED_KAFKA_VERSION, (
        f"kafka-python infers Kafka {inferred} from our ApiVersions; we claim {CLAIMED_KAFKA_VERSION}. "
        f"Advertised: {sorted(broker.api_versions().items())}"
    )


def test_produce_and_consume_with_assign(broker, topic_name):
    admin = admin_client(broker.bootstrap)
    try:
        admin.create_topics({topic_name: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        admin.close()

    # Idempotence off here (kafka-python 3 enables it by default): the plain producer path; the default
    # idempotent one is test_default_idempotent_producer.
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", compression_type="gzip", linger_ms=5, enable_idempotence=False
    )
    n = 2_000
    base_ts = 1_763_000_000_000
    futures = []
    for i in range(n):
        futures.append(
            producer.send(
                topic_name,
                key=b"k%d" % i,
                value=b"v%d-" % i + b"x" * (i % 100),
                headers=[("i", b"%d" % i)],
                partition=i % 2,
                timestamp_ms=base_ts + i,
            )
        )
    producer.flush(timeout=60)
    next_offset = {0: 0, 1: 0}
    for i, f in enumerate(futures):
        md = f.get(timeout=30)
        assert md.partition == i % 2
        assert md.offset == next_offset[md.partition], f"record {i} acknowledged at {md.offset}"
        next_offset[md.partition] += 1
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        tps = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got = {0: [], 1: []}
        deadline = time.monotonic() + 60
        while sum(len(v) for v in got.values()) < n and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500, max_records=5000).items():
                got[tp.partition].extend(msgs)
        assert consumer.end_offsets(tps) == {tps[0]: n // 2, tps[1]: n // 2}
    finally:
        consumer.close()
    for p in (0, 1):
        assert [m.offset for m in got[p]] == list(range(n // 2)), f"partition {p} offsets"
        for m in got[p]:
            i = int(m.key[1:])
            assert i % 2 == p
            assert m.value == b"v%d-" % i + b"x" * (i % 100)
            assert list(m.headers) == [("i", b"%d" % i)]
            assert m.timestamp == base_ts + i


def test_default_idempotent_producer(broker, topic_name):
    """kafka-python 3 (like the Java client since 3.0) produces idempotently by default (InitProducerId,
    sequence numbers per partition)."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=10_000, linger_ms=5)
    try:
        futures = [producer.send(topic_name, b"idempotent-%d" % i, partition=0) for i in range(500)]
        producer.flush(timeout=30)
        assert [f.get(timeout=15).offset for f in futures] == list(range(500))
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic_name, 0)
        consumer.assign([tp])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 500 and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                got.extend(msgs)
    finally:
        consumer.close()
    assert [(m.offset, m.value) for m in got] == [(i, b"idempotent-%d" % i) for i in range(500)]


def test_admin_create_describe_delete_topics(broker, topic_name):
    admin = admin_client(broker.bootstrap)
    try:
        admin.create_topics(
            {topic_name: {"num_partitions": 4, "replication_factor": 1, "configs": {"retention.ms": "3600000"}}},
            wait_for_metadata=True,
        )
        assert topic_name in admin.list_topics()

        [desc] = admin.describe_topics([topic_name])
        assert desc["name"] == topic_name
        assert desc["error_code"] == 0
        assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2, 3]
        node_ids = {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
        assert len(node_ids) == 1
        for p in desc["partitions"]:
            assert p["leader_id"] in node_ids
            assert p["replica_nodes"] == [p["leader_id"]]
            assert p["isr_nodes"] == [p["leader_id"]]

        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1}})
        with pytest.raises(InvalidTopicError):
            admin.create_topics({"bad/name": {"num_partitions": 1, "replication_factor": 1}})
        with pytest.raises(InvalidReplicationFactorError):
            admin.create_topics({topic_name + "-rf3": {"num_partitions": 1, "replication_factor": 3}})
        assert topic_name + "-rf3" not in admin.list_topics()

        admin.delete_topics([topic_name])
        deadline = time.monotonic() + 15
        while topic_name in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert topic_name not in admin.list_topics()
    finally:
        admin.close()


def test_admin_describe_and_alter_topic_configs(broker, topic_name):
    admin = admin_client(broker.bootstrap)
    try:
        admin.create_topics(
            {topic_name: {"num_partitions": 1, "replication_factor": 1, "configs": {"retention.ms": "3600000"}}},
            wait_for_metadata=True,
        )
        resource = ConfigResource(ConfigResourceType.TOPIC, topic_name)

        configs = admin.describe_configs([resource], config_filter="all")["topic"][topic_name]
        assert configs["retention.ms"]["value"] == "3600000"
        assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert "cleanup.policy" in configs and configs["cleanup.policy"]["value"] == "delete"
        assert configs["cleanup.policy"]["config_source"] in ("DEFAULT_CONFIG", "STATIC_BROKER_CONFIG")

        modified = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])["topic"][topic_name]
        assert set(modified) == {"retention.ms"}

        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, {"retention.ms": "7200000", "segment.bytes": "1048576"})]
        )
        after = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])["topic"][topic_name]
        assert after["retention.ms"]["value"] == "7200000"
        assert after["segment.bytes"]["value"] == "1048576"
    finally:
        admin.close()


def test_admin_describe_broker_configs(broker):
    admin = admin_client(broker.bootstrap)
    try:
        [node_id] = [b["broker_id"] for b in admin.describe_cluster()["brokers"]]
        resource = ConfigResource(ConfigResourceType.BROKER, str(node_id))
        configs = admin.describe_configs([resource], config_filter="all")["broker"][str(node_id)]
        for key in ("num.partitions", "log.dirs", "auto.create.topics.enable", "message.max.bytes"):
            assert key in configs, f"broker config {key} missing from DescribeConfigs"
        assert configs["log.dirs"]["value"] == str(broker.data_dir)
        assert configs["node.id"]["value"] == str(node_id)
    finally:
        admin.close()
