"""A randomized history check of transactions, in the spirit of Jepsen's Kafka checks: several confluent-kafka
transactional producers commit and abort transactions of random sizes over random partitions, at random, while a
read_committed and a read_uncommitted consumer poll the topic concurrently. The checker then states, for the
whole history:

- read_committed (the concurrent reader and a final one) saw exactly the records of committed transactions: each
  committed transaction whole, no record of an aborted one, no duplicate; a transaction whose commit call failed
  is indeterminate and must be seen whole or not at all;
- every partition is read in one log order: the concurrent reader's records are a prefix of the final reader's,
  offsets strictly increase, and each producer's records appear in the order it sent them;
- read_uncommitted saw every committed record too, and nothing that was never sent.

`TXN_HISTORY_SEED`, `TXN_HISTORY_PRODUCERS` and `TXN_HISTORY_TRANSACTIONS` vary the run.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from typing import Dict, List, Set, Tuple

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from helpers import create_topic
from test_transactions import committed_end, read_all

PARTITIONS = 3
PRODUCERS = int(os.environ.get("TXN_HISTORY_PRODUCERS", "4"))
TRANSACTIONS = int(os.environ.get("TXN_HISTORY_TRANSACTIONS", "40"))
SEED = int(os.environ.get("TXN_HISTORY_SEED", "20261206"))


def run_producer(bootstrap: str, topic: str, n: int, rng: random.Random, outcome: Dict[bytes, str],
                 txn_of: Dict[bytes, Tuple[int, int]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-p{n}", "linger.ms": rng.choice([0, 5])})
    p.init_transactions(30)
    for t in range(TRANSACTIONS):
        p.begin_transaction()
        values = []
        for i in range(rng.randint(1, 20)):
            v = b"p%d-t%03d-%02d" % (n, t, i)
            p.produce(topic, v, partition=rng.randrange(PARTITIONS))
            values.append(v)
            txn_of[v] = (n, t)
        if rng.random() < 0.3:
            if rng.random() < 0.5:
                p.flush(30)  # the aborted records reach the log
            p.abort_transaction(30)
            result = "aborted"
        else:
            try:
                p.commit_transaction(30)
                result = "committed"
            except KafkaException:
                result = "indeterminate"
                p.abort_transaction(30)
        for v in values:
            outcome[v] = result
        time.sleep(rng.uniform(0, 0.02))


def poll_until(bootstrap: str, topic: str, isolation: str, stop: threading.Event,
               out: Dict[int, List[Tuple[int, bytes]]]) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-txn-history", "enable.auto.commit": False,
                  "isolation.level": isolation, "fetch.wait.max.ms": 20})
    try:
        c.assign([TopicPartition(topic, p, -2) for p in range(PARTITIONS)])
        while not stop.is_set():
            for m in c.consume(500, 0.1):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                out[m.partition()].append((m.offset(), m.value()))
    finally:
        c.close()


@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_random_transactions_are_read_committed_exactly(broker, topic_name, seed):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    outcome: Dict[bytes, str] = {}
    txn_of: Dict[bytes, Tuple[int, int]] = {}
    concurrent = {"read_committed": defaultdict(list), "read_uncommitted": defaultdict(list)}
    stop = threading.Event()
    readers = [threading.Thread(target=poll_until, args=(broker.bootstrap, topic_name, iso, stop, concurrent[iso]))
               for iso in concurrent]
    producers = [threading.Thread(target=run_producer, args=(broker.bootstrap, topic_name, n,
                                                             random.Random(seed * 100 + n), outcome, txn_of))
                 for n in range(PRODUCERS)]
    for t in readers + producers:
        t.start()
    for t in producers:
        t.join(300)
    stop.set()
    for t in readers:
        t.join(60)
    # EndTxn is answered before its markers are written: wait until no transaction holds a partition back.
    deadline = time.monotonic() + 30
    while not all(a == b for a, b in (committed_end(broker.bootstrap, topic_name, p) for p in range(PARTITIONS))):
        assert time.monotonic() < deadline, "the last stable offset never reached the high watermark"
        time.sleep(0.2)
    committed = {v for v, r in outcome.items() if r == "committed"}
    aborted = {v for v, r in outcome.items() if r == "aborted"}
    indeterminate = {v for v, r in outcome.items() if r == "indeterminate"}
    assert committed and aborted, "the history must hold both outcomes"
    final = read_all(broker.bootstrap, topic_name, PARTITIONS, "read_committed", want=None, timeout_s=30)
    final_unc = read_all(broker.bootstrap, topic_name, PARTITIONS, "read_uncommitted", want=None, timeout_s=30)

    seen: List[bytes] = [v for p in range(PARTITIONS) for _, v in final[p]]
    seen_set: Set[bytes] = set(seen)
    assert len(seen) == len(seen_set), "duplicates at read_committed"
    assert not (seen_set & aborted), f"aborted records read committed: {sorted(seen_set & aborted)[:5]}"
    assert committed <= seen_set, f"committed records missing: {sorted(committed - seen_set)[:5]}"
    # All or nothing per indeterminate transaction.
    by_txn: Dict[Tuple[int, int], Set[bytes]] = defaultdict(set)
    for v in indeterminate:
        by_txn[txn_of[v]].add(v)
    for txn, vs in by_txn.items():
        assert vs <= seen_set or not (vs & seen_set), f"transaction {txn} seen in part"
    assert seen_set <= committed | indeterminate

    for p in range(PARTITIONS):
        offsets = [o for o, _ in final[p]]
        assert offsets == sorted(set(offsets)), f"partition {p}: offsets not strictly increasing"
        values = [v for _, v in final[p]]
        # The concurrent read_committed reader saw a prefix of the final log order.
        live = [v for _, v in concurrent["read_committed"][p]]
        assert live == values[: len(live)], f"partition {p}: the concurrent reader's order differs"
        assert not (set(live) & aborted)
        # Each producer's records in the order it sent them.
        last: Dict[int, bytes] = {}
        for v in values:
            n = txn_of[v][0]
            assert last.get(n, b"") < v, f"partition {p}: producer {n} out of order at {v!r}"
            last[n] = v
        # read_uncommitted: every committed record of this partition, nothing never sent.
        unc = [v for _, v in final_unc[p]]
        assert set(values) <= set(unc)
        assert set(unc) <= set(outcome)
        live_unc = [v for _, v in concurrent["read_uncommitted"][p]]
        assert live_unc == unc[: len(live_unc)], f"partition {p}: the concurrent read_uncommitted order differs"
    print(f"{len(committed)} committed, {len(aborted)} aborted, {len(indeterminate)} indeterminate records; "
          f"{sum(len(v) for v in final_unc.values()) - len(seen)} aborted records in the log")
