"""A 3-node Sluice cluster (every node `broker,controller`, a Raft quorum of 3 voters) driven by real clients.

Each test starts three `sluice server` processes on free loopback ports (a client listener and a CONTROLLER
listener each, `controller.quorum.voters` naming all three) and checks what a Kafka operator expects:
- confluent-kafka's admin and kcat list 3 brokers; topics with replication.factor=3 have replicas on 3 brokers;
- SIGKILL of the active controller while topics are being created: every CreateTopics that succeeded is in every
  node's Metadata afterwards, none half-applied, and a new controller accepts CreateTopics (time measured);
- SIGSTOP of a broker past its session timeout: fenced (left out of Metadata, its leaderships moved); SIGCONT:
  it comes back unfenced;
- the whole cluster restarted keeps its topics;
- a node whose data dir was formatted for another cluster refuses to start, naming both ids;
- `sluice cluster describe` shows a SIGSTOPped broker fenced (as kafka-python's DescribeCluster v2 does), then
  unfenced after SIGCONT, and `sluice cluster quorum --replication` lists the 3 voters, leader first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port, stop_all

CLUSTER_ID = "MkU3OEVBNTcwNTJENDM2Qk"
#: Short sessions so fencing tests do not wait 9 s (Kafka's default) each time.
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_MS = 500


class Cluster:
    """Three combined broker+controller nodes on loopback."""

    def __init__(self, tmp_path: Path, size: int = 3):
        self.tmp_path = tmp_path
        ids = list(range(1, size + 1))
        self.controller_ports = {i: free_port() for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in ids)
        self.nodes: Dict[int, Broker] = {}
        for i in ids:
            node = Broker(tmp_path / f"node-{i}", tmp_path / f"node-{i}.log")
            client = f"PLAINTEXT://127.0.0.1:{node.port}"
            node.extra_overrides = {
                "node.id": str(i),
                "process.roles": "broker,controller",
                "listeners": f"{client},CONTROLLER://127.0.0.1:{self.controller_ports[i]}",
                "advertised.listeners": client,
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "controller.quorum.voters": voters,
                "cluster.id": CLUSTER_ID,
                "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
                "broker.heartbeat.interval.ms": str(HEARTBEAT_MS),
                "num.partitions": "3",
            }
            self.nodes[i] = node

    def start(self) -> "Cluster":
        # Start all three at once: each waits for the others to form the quorum.
        for node in self.nodes.values():
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node._spawn()
        for node in self.nodes.values():
            node._wait_ready()
            node.starts += 1
        self.wait_brokers(len(self.nodes))
        return self

    def stop(self) -> None:
        stop_all(self.nodes.values())

    def bootstrap(self, exclude: Optional[int] = None) -> str:
        return ",".join(n.bootstrap for i, n in self.nodes.items() if i != exclude)

    def admin(self, node_id: Optional[int] = None, exclude: Optional[int] = None) -> AdminClient:
        servers = self.nodes[node_id].bootstrap if node_id else self.bootstrap(exclude)
        return AdminClient({"bootstrap.servers": servers, "socket.timeout.ms": 5000})

    def metadata(self, node_id: int):
        return self.admin(node_id).list_topics(timeout=10)

    def wait_brokers(self, count: int, via: Optional[int] = None, timeout_s: float = 30.0) -> List[int]:
        """Waits until Metadata (through node `via`, or any running node) lists exactly `count` brokers."""
        deadline = time.monotonic() + timeout_s
        seen: List[int] = []
        while time.monotonic() < deadline:
            ids = [via] if via else [i for i, n in self.nodes.items() if n.is_running()]
            try:
                md = self.metadata(ids[0])
                seen = sorted(md.brokers)
                if len(seen) == count:
                    return seen
            except KafkaException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"expected {count} brokers, Metadata lists {seen}\n{self.log_tails()}")

    def active_controller(self) -> int:
        """The active controller's id: the running node whose log last says it became the active controller."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for i, n in self.nodes.items():
                if not n.is_running():
                    continue
                lines = [l for l in n.log_path.read_text(errors="replace").splitlines()
                         if "active controller" in l]
                if lines and "now the active controller" in lines[-1]:
                    return i
            time.sleep(0.2)
        raise AssertionError("no active controller\n" + self.log_tails())

    def log_tails(self) -> str:
        return "\n".join(f"--- node {i} ---\n{n.log_tail(30)}" for i, n in self.nodes.items())


def serve(c, request: pytest.FixtureRequest):
    """A cluster fixture's body: starts `c` (a cluster with `start`, `stop` and `log_tails`), yields it, then stops
    it, printing its nodes' last log lines when the test failed."""
    c.start()
    yield c
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    c.stop()
    if failed:
        print(c.log_tails())


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest):
    yield from serve(Cluster(tmp_path), request)


def create(admin: AdminClient, name: str, partitions: int = 3, rf: int = 3) -> None:
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf)],
                                  operation_timeout=10)
    futures[name].result(timeout=30)


def test_three_nodes_list_three_brokers_and_place_rf3_on_all(cluster: Cluster):
    admin = cluster.admin()
    create(admin, "rf3", partitions=6, rf=3)
    for node_id in cluster.nodes:
        md = cluster.metadata(node_id)
        assert sorted(md.brokers) == [1, 2, 3], f"node {node_id} lists {sorted(md.brokers)}"
        deadline = time.monotonic() + 10
        while "rf3" not in md.topics and time.monotonic() < deadline:
            time.sleep(0.1)
            md = cluster.metadata(node_id)
        parts = md.topics["rf3"].partitions
        assert len(parts) == 6
        leaders = set()
        for p in parts.values():
            assert sorted(p.replicas) == [1, 2, 3], p.replicas
            assert sorted(p.isrs) == [1, 2, 3], p.isrs
            leaders.add(p.leader)
        assert leaders == {1, 2, 3}, f"leaders are striped over the brokers: {leaders}"
    # Too few brokers for the replication factor: Kafka's error.
    futures = admin.create_topics([NewTopic("rf4", num_partitions=1, replication_factor=4)])
    with pytest.raises(KafkaException) as e:
        futures["rf4"].result(timeout=30)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"


def test_kcat_lists_three_brokers(cluster: Cluster):
    out = subprocess.run(["kcat", "-b", cluster.bootstrap(), "-L", "-m", "10"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "3 brokers:" in out.stdout, out.stdout


def test_sigkill_active_controller_while_creating_topics(cluster: Cluster):
    victim = cluster.active_controller()
    created: List[str] = []
    stop = threading.Event()

    def creator():
        admin = cluster.admin(exclude=victim)
        n = 0
        while not stop.is_set():
            name = f"t{n}"
            n += 1
            try:
                create(admin, name, partitions=2, rf=2)
                created.append(name)
            except KafkaException:
                pass
            except Exception:  # noqa: BLE001 - timeouts from the futures count as failures too
                pass

    thread = threading.Thread(target=creator, daemon=True)
    thread.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    cluster.nodes[victim].kill()
    # A new controller accepts CreateTopics: measure from the kill to the first success.
    admin = cluster.admin(exclude=victim)
    recovered = None
    while time.monotonic() - killed_at < 30:
        try:
            create(admin, f"after-{int((time.monotonic() - killed_at) * 1000)}", partitions=1, rf=1)
            recovered = time.monotonic() - killed_at
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    assert recovered is not None, "no controller accepted CreateTopics after the kill\n" + cluster.log_tails()
    print(f"controller failover: CreateTopics accepted {recovered:.2f} s after SIGKILL of node {victim}")
    time.sleep(1.0)
    stop.set()
    thread.join(timeout=60)
    assert created, "the creator made no topic"
    # Bring the victim back: every node, it included, has every topic that was acknowledged, whole.
    cluster.nodes[victim].start()
    for node_id in cluster.nodes:
        deadline = time.monotonic() + 20
        while True:
            md = cluster.metadata(node_id)
            missing = [t for t in created if t not in md.topics]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not missing, f"node {node_id} lacks acknowledged topics {missing}"
        for t in created:
            assert len(md.topics[t].partitions) == 2, f"{t} half-applied on node {node_id}"


def test_sigstop_broker_is_fenced_and_rejoins_after_sigcont(cluster: Cluster):
    create(cluster.admin(), "fence", partitions=6, rf=3)
    controller = cluster.active_controller()
    victim = next(i for i in cluster.nodes if i != controller)
    proc = cluster.nodes[victim].proc
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        survivors = [i for i in cluster.nodes if i != victim]
        cluster.wait_brokers(2, via=controller, timeout_s=SESSION_TIMEOUT_MS / 1000 + 15)
        md = cluster.metadata(controller)
        for p in md.topics["fence"].partitions.values():
            assert p.leader in survivors, f"partition {p.id} still led by fenced broker {victim}"
            assert victim not in p.isrs
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    cluster.wait_brokers(3, via=controller, timeout_s=30)


def test_whole_cluster_restart_keeps_topics(cluster: Cluster):
    create(cluster.admin(), "durable", partitions=4, rf=3)
    stop_all(cluster.nodes.values())
    cluster.start()
    for node_id in cluster.nodes:
        md = cluster.metadata(node_id)
        assert "durable" in md.topics and len(md.topics["durable"].partitions) == 4


def test_node_of_another_cluster_is_refused(cluster: Cluster):
    node = cluster.nodes[3]
    node.stop()
    node.extra_overrides["cluster.id"] = "AAAAAAAAAAAAAAAAAAAAAA"
    node._spawn()
    code = node.proc.wait(timeout=30)
    node.proc = None
    assert code != 0
    tail = node.log_tail()
    assert "AAAAAAAAAAAAAAAAAAAAAA" in tail and CLUSTER_ID in tail, tail


# --- `sluice cluster describe` / `sluice cluster quorum` against the 3-node cluster -------------------------------


def sluice_tool(*args: str, bootstrap: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Runs a `sluice` tool (the binary under test) against `bootstrap`; fails the test on a non-zero exit."""
    from conftest import sluice_bin

    out = subprocess.run([str(sluice_bin()), *args, "--bootstrap-server", bootstrap], capture_output=True,
                         text=True, timeout=timeout_s)
    assert out.returncode == 0, f"sluice {' '.join(args)} failed: {out.stderr}"
    return out


def sluice_describe(bootstrap: str) -> dict:
    import json

    return json.loads(sluice_tool("cluster", "describe", "--output", "json", bootstrap=bootstrap).stdout)


def wait_fenced_state(bootstrap: str, node_id: int, fenced: bool, timeout_s: float = 20.0) -> dict:
    """Polls `sluice cluster describe` until it lists `node_id` with that fenced state; returns the description."""
    deadline = time.monotonic() + timeout_s
    described: dict = {}
    while time.monotonic() < deadline:
        described = sluice_describe(bootstrap)
        states = {b["id"]: b["fenced"] for b in described["brokers"]}
        if states.get(node_id) is fenced:
            return described
        time.sleep(0.3)
    raise AssertionError(f"broker {node_id} never shown fenced={fenced}: {described}")


def kafka_python_brokers(bootstrap: str) -> Dict[int, bool]:
    """Broker id -> fenced, as kafka-python's `describe_cluster` sees them (it asks for fenced brokers, v2)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-pytest-cluster",
                             request_timeout_ms=15_000)
    try:
        return {b["broker_id"]: b["is_fenced"] for b in admin.describe_cluster()["brokers"]}
    finally:
        admin.close()


def replication_rows(bootstrap: str) -> List[List[str]]:
    """`sluice cluster quorum --replication` as rows of cells (Kafka's tab-separated table), header first."""
    out = sluice_tool("cluster", "quorum", "--replication", bootstrap=bootstrap).stdout
    return [[cell.strip() for cell in line.split("\t")][:7] for line in out.splitlines()]


def test_cluster_describe_shows_fenced_broker_and_quorum_replication(cluster: Cluster):
    controller = cluster.active_controller()
    via = cluster.nodes[controller].bootstrap

    described = sluice_describe(via)
    assert described["fenced_listed"] is True
    assert {b["id"]: b["fenced"] for b in described["brokers"]} == {1: False, 2: False, 3: False}
    for b in described["brokers"]:
        assert f'{b["host"]}:{b["port"]}' == cluster.nodes[b["id"]].bootstrap
    assert sorted(described["quorum"]["voters"]) == [1, 2, 3]
    # Third-party witnesses: librdkafka (confluent-kafka, DescribeCluster) and kafka-python (DescribeCluster v2
    # with IncludeFencedBrokers) list the same brokers at the same addresses.
    librdkafka = cluster.admin(controller)  # kept: the future fails if its handle is destroyed first
    nodes = librdkafka.describe_cluster(request_timeout=15).result(timeout=30).nodes
    assert sorted((n.id, f"{n.host}:{n.port}") for n in nodes) == sorted(
        (b["id"], f'{b["host"]}:{b["port"]}') for b in described["brokers"])
    assert kafka_python_brokers(via) == {1: False, 2: False, 3: False}

    # `--replication` lists the three voters, the leader first; `--status` and kafka-python's
    # describe_metadata_quorum name the same leader.
    rows = replication_rows(via)
    assert rows[0] == ["NodeId", "DirectoryId", "LogEndOffset", "Lag", "LastFetchTimestamp",
                       "LastCaughtUpTimestamp", "Status"], rows
    assert sorted(int(r[0]) for r in rows[1:]) == [1, 2, 3], rows
    assert [r[6] for r in rows[1:]] == ["Leader", "Follower", "Follower"], rows
    assert rows[1][3] == "0", "the leader has no lag"
    leader = int(rows[1][0])
    status = dict(line.split(":", 1) for line in
                  sluice_tool("cluster", "quorum", "--status", bootstrap=via).stdout.splitlines())
    assert int(status["LeaderId"]) == leader
    assert status["ClusterId"].strip() == CLUSTER_ID
    assert status["CurrentVoters"].count('"id"') == 3, status["CurrentVoters"]
    from kafka import KafkaAdminClient

    kp = KafkaAdminClient(bootstrap_servers=via, request_timeout_ms=15_000)
    try:
        partition = kp.describe_metadata_quorum()["topics"][0]["partitions"][0]
    finally:
        kp.close()
    assert partition["leader_id"] == leader
    assert sorted(v["replica_id"] for v in partition["current_voters"]) == [1, 2, 3]

    # SIGSTOP a broker that is not the active controller past its session: fenced, but still registered.
    victim = next(i for i in cluster.nodes if i != controller)
    proc = cluster.nodes[victim].proc
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        # Once Metadata drops it no client (ours included) connects to the stopped process.
        cluster.wait_brokers(2, via=controller, timeout_s=SESSION_TIMEOUT_MS / 1000 + 15)
        described = wait_fenced_state(via, victim, True)
        assert {b["id"] for b in described["brokers"]} == {1, 2, 3}, "a fenced broker stays registered"
        assert all(not b["fenced"] for b in described["brokers"] if b["id"] != victim)
        text = sluice_tool("cluster", "describe", bootstrap=via).stdout
        row = next(l.split() for l in text.splitlines() if l.split()[:1] == [str(victim)])
        assert row[-1] == "fenced", text
        assert kafka_python_brokers(via) == {i: i == victim for i in cluster.nodes}
        # A fresh handle: it learns the brokers from Metadata, which no longer has the stopped one.
        librdkafka = cluster.admin(controller)
        nodes = librdkafka.describe_cluster(request_timeout=15).result(timeout=30).nodes
        assert sorted(n.id for n in nodes) == sorted(i for i in cluster.nodes if i != victim), \
            "librdkafka does not ask for fenced brokers: the victim is left out"
        # The quorum still has its three voters (a stopped voter is a lagging follower, not removed).
        rows = replication_rows(via)
        assert sorted(int(r[0]) for r in rows[1:]) == [1, 2, 3], rows
        assert rows[1][6] == "Leader" and int(rows[1][0]) != victim, rows
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    cluster.wait_brokers(3, via=controller, timeout_s=30)
    described = wait_fenced_state(via, victim, False)
    assert {b["id"]: b["fenced"] for b in described["brokers"]} == {1: False, 2: False, 3: False}
    assert kafka_python_brokers(via) == {1: False, 2: False, 3: False}


# --- Producer ids: blocks from the controller (AllocateProducerIds), unique across the cluster --------------------

COORDINATOR_LOAD_IN_PROGRESS = 14


def init_producer_id(bootstrap: str, timeout_s: float = 30.0) -> int:
    """A producer id from the broker at `bootstrap` itself: a raw InitProducerId v0 without a transactional id (a
    client would send it to any broker), retried on COORDINATOR_LOAD_IN_PROGRESS as clients retry it."""
    import socket
    import struct

    from conftest import _recv_exact

    host, port = bootstrap.rsplit(":", 1)
    client_id = b"sluice-pytest-pids"
    request = struct.pack(">hhih", 22, 0, 7, len(client_id)) + client_id + struct.pack(">hi", -1, 60_000)
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
            s.sendall(struct.pack(">i", len(request)) + request)
            payload = _recv_exact(s, struct.unpack(">i", _recv_exact(s, 4))[0])
        correlation_id, _throttle_ms, error_code, producer_id, epoch = struct.unpack(">iihqh", payload)
        assert correlation_id == 7
        if error_code == COORDINATOR_LOAD_IN_PROGRESS and time.monotonic() < deadline:
            time.sleep(0.1)
            continue
        assert error_code == 0, f"InitProducerId from {bootstrap}: error {error_code}"
        assert epoch == 0
        return producer_id


def test_producer_ids_are_unique_across_brokers(cluster: Cluster):
    """Every broker hands out producer ids from its own block of 1000, taken from the active controller through the
    metadata log (AllocateProducerIds on the CONTROLLER listener, or locally on the controller): no two brokers,
    and no restart, ever hand out the same id. With per-node blocks every broker started at 0."""
    per_broker = {i: [init_producer_id(n.bootstrap) for _ in range(5)] for i, n in cluster.nodes.items()}
    every = [pid for ids in per_broker.values() for pid in ids]
    assert len(set(every)) == len(every), per_broker
    blocks = {i: {pid // 1000 for pid in ids} for i, ids in per_broker.items()}
    assert all(len(b) == 1 for b in blocks.values()), f"one block per broker: {per_broker}"
    assert len(set.union(*blocks.values())) == 3, f"three different blocks: {per_broker}"
    for ids in per_broker.values():
        assert ids == list(range(ids[0], ids[0] + 5)), "ids come from the block in order"

    # A restarted broker does not reuse the rest of its block (it lives only in memory): a new block.
    victim = next(i for i in cluster.nodes if i != cluster.active_controller())
    cluster.nodes[victim].stop()
    cluster.nodes[victim].start()
    cluster.wait_brokers(3)
    after = init_producer_id(cluster.nodes[victim].bootstrap)
    assert after not in every and after // 1000 not in set.union(*blocks.values()), (after, per_broker)
    every.append(after)

    # confluent-kafka idempotent producers, one bootstrapped to each broker, each produce to partitions led by all
    # three brokers: every message is delivered, and the producer ids librdkafka acquired (its `eos` debug log)
    # differ from each other and from every id above.
    import logging
    import re

    from confluent_kafka import Producer

    create(cluster.admin(), "pids", partitions=3, rf=1)

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: List[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    acquired: Dict[int, int] = {}
    for i, node in cluster.nodes.items():
        logger = logging.getLogger(f"sluice-pytest-pids-{i}")
        logger.setLevel(logging.DEBUG)
        lines = Lines()
        logger.addHandler(lines)
        producer = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True, "acks": "all",
                             "debug": "eos", "logger": logger})
        errors: List[object] = []
        for n in range(30):
            producer.produce("pids", b"from-%d-%d" % (i, n), partition=n % 3,
                             on_delivery=lambda err, msg: errors.append(err))
        assert producer.flush(30) == 0, f"producer bootstrapped to {i} did not deliver everything"
        assert errors == [None] * 30, errors
        pids = {int(m.group(1)) for l in lines.lines for m in [re.search(r"Acquired PID\{Id:(\d+),", l)] if m}
        assert len(pids) == 1, lines.lines
        acquired[i] = pids.pop()
    assert len(set(acquired.values())) == 3, acquired
    assert not set(acquired.values()) & set(every), (acquired, every)
