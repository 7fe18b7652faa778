"""Separate roles: 3 controller-only nodes (the Raft quorum) and 3 broker-only nodes (observers of the metadata log).

Kafka's production layout: `process.roles=controller` nodes vote on the metadata log and serve only their
CONTROLLER listener; `process.roles=broker` nodes follow the committed log as observers, register and heartbeat
with the active controller, and serve clients. Checked with confluent-kafka and kcat:
- Metadata lists exactly the 3 brokers (never a controller-only node); RF 3 topics are placed on the 3 brokers and
  records produced to them read back;
- SIGKILL of the active controller: a new one is elected among the remaining two, and CreateTopics sent to a
  broker (forwarded to the controller) succeeds again; every broker sees the topic;
- a broker-only node restarted keeps nothing of the metadata log locally: it fetches it from the controllers
  before it reconciles its partition logs, so its data survives the restart.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port, stop_all
from test_cluster import serve

CLUSTER_ID = "U3BsaXRSb2xlc0NsdXN0ZQ"
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_MS = 500
CONTROLLERS = [1, 2, 3]
BROKERS = [4, 5, 6]


class SplitCluster:
    def __init__(self, tmp_path: Path):
        self.controller_ports = {i: free_port() for i in CONTROLLERS}
        voters = ",".join(f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in CONTROLLERS)
        common = {
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": voters,
            "cluster.id": CLUSTER_ID,
            "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": str(HEARTBEAT_MS),
            "num.partitions": "3",
        }
        self.nodes: Dict[int, Broker] = {}
        for i in CONTROLLERS:
            node = Broker(tmp_path / f"controller-{i}", tmp_path / f"controller-{i}.log")
            # The readiness probe (ApiVersions) goes to the CONTROLLER listener, the only one it has.
            node.port = self.controller_ports[i]
            node.extra_overrides = {
                **common,
                "node.id": str(i),
                "process.roles": "controller",
                "listeners": f"CONTROLLER://127.0.0.1:{node.port}",
                "advertised.listeners": f"CONTROLLER://127.0.0.1:{node.port}",
            }
            self.nodes[i] = node
        for i in BROKERS:
            node = Broker(tmp_path / f"broker-{i}", tmp_path / f"broker-{i}.log")
            client = f"PLAINTEXT://127.0.0.1:{node.port}"
            node.extra_overrides = {
                **common,
                "node.id": str(i),
                "process.roles": "broker",
                "listeners": client,
                "advertised.listeners": client,
            }
            self.nodes[i] = node

    def start(self) -> "SplitCluster":
        for node in self.nodes.values():
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node._spawn()
        for node in self.nodes.values():
            node._wait_ready()
            node.starts += 1
        self.wait_brokers(BROKERS)
        return self

    def stop(self) -> None:
        # Brokers first (in parallel): their controlled shutdown needs the controllers.
        stop_all(self.nodes[i] for i in BROKERS)
        stop_all(self.nodes[i] for i in CONTROLLERS)

    def bootstrap(self) -> str:
        return ",".join(self.nodes[i].bootstrap for i in BROKERS if self.nodes[i].is_running())

    def admin(self, node_id: int = 0) -> AdminClient:
        servers = self.nodes[node_id].bootstrap if node_id else self.bootstrap()
        return AdminClient({"bootstrap.servers": servers, "socket.timeout.ms": 5000})

    def wait_brokers(self, want: List[int], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        seen: List[int] = []
        while time.monotonic() < deadline:
            try:
                seen = sorted(self.admin().list_topics(timeout=10).brokers)
                if seen == want:
                    return
            except KafkaException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"expected brokers {want}, Metadata lists {seen}\n{self.log_tails()}")

    def active_controller(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for i in CONTROLLERS:
                n = self.nodes[i]
                if not n.is_running():
                    continue
                lines = [l for l in n.log_path.read_text(errors="replace").splitlines() if "active controller" in l]
                if lines and "now the active controller" in lines[-1]:
                    return i
            time.sleep(0.2)
        raise AssertionError("no active controller\n" + self.log_tails())

    def wait_topic(self, name: str, partitions: int, timeout_s: float = 20.0) -> None:
        """Waits until every running broker's Metadata has `name` with `partitions` partitions, each with a leader."""
        for i in BROKERS:
            if not self.nodes[i].is_running():
                continue
            deadline = time.monotonic() + timeout_s
            while True:
                md = self.admin(i).list_topics(timeout=10)
                t = md.topics.get(name)
                if t is not None and t.error is None and len(t.partitions) == partitions \
                        and all(p.leader in BROKERS for p in t.partitions.values()):
                    break
                assert time.monotonic() < deadline, f"broker {i} does not list {name}\n{self.log_tails()}"
                time.sleep(0.1)

    def log_tails(self) -> str:
        return "\n".join(f"--- node {i} ---\n{n.log_tail(30)}" for i, n in self.nodes.items())


@pytest.fixture
def split(tmp_path: Path, request: pytest.FixtureRequest):
    yield from serve(SplitCluster(tmp_path), request)


def create(admin: AdminClient, name: str, partitions: int, rf: int) -> None:
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf)],
                                  operation_timeout=10)
    futures[name].result(timeout=30)


def produce(bootstrap: str, topic: str, count: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors: List[str] = []
    for n in range(count):
        p.produce(topic, key=str(n).encode(), value=f"v{n}".encode(),
                  on_delivery=lambda err, msg: errors.append(str(err)) if err else None)
    assert p.flush(30) == 0
    assert not errors, errors


def consume_all(bootstrap: str, topic: str, partitions: int) -> List[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: List[bytes] = []
    eof = set()
    deadline = time.monotonic() + 30
    while len(eof) < partitions and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
            continue
        got.append(m.value())
    c.close()
    return got


def test_brokers_and_controllers_apart(split: SplitCluster):
    admin = split.admin()
    create(admin, "apart", partitions=6, rf=3)
    split.wait_topic("apart", 6)
    md = admin.list_topics(timeout=10)
    assert sorted(md.brokers) == BROKERS, "controller-only nodes are never listed as brokers"
    leaders = set()
    for p in md.topics["apart"].partitions.values():
        assert sorted(p.replicas) == BROKERS, p.replicas
        leaders.add(p.leader)
    assert leaders == set(BROKERS)
    out = subprocess.run(["kcat", "-b", split.bootstrap(), "-L", "-m", "10"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "3 brokers:" in out.stdout, out.stdout
    # Records on the RF 3 partitions: acks=all returns once the broker-only followers have them.
    produce(split.bootstrap(), "apart", 600)
    got = consume_all(split.bootstrap(), "apart", 6)
    assert sorted(got) == sorted(f"v{n}".encode() for n in range(600))


def test_controller_failover_with_separate_roles(split: SplitCluster):
    victim = split.active_controller()
    killed_at = time.monotonic()
    split.nodes[victim].kill()
    recovered = None
    while time.monotonic() - killed_at < 30:
        try:
            create(split.admin(), "after-kill", partitions=2, rf=3)
            recovered = time.monotonic() - killed_at
            break
        except Exception:  # noqa: BLE001 - NOT_CONTROLLER and timeouts while the quorum elects
            time.sleep(0.05)
    assert recovered is not None, "no controller accepted CreateTopics after the kill\n" + split.log_tails()
    print(f"controller failover (separate roles): CreateTopics accepted {recovered:.2f} s after SIGKILL")
    split.wait_topic("after-kill", 2)
    assert split.active_controller() != victim
    # Brokers keep their sessions with the new controller: none is fenced.
    time.sleep(SESSION_TIMEOUT_MS / 1000 + 1)
    split.wait_brokers(BROKERS)


def test_restarted_broker_fetches_the_log_before_touching_its_partitions(split: SplitCluster):
    create(split.admin(), "kept", partitions=3, rf=1)
    split.wait_topic("kept", 3)
    produce(split.bootstrap(), "kept", 300)
    for i in BROKERS:
        node = split.nodes[i]
        node.stop()
        node.start()
    split.wait_brokers(BROKERS)
    split.wait_topic("kept", 3)
    got = consume_all(split.bootstrap(), "kept", 3)
    assert sorted(got) == sorted(f"v{n}".encode() for n in range(300)), "records lost across broker restarts"
    for i in BROKERS:
        assert "stray log" not in split.nodes[i].log_path.read_text(errors="replace")


def test_consumer_group_on_broker_only_nodes(split: SplitCluster):
    """FindCoordinator on a broker-only node creates `__consumer_offsets` through the active controller; a group
    consumer reads everything and its commit is read back by a new member."""
    create(split.admin(), "grouped", partitions=3, rf=1)
    split.wait_topic("grouped", 3)
    produce(split.bootstrap(), "grouped", 90)
    conf = {"bootstrap.servers": split.bootstrap(), "group.id": "g1", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    c = Consumer(conf)
    c.subscribe(["grouped"])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 90 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    assert len(got) == 90, f"read {len(got)} of 90\n{split.log_tails()}"
    c.commit(asynchronous=False)
    c.close()
    c = Consumer(conf)
    committed = c.committed([TopicPartition("grouped", p) for p in range(3)], timeout=30)
    c.close()
    assert sum(tp.offset for tp in committed) == 90, committed
