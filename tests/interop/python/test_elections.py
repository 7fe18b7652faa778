"""Leader elections in a 3-node cluster, driven by real admin clients: preferred elections (ElectLeaders through
kafka-python's `elect_leaders` and confluent-kafka's `AdminClient.elect_leaders`), the controller's automatic
leader rebalance (`auto.leader.rebalance.enable`), and unclean elections (`unclean.leader.election.enable` on a
topic, and ElectLeaders UNCLEAN).

Three `sluice server` processes (every node broker+controller, the fixture of test_cluster.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest
from confluent_kafka import ElectionType, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from test_cluster import Cluster, serve

#: A paused follower leaves the ISR by lag after this, long before its session ends.
LAG_MAX_MS = 1500
SESSION_MS = 8000
ELECTION_NOT_NEEDED = 84


def configured(tmp_path: Path, **overrides: str) -> Cluster:
    c = Cluster(tmp_path)
    for node in c.nodes.values():
        node.extra_overrides["replica.lag.time.max.ms"] = str(LAG_MAX_MS)
        node.extra_overrides["broker.session.timeout.ms"] = str(SESSION_MS)
        node.extra_overrides.update(overrides)
    return c


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest):
    # No automatic rebalance: only the elections the test asks for move leaders back.
    yield from serve(configured(tmp_path, **{"auto.leader.rebalance.enable": "false"}), request)


@pytest.fixture
def rebalancing_cluster(tmp_path: Path, request: pytest.FixtureRequest):
    yield from serve(configured(tmp_path, **{"leader.imbalance.check.interval.seconds": "1"}), request)


def partitions(cluster: Cluster, topic: str, via: int = 0):
    admin = cluster.admin(node_id=via) if via else cluster.admin()
    return admin.list_topics(topic, timeout=10).topics[topic].partitions


def wait_for(cluster: Cluster, what: str, check: Callable[[], bool], timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (KafkaException, KeyError):
            # KeyError: a broker that has not applied a just-created topic yet answers its metadata without
            # partitions (LEADER_NOT_AVAILABLE), as Kafka does.
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{cluster.log_tails()}"
        time.sleep(0.3)


def preferred(cluster: Cluster, topic: str) -> Dict[int, int]:
    """Partition -> preferred replica (the first replica)."""
    return {p.id: p.replicas[0] for p in partitions(cluster, topic).values()}


def leaders(cluster: Cluster, topic: str, via: int = 0) -> Dict[int, int]:
    return {p.id: p.leader for p in partitions(cluster, topic, via).values()}


def bounce(cluster: Cluster, topic: str, victim: int) -> None:
    """SIGKILL `victim`, wait until it leads nothing, start it again and wait until it is back in every ISR (it
    rejoins through AlterPartition once it has caught up)."""
    cluster.nodes[victim].kill()
    survivor = next(i for i in cluster.nodes if i != victim)
    wait_for(cluster, f"leaders away from {victim}",
             lambda: victim not in leaders(cluster, topic, via=survivor).values(),
             timeout_s=SESSION_MS / 1000 + 30)
    cluster.nodes[victim].start()
    cluster.wait_brokers(3, via=survivor, timeout_s=30)
    # Asked of a survivor: the restarted node answers Metadata from its old image until it has caught up.
    wait_for(cluster, f"{victim} back in every ISR",
             lambda: all(victim in p.isrs for p in partitions(cluster, topic, via=survivor).values()))


def kafka_python_admin(cluster: Cluster):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap(), client_id="sluice-pytest-elections",
                            request_timeout_ms=30_000)


def test_preferred_elections_move_leadership_back(cluster: Cluster):
    admin = cluster.admin()
    admin.create_topics([NewTopic("pref", num_partitions=6, replication_factor=3)],
                        operation_timeout=10)["pref"].result(timeout=30)
    wait_for(cluster, "full ISRs", lambda: all(len(p.isrs) == 3 for p in partitions(cluster, "pref").values()))
    want = preferred(cluster, "pref")
    assert leaders(cluster, "pref") == want, "a new topic is led by its preferred replicas"
    controller = cluster.active_controller()
    victim = next(i for i in cluster.nodes if i != controller)
    bounce(cluster, "pref", victim)
    moved = sorted(p for p, l in leaders(cluster, "pref", via=controller).items() if l != want[p])
    assert moved == sorted(p for p, r in want.items() if r == victim), "only the victim's partitions moved"

    # kafka-python: ElectLeaders PREFERRED for every partition of the topic (it sends the partitions it
    # describes), to whichever broker it takes for the controller; another broker forwards it.
    kp = kafka_python_admin(cluster)
    try:
        response = kp.elect_leaders(0, {"pref": sorted(want)})
    finally:
        kp.close()
    codes = {p.partition_id: p.error_code
             for r in response.replica_election_results for p in r.partition_result}
    assert codes == {p: (0 if p in moved else ELECTION_NOT_NEEDED) for p in want}, codes
    wait_for(cluster, "preferred leaders after kafka-python's election",
             lambda: leaders(cluster, "pref", via=controller) == want)

    # confluent-kafka (librdkafka): the same after another broker's restart, then for all partitions (null).
    victim = next(i for i in cluster.nodes if i not in (controller, victim))
    bounce(cluster, "pref", victim)
    assert leaders(cluster, "pref", via=controller) != want
    admin = cluster.admin()
    asked = [TopicPartition("pref", p) for p in sorted(want)]
    # No request_timeout/operation_timeout: confluent-kafka 2.16.1's binding raises SystemError ("more argument
    # specifiers than keyword list entries") for any keyword argument of elect_leaders.
    result = admin.elect_leaders(ElectionType.PREFERRED, asked).result(timeout=60)
    outcome = {tp.partition: (e.code() if e is not None else 0) for tp, e in result.items()}
    assert outcome == {p: (0 if want[p] == victim else ELECTION_NOT_NEEDED) for p in want}, outcome
    wait_for(cluster, "preferred leaders after confluent-kafka's election",
             lambda: leaders(cluster, "pref", via=controller) == want)
    everything = admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=60)
    assert not [tp for tp, e in everything.items() if tp.topic == "pref" and (e is None or e.code() == 0)], \
        f"nothing left to elect: {everything}"


def test_auto_leader_rebalance_moves_leadership_back(rebalancing_cluster: Cluster):
    cluster = rebalancing_cluster
    admin = cluster.admin()
    admin.create_topics([NewTopic("auto", num_partitions=6, replication_factor=3)],
                        operation_timeout=10)["auto"].result(timeout=30)
    wait_for(cluster, "full ISRs", lambda: all(len(p.isrs) == 3 for p in partitions(cluster, "auto").values()))
    want = preferred(cluster, "auto")
    controller = cluster.active_controller()
    victim = next(i for i in cluster.nodes if i != controller)
    cluster.nodes[victim].kill()
    wait_for(cluster, f"leaders away from {victim}",
             lambda: victim not in leaders(cluster, "auto", via=controller).values(),
             timeout_s=SESSION_MS / 1000 + 30)
    cluster.nodes[victim].start()
    # No ElectLeaders: the controller's imbalance check (every second here) elects the preferred replicas once the
    # victim is back in their ISRs (2 of its 2 preferred partitions led by others: above 10%).
    wait_for(cluster, "automatic preferred leaders", lambda: leaders(cluster, "auto", via=controller) == want,
             timeout_s=60)


def produce(bootstrap: str, topic: str, count: int) -> int:
    """acks=all, one partition; returns how many were acknowledged."""
    acked: List[int] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.timeout.ms": 30000})
    for i in range(count):
        p.produce(topic, value=f"{topic}-{i}".encode(), partition=0,
                  on_delivery=lambda err, msg: acked.append(1) if err is None else None)
        p.poll(0)
    p.flush(60)
    return len(acked)


def test_unclean_election_when_the_last_in_sync_replica_dies(cluster: Cluster):
    """RF 2 with both replicas on the two brokers that are not the active controller. The follower pauses and leaves
    the ISR by lag; the leader is then killed. Where the topic allows unclean elections, the out-of-sync follower
    leads once the leader is fenced (ISR: itself alone); elsewhere the partition stays offline, until an operator
    asks for an unclean election (ElectLeaders UNCLEAN through kafka-python)."""
    controller = cluster.active_controller()
    leader, follower = [i for i in cluster.nodes if i != controller]
    admin = cluster.admin(node_id=controller)
    futures = admin.create_topics([
        NewTopic("dirty", num_partitions=1, replica_assignment=[[leader, follower]],
                 config={"unclean.leader.election.enable": "true"}),
        NewTopic("clean", num_partitions=1, replica_assignment=[[leader, follower]]),
    ], operation_timeout=10)
    for f in futures.values():
        f.result(timeout=30)
    for topic in ("dirty", "clean"):
        wait_for(cluster, f"{topic} fully in sync", lambda: partitions(cluster, topic)[0].isrs == [leader, follower]
                 or sorted(partitions(cluster, topic)[0].isrs) == sorted([leader, follower]))
        assert produce(cluster.bootstrap(), topic, 50) == 50

    os.kill(cluster.nodes[follower].proc.pid, signal.SIGSTOP)
    try:
        # acks=all goes on once the paused follower has left the ISR (replica.lag.time.max.ms).
        for topic in ("dirty", "clean"):
            assert produce(cluster.nodes[controller].bootstrap, topic, 50) == 50
            wait_for(cluster, f"{topic} ISR shrunk to the leader",
                     lambda: partitions(cluster, topic, via=controller)[0].isrs == [leader], timeout_s=20)
        cluster.nodes[leader].kill()
    finally:
        # Back before its own session ends: it is live, but out of sync, and its leader is gone.
        os.kill(cluster.nodes[follower].proc.pid, signal.SIGCONT)

    wait_for(cluster, "the out-of-sync follower leads the unclean topic",
             lambda: partitions(cluster, "dirty", via=controller)[0].leader == follower,
             timeout_s=SESSION_MS / 1000 + 30)
    p = partitions(cluster, "dirty", via=controller)[0]
    assert p.isrs == [follower], f"an unclean leader is the whole ISR: {p.isrs}"
    clean = partitions(cluster, "clean", via=controller)[0]
    # Kafka 4.1 with eligible leader replicas (KIP-966): the fenced last member leaves the ISR for the ELR.
    assert clean.leader == -1 and clean.isrs == [], \
        f"without unclean elections the partition stays offline: leader {clean.leader}, ISR {clean.isrs}"
    # The new leader takes writes (acks=all with an ISR of one).
    assert produce(cluster.bootstrap(exclude=leader), "dirty", 20) == 20

    # An operator's unclean election (ElectLeaders type 1, kafka-python) brings the offline partition back.
    from kafka import KafkaAdminClient

    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap(exclude=leader),
                          client_id="sluice-pytest-elections", request_timeout_ms=30_000)
    try:
        response = kp.elect_leaders(1, {"clean": [0], "dirty": [0]})
    finally:
        kp.close()
    codes = {(r.topic, p.partition_id): p.error_code
             for r in response.replica_election_results for p in r.partition_result}
    assert codes == {("clean", 0): 0, ("dirty", 0): ELECTION_NOT_NEEDED}, codes
    wait_for(cluster, "the offline partition led after ElectLeaders UNCLEAN",
             lambda: partitions(cluster, "clean", via=controller)[0].leader == follower)
    assert partitions(cluster, "clean", via=controller)[0].isrs == [follower]
