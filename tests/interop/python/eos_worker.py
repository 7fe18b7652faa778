"""A consume-transform-produce worker with exactly-once semantics through librdkafka (confluent-kafka), for
test_exactly_once.py: it copies every record of the input topic to the same partition of the output topic (value
prefixed with "out:"), one transaction per poll batch that also carries the consumed offsets
(`send_offsets_to_transaction`), and is meant to be SIGKILLed at any moment and started again.

    python eos_worker.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID

(`EOS_WORKER_PAUSE_S`: a pause before each commit; `EOS_WORKER_DEBUG`: librdkafka debug contexts.)

It runs until killed. Errors that the transactional API reports as abortable abort the transaction and rewind the
consumer to its committed offsets; fatal ones (a newer instance fenced this one) end the process with status 3.
"""

from __future__ import annotations

import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition


def rewind(consumer: Consumer) -> None:
    """Seeks every assigned partition back to the group's committed offset (what the aborted transaction read
    must be read again)."""
    assignment = consumer.assignment()
    if not assignment:
        return
    for tp in consumer.committed(assignment, timeout=30):
        consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -2))


def main() -> int:
    bootstrap, input_topic, output_topic, group, txn_id = sys.argv[1:6]
    # A pause before each commit (seconds), so that a run spans the kills the test deals it.
    pause = float(os.environ.get("EOS_WORKER_PAUSE_S", "0"))
    # librdkafka debug contexts for a failing run, e.g. EOS_WORKER_DEBUG=cgrp,eos.
    debug = {"debug": os.environ["EOS_WORKER_DEBUG"]} if os.environ.get("EOS_WORKER_DEBUG") else {}
    consumer = Consumer(
        {
            **debug,
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
            # Static membership (KIP-345): a restarted worker takes its partitions back at once instead of
            # waiting for the killed one's session to expire.
            "group.instance.id": txn_id,
            "fetch.wait.max.ms": 50,
        }
    )
    producer = Producer(
        {
            **debug,
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": 10_000,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(60)
    consumer.subscribe([input_topic])
    while True:
        msgs = consumer.consume(100, 0.2)
        msgs = [m for m in msgs if m.error() is None or m.error().code() != KafkaError._PARTITION_EOF]
        if not msgs:
            continue
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(output_topic, b"out:" + m.value(), key=m.key(), partition=m.partition())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 60
            )
            # Inside the transaction: a kill during the pause leaves it open (and its records on the broker).
            time.sleep(pause)
            producer.commit_transaction(60)
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                print(f"fatal: {err}", file=sys.stderr)
                return 3
            if err.txn_requires_abort():
                producer.abort_transaction(60)
                rewind(consumer)
            elif err.retriable():
                # commit_transaction may be retried as it is.
                producer.commit_transaction(60)
            else:
                raise


if __name__ == "__main__":
    sys.exit(main())
