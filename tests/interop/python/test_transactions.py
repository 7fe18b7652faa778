"""Transactions (KIP-98) seen only through librdkafka (confluent-kafka) and kafka-python.

- Commit and abort: a read_committed consumer sees exactly the committed transactions' records, in order; a
  read_uncommitted consumer sees the aborted ones too; neither sees a control record (the markers take offsets).
- The last stable offset: while a transaction is open, a read_committed consumer stops before its first record
  (and ListOffsets LATEST with read_committed answers that offset), and goes on once it commits.
- send_offsets_to_transaction: the group's offsets become visible with the commit, and not after an abort.
- Fencing: a second producer with the same transactional.id fences the first, whose next operation fails fatally.
- Timeout: a transaction left open past its transaction.timeout.ms is aborted by the broker.
- Restart: a SIGKILLed broker comes back with the same committed and aborted records and the same open
  transaction holding back read_committed consumers until it times out.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from helpers import create_topic

#: Broker settings: look for timed-out transactions every 200 ms instead of every 10 s.
TIMEOUT_OVERRIDES = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": "200"}


def txn_producer(bootstrap: str, txn_id: str, extra: Optional[dict] = None) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
        "transaction.timeout.ms": 60_000,
    }
    conf.update(extra or {})
    p = Producer(conf)
    p.init_transactions(30)
    return p


def read_all(
    bootstrap: str,
    topic: str,
    partitions: int,
    isolation: str,
    want: Optional[int] = None,
    timeout_s: float = 10.0,
) -> Dict[int, List[Tuple[int, bytes]]]:
    """Every record of the topic as (offset, value) per partition, read from the beginning with `isolation`, until
    `want` records arrived or every partition reached its end (then a short quiet period)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "sluice-txn-reader",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        c.assign([TopicPartition(topic, p, -2) for p in range(partitions)])
        got: Dict[int, List[Tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        at_end = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            total = sum(len(v) for v in got.values())
            if want is not None and total >= want:
                break
            if want is None and len(at_end) == partitions:
                break
            for m in c.consume(1000, 0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise KafkaException(m.error())
                at_end.discard(m.partition())
                got[m.partition()].append((m.offset(), m.value()))
        return got
    finally:
        c.close()


def committed_end(bootstrap: str, topic: str, partition: int) -> Tuple[int, int]:
    """(read_committed LATEST, read_uncommitted LATEST) of a partition, from ListOffsets."""
    out = []
    for isolation in ("read_committed", "read_uncommitted"):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-txn-offsets", "isolation.level": isolation})
        try:
            _, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
            out.append(high)
        finally:
            c.close()
    return out[0], out[1]


def values(got: Dict[int, List[Tuple[int, bytes]]], partition: int = 0) -> List[bytes]:
    return [v for _, v in got[partition]]


def test_read_committed_sees_committed_records_only(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    p = txn_producer(broker.bootstrap, f"{topic_name}-txn")
    want_committed: Dict[int, List[bytes]] = {0: [], 1: []}
    want_all: Dict[int, List[bytes]] = {0: [], 1: []}
    for t in range(6):
        p.begin_transaction()
        for i in range(50):
            part = i % 2
            v = b"t%d-%03d" % (t, i)
            p.produce(topic_name, v, partition=part)
            want_all[part].append(v)
            if t % 3 != 1:
                want_committed[part].append(v)
        if t % 3 == 1:
            p.flush(30)  # on the broker before the abort (an abort drops what the client has not sent)
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
    total_committed = sum(len(v) for v in want_committed.values())
    committed = read_all(broker.bootstrap, topic_name, 2, "read_committed", want=total_committed)
    uncommitted = read_all(broker.bootstrap, topic_name, 2, "read_uncommitted", want=300)
    for part in (0, 1):
        assert values(committed, part) == want_committed[part]
        assert values(uncommitted, part) == want_all[part]
        offsets = [o for o, _ in uncommitted[part]]
        # 6 markers (one per transaction) took an offset each, after each transaction's records.
        assert offsets == sorted(offsets)
        assert offsets[-1] == 25 * 6 + 6 - 2, offsets[-5:]
    # Nothing more arrives at either level (no control record surfaces).
    assert sum(len(v) for v in read_all(broker.bootstrap, topic_name, 2, "read_committed").values()) == total_committed
    assert committed_end(broker.bootstrap, topic_name, 0) == (156, 156)


def test_an_open_transaction_holds_back_read_committed_consumers(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        plain.produce(topic_name, b"plain-%d" % i, partition=0)
    plain.flush(10)
    p = txn_producer(broker.bootstrap, f"{topic_name}-txn")
    p.begin_transaction()
    for i in range(5):
        p.produce(topic_name, b"open-%d" % i, partition=0)
    p.flush(10)
    # Records after the open transaction's first one, written by a non-transactional producer, wait too.
    for i in range(3):
        plain.produce(topic_name, b"after-%d" % i, partition=0)
    plain.flush(10)
    assert committed_end(broker.bootstrap, topic_name, 0) == (10, 18)
    got = read_all(broker.bootstrap, topic_name, 1, "read_committed")
    assert values(got) == [b"plain-%d" % i for i in range(10)]
    p.commit_transaction(30)
    got = read_all(broker.bootstrap, topic_name, 1, "read_committed", want=18)
    assert values(got) == (
        [b"plain-%d" % i for i in range(10)] + [b"open-%d" % i for i in range(5)] + [b"after-%d" % i for i in range(3)]
    )
    assert committed_end(broker.bootstrap, topic_name, 0) == (19, 19)


def group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> Dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def test_offsets_sent_to_a_transaction_commit_with_it(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    group = f"{topic_name}-group"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        p = txn_producer(broker.bootstrap, f"{topic_name}-txn")
        p.begin_transaction()
        p.produce(topic_name, b"x", partition=0)
        p.send_offsets_to_transaction(
            [TopicPartition(topic_name, 0, 7), TopicPartition(topic_name, 1, 3)], c.consumer_group_metadata(), 30
        )
        p.commit_transaction(30)
        assert group_offsets(broker.bootstrap, group, topic_name, 2) == {0: 7, 1: 3}
        p.begin_transaction()
        p.produce(topic_name, b"y", partition=0)
        p.send_offsets_to_transaction([TopicPartition(topic_name, 0, 100)], c.consumer_group_metadata(), 30)
        p.abort_transaction(30)
        assert group_offsets(broker.bootstrap, group, topic_name, 2) == {0: 7, 1: 3}
    finally:
        c.close()
    # The committed offsets survive a restart (the coordinator replays the transactional commit and its marker).
    broker.restart()
    assert group_offsets(broker.bootstrap, group, topic_name, 2) == {0: 7, 1: 3}


def test_a_second_producer_with_the_same_id_fences_the_first(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    txn_id = f"{topic_name}-txn"
    first = txn_producer(broker.bootstrap, txn_id)
    first.begin_transaction()
    first.produce(topic_name, b"zombie", partition=0)
    first.flush(10)
    second = txn_producer(broker.bootstrap, txn_id)  # aborts the first's open transaction, bumps the epoch
    second.begin_transaction()
    second.produce(topic_name, b"live", partition=0)
    second.commit_transaction(30)
    with pytest.raises(KafkaException) as failed:
        first.produce(topic_name, b"zombie-2", partition=0)
        first.commit_transaction(30)
    err = failed.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH), err
    got = read_all(broker.bootstrap, topic_name, 1, "read_committed", want=1)
    assert values(got) == [b"live"]


def test_the_broker_aborts_a_transaction_past_its_timeout(broker_factory, topic_name):
    broker = broker_factory(TIMEOUT_OVERRIDES)
    create_topic(broker.bootstrap, topic_name, 1)
    p = txn_producer(broker.bootstrap, f"{topic_name}-txn", {"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic_name, b"abandoned", partition=0)
    p.flush(10)
    assert committed_end(broker.bootstrap, topic_name, 0) == (0, 1)
    deadline = time.monotonic() + 20
    while committed_end(broker.bootstrap, topic_name, 0)[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # The coordinator aborted it: an ABORT marker at offset 1, nothing readable at read_committed.
    assert committed_end(broker.bootstrap, topic_name, 0) == (2, 2)
    assert values(read_all(broker.bootstrap, topic_name, 1, "read_committed")) == []
    assert values(read_all(broker.bootstrap, topic_name, 1, "read_uncommitted", want=1)) == [b"abandoned"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_transactions_survive_a_sigkill(broker_factory, topic_name):
    broker = broker_factory(TIMEOUT_OVERRIDES)
    create_topic(broker.bootstrap, topic_name, 1)
    p = txn_producer(broker.bootstrap, f"{topic_name}-a", {"transaction.timeout.ms": 8000})
    for t, commit in enumerate((True, False, True)):
        p.begin_transaction()
        for i in range(20):
            p.produce(topic_name, b"%d-%02d" % (t, i), partition=0)
        if commit:
            p.commit_transaction(30)
        else:
            p.flush(30)
            p.abort_transaction(30)
    open_p = txn_producer(broker.bootstrap, f"{topic_name}-b", {"transaction.timeout.ms": 8000})
    open_p.begin_transaction()
    open_p.produce(topic_name, b"open", partition=0)
    open_p.flush(10)
    before = committed_end(broker.bootstrap, topic_name, 0)
    assert before == (63, 64)
    broker.restart(kill=True)
    # Same last stable offset after recovery: the open transaction still holds read_committed back.
    assert committed_end(broker.bootstrap, topic_name, 0) == before
    want = [b"0-%02d" % i for i in range(20)] + [b"2-%02d" % i for i in range(20)]
    assert values(read_all(broker.bootstrap, topic_name, 1, "read_committed", want=40)) == want
    # The reloaded coordinator times the open transaction out.
    deadline = time.monotonic() + 30
    while committed_end(broker.bootstrap, topic_name, 0)[0] < 65 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert committed_end(broker.bootstrap, topic_name, 0) == (65, 65)
    assert values(read_all(broker.bootstrap, topic_name, 1, "read_committed", want=40)) == want


def test_kafka_python_transactional_producer(broker, topic_name):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import TopicPartition as KTP

    create_topic(broker.bootstrap, topic_name, 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"{topic_name}-kp")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic_name, partition=0, value=b"a1").get(10)
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic_name, partition=0, value=b"c1").get(10)
        producer.send(topic_name, partition=0, value=b"c2").get(10)
        producer.commit_transaction()
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=5000,
    )
    try:
        consumer.assign([KTP(topic_name, 0)])
        got = [m.value for m in consumer]
    finally:
        consumer.close()
    assert got == [b"c1", b"c2"]
