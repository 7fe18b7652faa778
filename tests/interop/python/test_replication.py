"""Partition replication, first slice: followers fetch from their leaders, the high watermark moves when every
in-sync replica has a record, acks=all waits for it, and a record acknowledged with acks=all survives the SIGKILL
of its leader (the controller fences it, elects the next in-sync replica, which has every acknowledged record).

Three `sluice server` processes (every node broker+controller), confluent-kafka producers and consumers.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import List

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.structs import TopicPartition as KTopicPartition

from helpers import flatten_config_errors
from test_cluster import Cluster, create, serve

#: Short, so that a paused follower leaves the ISR in the test below without waiting Kafka's 30 s.
LAG_MAX_MS = 1500
#: Longer than the lag bound, so that the paused follower leaves the ISR by lag, not by being fenced.
SESSION_MS = 8000


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest):
    c = Cluster(tmp_path)
    for node in c.nodes.values():
        node.extra_overrides["replica.lag.time.max.ms"] = str(LAG_MAX_MS)
        node.extra_overrides["broker.session.timeout.ms"] = str(SESSION_MS)
    yield from serve(c, request)


def produce_acks_all(bootstrap: str, topic: str, values: List[bytes]) -> List[bytes]:
    """Produces with acks=all and idempotence; returns the values acknowledged."""
    acked: List[bytes] = []
    failed: List[str] = []

    def done(err, msg):
        if err:
            failed.append(str(err))
        else:
            acked.append(msg.value())

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": 30000})
    for v in values:
        p.produce(topic, value=v, on_delivery=done)
        p.poll(0)
    p.flush(60)
    assert not failed, failed[:5]
    return acked


def read_all(bootstrap: str, topic: str, partitions: int, expect: int, timeout_s: float = 60) -> List[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: List[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expect and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    return got


def test_acks_all_is_replicated_and_survives_sigkill_of_the_leader(cluster: Cluster):
    create(cluster.admin(), "replicated", partitions=3, rf=3)
    values = [f"v{i}".encode() for i in range(3000)]
    acked = produce_acks_all(cluster.bootstrap(), "replicated", values)
    assert sorted(acked) == sorted(values)
    # Every replica has every record: the followers' logs reach the leader's end.
    md = cluster.metadata(1)
    leader0 = md.topics["replicated"].partitions[0].leader
    cluster.nodes[leader0].kill()
    survivors = [i for i in cluster.nodes if i != leader0]
    cluster.wait_brokers(2, via=survivors[0], timeout_s=SESSION_MS / 1000 + 20)
    deadline = time.monotonic() + 30
    while True:
        md = cluster.metadata(survivors[0])
        leaders = [p.leader for p in md.topics["replicated"].partitions.values()]
        if all(l in survivors for l in leaders):
            break
        assert time.monotonic() < deadline, f"leaders {leaders} after the kill of {leader0}\n{cluster.log_tails()}"
        time.sleep(0.2)
    got = read_all(cluster.bootstrap(exclude=leader0), "replicated", 3, len(values))
    lost = set(values) - set(got)
    assert not lost, f"{len(lost)} acknowledged records lost after SIGKILL of leader {leader0}\n{cluster.log_tails()}"
    # Produce on: the new leaders take acks=all writes with the two replicas left in the ISR.
    more = [f"w{i}".encode() for i in range(500)]
    assert sorted(produce_acks_all(cluster.bootstrap(exclude=leader0), "replicated", more)) == sorted(more)
    # The killed broker comes back, catches up as a follower and rejoins every ISR (AlterPartition).
    cluster.nodes[leader0].start()
    cluster.wait_brokers(3, timeout_s=30)
    wait_isr(cluster, "replicated", lambda isr: leader0 in isr)
    got = read_all(cluster.bootstrap(), "replicated", 3, len(values) + len(more))
    assert set(got) == set(values) | set(more)


def wait_isr(cluster: Cluster, topic: str, ok, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        md = cluster.admin().list_topics(timeout=10)
        # The broker that answered may not have the topic in its image yet.
        isrs = {p.id: sorted(p.isrs) for p in md.topics[topic].partitions.values()} if topic in md.topics else {}
        if isrs and all(ok(isr) for isr in isrs.values()):
            return
        assert time.monotonic() < deadline, f"ISRs {isrs}\n{cluster.log_tails()}"
        time.sleep(0.2)


def test_a_paused_follower_leaves_the_isr_and_rejoins_it(cluster: Cluster):
    """A follower that stops fetching leaves the ISR after replica.lag.time.max.ms, long before its session ends, so
    acks=all produces go on; once it fetches again it catches up and rejoins."""
    for node in cluster.nodes.values():
        assert node.proc is not None
    create(cluster.admin(), "lagging", partitions=1, rf=3)
    wait_isr(cluster, "lagging", lambda isr: len(isr) == 3)
    md = cluster.admin().list_topics(timeout=10)
    leader = md.topics["lagging"].partitions[0].leader
    follower = next(i for i in cluster.nodes if i != leader)
    os.kill(cluster.nodes[follower].proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        acked = produce_acks_all(cluster.bootstrap(exclude=follower), "lagging",
                                 [f"p{i}".encode() for i in range(200)])
        took = time.monotonic() - started
        assert len(acked) == 200
        md = cluster.admin(node_id=leader).list_topics(timeout=10)
        assert follower not in md.topics["lagging"].partitions[0].isrs
        assert sorted(md.brokers) == sorted(cluster.nodes), "out of the ISR by lag, not fenced"
        print(f"acks=all resumed {took:.2f} s after a follower paused (replica.lag.time.max.ms={LAG_MAX_MS})")
    finally:
        os.kill(cluster.nodes[follower].proc.pid, signal.SIGCONT)
    wait_isr(cluster, "lagging", lambda isr: follower in isr)


def test_group_commits_survive_the_coordinator_leaving(cluster: Cluster):
    """`__consumer_offsets` is replicated (RF 3); a commit is answered once it is on every in-sync replica, so
    SIGKILL of the coordinator loses none: the group's new coordinator (the new leader of its partition) loads
    it and a new member resumes from the committed offsets."""
    create(cluster.admin(), "consumed", partitions=3, rf=3)
    values = [f"c{i}".encode() for i in range(300)]
    produce_acks_all(cluster.bootstrap(), "consumed", values)
    conf = {"bootstrap.servers": cluster.bootstrap(), "group.id": "failover", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000}
    c = Consumer(conf)
    c.subscribe(["consumed"])
    first: List[bytes] = []
    deadline = time.monotonic() + 60
    while len(first) < 150 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            first.append(m.value())
            if len(first) == 150:
                c.commit(message=m, asynchronous=False)
    committed = c.committed([TopicPartition("consumed", p) for p in range(3)], timeout=30)
    c.close()
    # The coordinator: the leader of the group's __consumer_offsets partition (Java's hashCode % 50).
    md = cluster.admin().list_topics(timeout=10)
    h = 0
    for ch in "failover":
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= (1 << 31) else h
    coordinator = md.topics["__consumer_offsets"].partitions[abs(h) % 50].leader
    assert sorted(md.topics["__consumer_offsets"].partitions[0].replicas) == [1, 2, 3], "RF 3"
    cluster.nodes[coordinator].kill()
    c = Consumer({**conf, "bootstrap.servers": cluster.bootstrap(exclude=coordinator)})
    after = c.committed([TopicPartition("consumed", p) for p in range(3)], timeout=60)
    assert {(tp.partition, tp.offset) for tp in after} == {(tp.partition, tp.offset) for tp in committed}, \
        f"committed offsets changed across the coordinator's SIGKILL\n{cluster.log_tails()}"
    c.subscribe(["consumed"])
    rest: List[bytes] = []
    deadline = time.monotonic() + 60
    while len(set(first) | set(rest)) < len(values) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            rest.append(m.value())
    c.close()
    assert set(first) | set(rest) == set(values)


def test_delete_records_moves_every_replica_log_start(cluster: Cluster):
    """DeleteRecords answers once the in-sync followers moved their log start too (Kafka's DelayedDeleteRecords);
    after the leader dies, the new leader's log starts there as well."""
    create(cluster.admin(), "trimmed", partitions=1, rf=3)
    produce_acks_all(cluster.bootstrap(), "trimmed", [f"t{i}".encode() for i in range(100)])
    # kafka-python's admin (confluent-kafka 2.16's delete_records did not complete against a cluster here,
    # while it does against one node: not investigated yet).
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
    result = kp.delete_records({KTopicPartition("trimmed", 0): 60}, timeout_ms=30000)
    kp.close()
    assert result[KTopicPartition("trimmed", 0)]["low_watermark"] == 60, result
    assert result[KTopicPartition("trimmed", 0)]["error_code"] == 0, result
    leader = cluster.admin().list_topics(timeout=10).topics["trimmed"].partitions[0].leader
    cluster.nodes[leader].kill()
    survivors = [i for i in cluster.nodes if i != leader]
    deadline = time.monotonic() + SESSION_MS / 1000 + 30
    while cluster.metadata(survivors[0]).topics["trimmed"].partitions[0].leader not in survivors:
        assert time.monotonic() < deadline, cluster.log_tails()
        time.sleep(0.5)
    c = Consumer({"bootstrap.servers": cluster.bootstrap(exclude=leader), "group.id": "unused",
                  "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition("trimmed", 0), timeout=10)
    c.close()
    assert (low, high) == (60, 100), (low, high)


def test_a_follower_behind_the_leaders_log_start_restarts_there(cluster: Cluster):
    """A follower that was down while the leader deleted records past its end gets OFFSET_OUT_OF_RANGE, asks the
    leader for its range (ListOffsets), restarts its log at the leader's start and rejoins the ISR."""
    create(cluster.admin(), "skipped", partitions=1, rf=3)
    wait_isr(cluster, "skipped", lambda isr: len(isr) == 3)
    leader = cluster.admin().list_topics(timeout=10).topics["skipped"].partitions[0].leader
    follower = next(i for i in cluster.nodes if i != leader)
    cluster.nodes[follower].kill()
    produce_acks_all(cluster.bootstrap(exclude=follower), "skipped", [f"s{i}".encode() for i in range(100)])
    wait_isr(cluster, "skipped", lambda isr: follower not in isr)
    # Until the killed follower is fenced, Metadata still lists it and kafka-python may pick it: retry.
    deadline = time.monotonic() + 60
    while True:
        try:
            kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap(exclude=follower))
            result = kp.delete_records({KTopicPartition("skipped", 0): 80}, timeout_ms=30000)
            kp.close()
            break
        except KafkaError:
            assert time.monotonic() < deadline, cluster.log_tails()
            time.sleep(0.5)
    assert result[KTopicPartition("skipped", 0)]["error_code"] == 0, result
    cluster.nodes[follower].start()
    # The restarted node's own Metadata may list it in the ISR (its image from before the kill) until it catches
    # up: wait for the log line as well.
    wait_isr(cluster, "skipped", lambda isr: follower in isr)
    deadline = time.monotonic() + 30
    while "restarting it at the leader's start" not in cluster.nodes[follower].log_path.read_text():
        assert time.monotonic() < deadline, cluster.log_tails()
        time.sleep(0.2)
    wait_isr(cluster, "skipped", lambda isr: follower in isr)


def test_kafka_python_reassigns_a_partition_onto_another_broker_without_losing_records(cluster: Cluster):
    """kafka-python's alter_partition_reassignments moves a replica of an RF-2 partition to the third broker: the
    new replica catches up, joins the ISR, the old one is dropped (its log deleted), and every acknowledged record
    is read back, from the new replica as leader too. Kafka's errors for a cancel with nothing in progress and an
    unknown topic."""
    from kafka.errors import NoReassignmentInProgressError, UnknownTopicOrPartitionError

    create(cluster.admin(), "moving", partitions=1, rf=2)
    values = [f"m{i}".encode() for i in range(2000)]
    assert sorted(produce_acks_all(cluster.bootstrap(), "moving", values)) == sorted(values)
    old = list(cluster.metadata(1).topics["moving"].partitions[0].replicas)
    new = next(i for i in cluster.nodes if i not in old)
    target = [new, old[0]]
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
    try:
        tp = KTopicPartition("moving", 0)
        assert kp.alter_partition_reassignments({tp: target}) == {tp: None}
        deadline = time.monotonic() + 60
        while True:
            md = cluster.metadata(new)
            p = md.topics["moving"].partitions[0] if "moving" in md.topics else None
            if p is not None and list(p.replicas) == target and sorted(p.isrs) == sorted(target) \
                    and not kp.list_partition_reassignments():
                break
            assert time.monotonic() < deadline, f"{p and (p.replicas, p.isrs)}\n{cluster.log_tails()}"
            time.sleep(0.2)
        # The dropped replica's log is deleted.
        gone = old[1]
        deadline = time.monotonic() + 30
        while (cluster.nodes[gone].data_dir / "moving-0").exists():
            assert time.monotonic() < deadline, cluster.log_tails()
            time.sleep(0.2)
        # Make the new replica the leader, and read everything back.
        assert kp.alter_partition_reassignments({tp: [new]}) == {tp: None}
        deadline = time.monotonic() + 60
        while cluster.metadata(new).topics["moving"].partitions[0].leader != new:
            assert time.monotonic() < deadline, cluster.log_tails()
            time.sleep(0.2)
        assert sorted(read_all(cluster.bootstrap(), "moving", 1, len(values))) == sorted(values)
        result = kp.alter_partition_reassignments({tp: None, KTopicPartition("nope", 0): [new]})
        assert result == {tp: NoReassignmentInProgressError, KTopicPartition("nope", 0): UnknownTopicOrPartitionError}
        # v1 (KIP-860), encoded by kafka-python: without allow_replication_factor_change, a target with another
        # replication factor than the partition's (1 now) is INVALID_REPLICATION_FACTOR; the same factor is taken.
        from kafka.protocol.admin.topics import AlterPartitionReassignmentsRequest as Alter

        def alter_v1(replicas):
            request = Alter(timeout_ms=30000, allow_replication_factor_change=False, topics=[
                Alter.ReassignableTopic(name="moving", partitions=[
                    Alter.ReassignableTopic.ReassignablePartition(partition_index=0, replicas=replicas)])])
            response = kp._manager.run(kp._send_request_to_controller, request)
            assert response.allow_replication_factor_change is False
            p = response.responses[0].partitions[0]
            return p.error_code, p.error_message

        assert alter_v1([new, old[0]]) == (38, "The replication factor is changed from 1 to 2")
        assert alter_v1([old[0]]) == (0, None)
    finally:
        kp.close()


def test_kafka_python_throttles_a_reassignment_until_the_throttle_is_removed(cluster: Cluster):
    """KIP-73 replication throttles set with kafka-python's alter_configs: the broker rates
    (`leader.replication.throttled.rate`, `follower.replication.throttled.rate`) and the topic's throttled replicas.
    A new replica of a 4 MB partition may fetch about ten seconds' worth at once (Kafka's rate spans at least ten
    1-second samples; one fetch brings up to `replica.fetch.max.bytes`, 1 MB), then waits, so the reassignment is
    still running seconds later with most of the log not copied; once the throttle is deleted it completes.
    Unthrottled, the same move takes well under a second on this machine."""
    from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType

    create(cluster.admin(), "slow", partitions=1, rf=1)
    values = [f"{i:06d}".encode() * 170 for i in range(4000)]  # ~1 kB each
    assert len(produce_acks_all(cluster.bootstrap(), "slow", values)) == len(values)
    [leader] = list(cluster.metadata(1).topics["slow"].partitions[0].replicas)
    new = next(i for i in cluster.nodes if i != leader)
    rate = "50000"
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
    try:
        throttles = [
            ConfigResource(ConfigResourceType.BROKER, str(leader), {"leader.replication.throttled.rate": rate}),
            ConfigResource(ConfigResourceType.BROKER, str(new), {"follower.replication.throttled.rate": rate}),
            ConfigResource(ConfigResourceType.TOPIC, "slow", {
                "leader.replication.throttled.replicas": f"0:{leader}",
                "follower.replication.throttled.replicas": f"0:{new}",
            }),
        ]
        for resource in throttles:
            result = kp.alter_configs([resource])
            assert all(e is None or getattr(e, "errno", 0) == 0 for e in flatten_config_errors(result)), result
        described = kp.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(leader))])
        assert described["broker"][str(leader)]["leader.replication.throttled.rate"]["value"] == rate

        tp = KTopicPartition("slow", 0)
        started = time.monotonic()
        assert kp.alter_partition_reassignments({tp: [leader, new]}) == {tp: None}
        time.sleep(5)
        assert kp.list_partition_reassignments(), "the throttled move finished within 5 s"
        data = cluster.nodes[new].data_dir / "slow-0"
        copied = sum(f.stat().st_size for f in data.glob("*.log"))
        print(f"{copied} bytes of 4 MB copied in 5 s at {rate} B/s")
        assert copied < 3_000_000, f"{copied} bytes copied in 5 s at {rate} B/s"

        kp.alter_configs([
            ConfigResource(ConfigResourceType.BROKER, str(leader),
                           {"leader.replication.throttled.rate": (AlterConfigOp.DELETE, None)}),
            ConfigResource(ConfigResourceType.BROKER, str(new),
                           {"follower.replication.throttled.rate": (AlterConfigOp.DELETE, None)}),
        ])
        deadline = time.monotonic() + 30
        while kp.list_partition_reassignments():
            assert time.monotonic() < deadline, cluster.log_tails()
            time.sleep(0.2)
        print(f"throttled move completed {time.monotonic() - started:.1f} s after it started")
        assert sorted(cluster.metadata(new).topics["slow"].partitions[0].isrs) == sorted([leader, new])
    finally:
        kp.close()
