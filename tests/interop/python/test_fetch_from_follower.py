"""KIP-392, fetching from the closest replica: with `broker.rack` per node and the rack-aware replica selector, a
confluent-kafka (librdkafka) consumer whose `client.rack` is a follower's rack is sent to that follower by the
leader (`preferred_read_replica`) and reads every record from it; without `client.rack` it reads from the leader.
Which broker served the records is read from librdkafka's statistics (per-broker `rxbytes`), as librdkafka's own
test 0101 does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from test_cluster import Cluster, create, serve

SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
RECORDS = 2000
VALUE_SIZE = 1000


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest):
    c = Cluster(tmp_path)
    for node_id, node in c.nodes.items():
        node.extra_overrides["broker.rack"] = f"RACK{node_id}"
        node.extra_overrides["replica.selector.class"] = SELECTOR
    yield from serve(c, request)


def produce(bootstrap: str, topic: str) -> List[bytes]:
    values = [f"{i:06d}".encode() + b"x" * (VALUE_SIZE - 6) for i in range(RECORDS)]
    failed: List[str] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for v in values:
        p.produce(topic, value=v, on_delivery=lambda err, _m: failed.append(str(err)) if err else None)
        p.poll(0)
    assert p.flush(60) == 0
    assert not failed, failed[:5]
    return values


def consume(bootstrap: str, topic: str, rack: Optional[str]) -> (List[bytes], Dict[int, int]):
    """Reads every record of partition 0; returns them and the bytes received per broker id."""
    stats: List[dict] = []
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"g-{rack}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "statistics.interval.ms": 200,
        "stats_cb": lambda s: stats.append(json.loads(s)),
    }
    if rack is not None:
        conf["client.rack"] = rack
    c = Consumer(conf)
    c.assign([TopicPartition(topic, 0, 0)])
    got: List[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < RECORDS and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None:
            assert not m.error(), m.error()
            got.append(m.value())
    # Let a statistics report cover the last fetch.
    seen = len(stats)
    end = time.monotonic() + 5
    while len(stats) < seen + 2 and time.monotonic() < end:
        c.poll(0.1)
    c.close()
    assert stats, "no statistics"
    rx: Dict[int, int] = {}
    for b in stats[-1]["brokers"].values():
        if b["nodeid"] >= 0:
            rx[b["nodeid"]] = rx.get(b["nodeid"], 0) + b["rxbytes"]
    return got, rx


def leader_of(cluster: Cluster, topic: str) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        md = cluster.metadata(1)
        t = md.topics.get(topic)
        if t is not None and 0 in t.partitions and len(t.partitions[0].isrs) == 3 and t.partitions[0].leader >= 0:
            return t.partitions[0].leader
        time.sleep(0.2)
    raise AssertionError(f"{topic} has no leader with a full ISR")


def test_consumer_in_a_followers_rack_fetches_from_that_follower(cluster: Cluster):
    topic = "closest"
    create(cluster.admin(), topic, partitions=1, rf=3)
    leader = leader_of(cluster, topic)
    follower = next(i for i in sorted(cluster.nodes) if i != leader)
    values = produce(cluster.bootstrap(), topic)
    payload = RECORDS * VALUE_SIZE

    got, rx = consume(cluster.bootstrap(), topic, f"RACK{follower}")
    assert got == values
    print(f"client.rack=RACK{follower} (leader {leader}): rxbytes per broker {rx}")
    assert rx.get(follower, 0) >= payload, f"follower {follower} served too little: {rx}"
    assert rx.get(leader, 0) < payload // 10, f"leader {leader} served records: {rx}"

    # Without a rack, or in the leader's rack: everything from the leader.
    for rack in (None, f"RACK{leader}"):
        got, rx = consume(cluster.bootstrap(), topic, rack)
        assert got == values
        print(f"client.rack={rack} (leader {leader}): rxbytes per broker {rx}")
        assert rx.get(leader, 0) >= payload, f"leader {leader} served too little: {rx}"
        others = sum(v for k, v in rx.items() if k != leader)
        assert others < payload // 10, f"followers served records: {rx}"
