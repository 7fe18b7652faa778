"""DescribeTopicPartitions (key 75, KIP-966) through kafka-python 3.0.12's `KafkaAdminClient.describe_topic_partitions`.

- Pagination, one broker: named topics and every topic, a topic with more partitions than
  `response_partition_limit`, followed page by page through `next_cursor` across topics until it is None. Every
  partition appears exactly once, in order, and agrees with Metadata (kafka-python's `describe_topics`). An unknown
  name gets UNKNOWN_TOPIC_OR_PARTITION.
- Eligible leader replicas, a controller-only node and four broker-only nodes: an RF 3 topic on brokers 2, 3 and 4
  with min.insync.replicas=2, asked through broker 5, which hosts none of it. The brokers are stopped (SIGTERM,
  controlled shutdown) one at a time, then started again, and each step shows what Kafka 4.1 shows (ELR on by
  default): the first broker to leave takes the ISR down to min.insync.replicas and is not eligible (the high
  watermark could move on without it); the second takes it below and joins the ELR; the last empties the ISR into
  the ELR, the partition has no leader and the last leader is the last known ELR. Started again, the last leader
  (an ELR member) leads with the ISR itself alone, and the other ELR member leaves the ELR when it rejoins the
  ISR. Metadata shows only the empty ISR. The records acknowledged before the brokers stopped are all read back at
  the end. (One controller-only node holds the Raft quorum, so every broker may stop.)
- The same on the 3-node cluster of test_cluster.py (combined nodes, only one may stop): RF 3 with
  min.insync.replicas=3, one broker stopped is eligible in every partition, and leaves the ELRs when it is back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient

from conftest import Broker, free_port, stop_all
from test_cluster import Cluster, serve

UNKNOWN_TOPIC_OR_PARTITION = 3
#: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (KIP-430): everything, with no
#: authorizer.
TOPIC_OPERATIONS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))


def admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-pytest-dtp", request_timeout_ms=30_000)


def pages(kp: KafkaAdminClient, topics: List[str], limit: int) -> List[dict]:
    """Every page of a describe, following `next_cursor` until it is None."""
    out = []
    cursor = None
    while True:
        page = kp.describe_topic_partitions(topics, response_partition_limit=limit, cursor=cursor)
        out.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 100, "the cursor does not advance"


def shape(page: dict) -> Tuple[List[Tuple[str, List[int]]], Optional[Tuple[str, int]]]:
    c = page["next_cursor"]
    return (
        [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in page["topics"]],
        (c["topic_name"], c["partition_index"]) if c else None,
    )


def test_pages_follow_the_cursor_across_topics_and_partitions(broker, topic_name):
    base = topic_name[:40]
    a, b, c, missing = f"{base}-a", f"{base}-b", f"{base}-c", f"{base}-missing"
    kp = admin(broker.bootstrap)
    try:
        kp.create_topics({a: {"num_partitions": 7, "replication_factor": 1},
                          b: {"num_partitions": 3, "replication_factor": 1},
                          c: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)

        # Named (out of order, with an unknown one), 3 partitions a page: `a` alone fills two pages and a half.
        got = pages(kp, [missing, c, b, a], limit=3)
        assert [shape(p) for p in got] == [
            ([(a, [0, 1, 2])], (a, 3)),
            ([(a, [3, 4, 5])], (a, 6)),
            ([(a, [6]), (b, [0, 1])], (b, 2)),
            ([(b, [2]), (c, [0]), (missing, [])], None),
        ]
        unknown = got[-1]["topics"][-1]
        assert unknown["error_code"] == UNKNOWN_TOPIC_OR_PARTITION
        assert unknown["topic_id"] is None or str(unknown["topic_id"]) == "00000000-0000-0000-0000-000000000000"

        # Every partition agrees with Metadata; ELR lists are empty on a healthy RF 1 topic.
        metadata = {t["name"]: t for t in kp.describe_topics([a, b, c])}
        for page in got:
            for t in page["topics"]:
                if t["name"] == missing:
                    continue
                md = metadata[t["name"]]
                assert t["error_code"] == 0 and not t["is_internal"]
                assert str(t["topic_id"]) == str(md["topic_id"])
                assert t["topic_authorized_operations"] == TOPIC_OPERATIONS
                md_parts = {p["partition_index"]: p for p in md["partitions"]}
                for p in t["partitions"]:
                    m = md_parts[p["partition_index"]]
                    assert p["error_code"] == 0
                    assert (p["leader_id"], p["leader_epoch"]) == (m["leader_id"], m["leader_epoch"])
                    assert p["replica_nodes"] == m["replica_nodes"]
                    assert p["isr_nodes"] == m["isr_nodes"]
                    assert p["offline_replicas"] == []
                    assert p["eligible_leader_replicas"] is None and p["last_known_elr"] is None

        # Every topic (an empty list), 2 a page: each of the broker's topic partitions exactly once, topics in name
        # order.
        everything = pages(kp, [], limit=2)
        seen = [(t["name"], p["partition_index"]) for page in everything for t in page["topics"]
                for p in t["partitions"]]
        assert all(len(page["topics"]) >= 1 for page in everything)
        assert all(sum(len(t["partitions"]) for t in page["topics"]) <= 2 for page in everything)
        want = sorted((t["name"], p["partition_index"]) for t in kp.describe_topics() for p in t["partitions"])
        assert seen == want, "every partition once, by topic name and index"
        assert {a, b, c} <= {name for name, _ in seen}
        print(f"named: {len(got)} pages of at most 3; all topics: {len(seen)} partitions in {len(everything)} "
              f"pages of at most 2")
    finally:
        kp.close()


# ---- eligible leader replicas on a cluster ------------------------------------------------------------------------

CLUSTER_ID = "Mo3aaVyWXSeixN8FTn2_5A"
CONTROLLER = 1
#: 2, 3, 4 hold the topic; 5 hosts nothing of it and answers the describes.
BROKERS = [2, 3, 4, 5]
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 500


class ControllerAndBrokers:
    """One controller-only node (the whole Raft quorum, so brokers can all stop without losing it) and four
    broker-only nodes."""

    def __init__(self, tmp_path: Path):
        port = free_port()
        common = {
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": f"{CONTROLLER}@127.0.0.1:{port}",
            "cluster.id": CLUSTER_ID,
            "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": str(HEARTBEAT_MS),
            "replica.lag.time.max.ms": "2000",
        }
        self.nodes: Dict[int, Broker] = {}
        controller = Broker(tmp_path / "controller", tmp_path / "controller.log")
        controller.port = port  # the readiness probe goes to its only listener
        controller.extra_overrides = {**common, "node.id": str(CONTROLLER), "process.roles": "controller",
                                      "listeners": f"CONTROLLER://127.0.0.1:{port}",
                                      "advertised.listeners": f"CONTROLLER://127.0.0.1:{port}"}
        self.nodes[CONTROLLER] = controller
        for i in BROKERS:
            node = Broker(tmp_path / f"broker-{i}", tmp_path / f"broker-{i}.log")
            listener = f"PLAINTEXT://127.0.0.1:{node.port}"
            node.extra_overrides = {**common, "node.id": str(i), "process.roles": "broker",
                                    "listeners": listener, "advertised.listeners": listener}
            self.nodes[i] = node

    def start(self) -> "ControllerAndBrokers":
        for node in self.nodes.values():
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node._spawn()
        for node in self.nodes.values():
            node._wait_ready()
            node.starts += 1
        wait_for(self, "four brokers registered and unfenced",
                 lambda: sorted(AdminClient({"bootstrap.servers": self.nodes[5].bootstrap})
                                .list_topics(timeout=10).brokers) == BROKERS)
        return self

    def stop(self) -> None:
        stop_all(self.nodes[i] for i in BROKERS)
        stop_all([self.nodes[CONTROLLER]])

    def log_tails(self) -> str:
        return "\n".join(f"--- node {i} ---\n{n.log_tail(25)}" for i, n in self.nodes.items())


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest):
    yield from serve(ControllerAndBrokers(tmp_path), request)


def wait_for(cluster, what: str, check: Callable[[], bool], timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Optional[BaseException] = None
    while True:
        try:
            if check():
                return
        except Exception as e:  # a client error while a broker stops: ask again
            last = e
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last error: {last!r})\n" \
                                            f"{cluster.log_tails()}"
        time.sleep(0.3)


class Describer:
    """kafka-python's DescribeTopicPartitions of one partition through broker 5 (the client is made again after an
    error)."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap = bootstrap
        self.topic = topic
        self.client: Optional[KafkaAdminClient] = None
        self.last: Optional[dict] = None

    def partition(self) -> dict:
        if self.client is None:
            self.client = admin(self.bootstrap)
        try:
            page = self.client.describe_topic_partitions([self.topic])
        except Exception:
            self.close()
            raise
        (topic,) = page["topics"]
        assert topic["error_code"] == 0 and page["next_cursor"] is None
        (p,) = topic["partitions"]
        assert p["error_code"] == 0
        self.last = p
        return p

    def state(self) -> Tuple[int, List[int], List[int], List[int], List[int]]:
        """(leader, ISR, ELR, last known ELR, offline replicas), each list sorted (Kafka keeps no order in them);
        empty lists for kafka-python's None."""
        p = self.partition()
        return (p["leader_id"], sorted(p["isr_nodes"]), sorted(p["eligible_leader_replicas"] or []),
                sorted(p["last_known_elr"] or []), sorted(p["offline_replicas"]))

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            finally:
                self.client = None


def test_stopped_replicas_show_in_the_eligible_leader_replicas(cluster: ControllerAndBrokers):
    topic = "elr"
    via = cluster.nodes[5].bootstrap
    kp = admin(via)
    try:
        kp.create_topics({topic: {"assignments": {0: [2, 3, 4]}, "configs": {"min.insync.replicas": "2"}}},
                         wait_for_metadata=True)
    finally:
        kp.close()
    d = Describer(via, topic)
    steps: List[str] = []

    def expect(what: str, want: Tuple[int, List[int], List[int], List[int], List[int]], timeout_s: float = 40.0):
        started = time.monotonic()
        wait_for(cluster, f"{what}: (leader, ISR, ELR, last known ELR, offline) {want}, last seen {d.last}",
                 lambda: d.state() == want, timeout_s)
        steps.append(f"{what}: {want} after {time.monotonic() - started:.1f}s")

    try:
        expect("created", (2, [2, 3, 4], [], [], []))
        values = [f"elr-{i}".encode() for i in range(30)]
        acked: List[bytes] = []
        producer = Producer({"bootstrap.servers": via, "acks": "all", "linger.ms": 5, "message.timeout.ms": 30000})
        for v in values:
            producer.produce(topic, value=v, partition=0,
                             on_delivery=lambda err, msg: acked.append(msg.value()) if err is None else None)
        producer.flush(60)
        del producer
        assert acked == values

        # Down to min.insync.replicas (2): nobody is eligible yet.
        cluster.nodes[2].stop()
        expect("broker 2 stopped", (3, [3, 4], [], [], [2]))
        # Below it: 3 holds every committed record (the high watermark stands still), so it is eligible.
        cluster.nodes[3].stop()
        expect("broker 3 stopped", (4, [4], [3], [], [2, 3]))
        # The last in-sync replica goes: the ISR empties into the ELR, no leader, 4 is the last known leader.
        cluster.nodes[4].stop()
        expect("broker 4 stopped", (-1, [], [3, 4], [4], [2, 3, 4]))
        # Metadata (confluent-kafka, Metadata v12) has no ELR: only an empty ISR and no leader.
        md = AdminClient({"bootstrap.servers": via}).list_topics(topic, timeout=10).topics[topic].partitions[0]
        assert (md.leader, md.isrs, sorted(md.replicas)) == (-1, [], [2, 3, 4])

        # 4 (an ELR member, shut down cleanly) comes back: it leads with the ISR itself alone; 3 stays eligible.
        cluster.nodes[4].start()
        expect("broker 4 started", (4, [4], [3], [], [2, 3]))
        # 3 catches up and rejoins the ISR: back at min.insync.replicas, the ELR empties.
        cluster.nodes[3].start()
        expect("broker 3 started", (4, [3, 4], [], [], [2]))
        cluster.nodes[2].start()
        expect("broker 2 started", (4, [2, 3, 4], [], [], []))
    finally:
        d.close()
        print("\n".join(steps))

    # The eligible replicas kept the committed records: all 30 read back from the new leader.
    consumer = Consumer({"bootstrap.servers": via, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: List[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < len(values) and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    consumer.close()
    assert got == values


@pytest.fixture
def combined_cluster(tmp_path: Path, request: pytest.FixtureRequest):
    """The 3-node cluster of test_cluster.py: every node broker+controller."""
    yield from serve(Cluster(tmp_path), request)


def test_three_combined_nodes_with_min_insync_replicas_three(combined_cluster: Cluster):
    """RF 3 with min.insync.replicas=3 on three combined nodes (so only one may stop: two would take the Raft quorum
    with them): every partition's ISR falls below the minimum as soon as one broker stops cleanly, so that broker is
    eligible in all of them; back in the ISRs after its restart, the ELRs empty. Pages of 2 partitions."""
    c = combined_cluster
    controller = c.active_controller()
    victim = next(i for i in c.nodes if i != controller)
    via = c.nodes[controller].bootstrap
    kp = admin(via)
    try:
        kp.create_topics({"elr3": {"num_partitions": 3, "replication_factor": 3,
                                   "configs": {"min.insync.replicas": "3"}}}, wait_for_metadata=True)
    finally:
        kp.close()

    def partitions() -> Dict[int, Tuple[int, List[int], List[int], List[int]]]:
        kp = admin(via)
        try:
            page = kp.describe_topic_partitions(["elr3"], response_partition_limit=2)
            rest = kp.describe_topic_partitions(["elr3"], cursor=page["next_cursor"])
        finally:
            kp.close()
        assert page["next_cursor"] == {"topic_name": "elr3", "partition_index": 2}
        assert rest["next_cursor"] is None
        return {p["partition_index"]: (p["leader_id"], sorted(p["isr_nodes"]),
                                       sorted(p["eligible_leader_replicas"] or []), sorted(p["offline_replicas"]))
                for r in (page, rest) for t in r["topics"] for p in t["partitions"]}

    others = sorted(i for i in c.nodes if i != victim)
    wait_for(c, "full ISRs", lambda: all(isr == [1, 2, 3] and not elr for _, isr, elr, _ in partitions().values()))
    c.nodes[victim].stop()
    wait_for(c, f"{victim} eligible in every partition",
             lambda: all(isr == others and elr == [victim] and off == [victim] and leader in others
                         for leader, isr, elr, off in partitions().values()))
    print(f"node {victim} stopped: {partitions()}")
    c.nodes[victim].start()
    wait_for(c, f"{victim} back in every ISR, ELRs empty",
             lambda: all(isr == [1, 2, 3] and not elr and not off for _, isr, elr, off in partitions().values()))
