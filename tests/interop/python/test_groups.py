"""Consumer groups against sluice with third-party clients: confluent-kafka (librdkafka) and kafka-python.

The group members run as subprocesses (this file is also the worker: `python test_groups.py worker ...`) so a
member can be killed with SIGKILL. A worker prints one JSON line per event on stdout:
`{"ev": "rec", "p": partition, "o": offset}` when it receives a record, `{"ev": "commit", "p", "o"}` after a
synchronous commit of offset `o` (the next offset to read) succeeded, and `{"ev": "assign"|"revoke", "ps": [...]}`
from the rebalance callbacks. Records are committed one by one, synchronously, before the next poll.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

from helpers import create_topic

HERE = Path(__file__).resolve().parent
PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
ASSIGNORS = ["range", "roundrobin", "cooperative-sticky"]


# ---------------------------------------------------------------------------------------------------------------
# The worker (a group member in its own process)
# ---------------------------------------------------------------------------------------------------------------


def worker_main(argv: List[str]) -> None:
    from confluent_kafka import Consumer, KafkaException

    bootstrap, group, topic, assignor, instance = argv[:5]
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))

    def emit(**event) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": assignor,
    }
    if instance != "-":
        conf["group.instance.id"] = instance
    consumer = Consumer(conf)
    consumer.subscribe(
        [topic],
        on_assign=lambda c, ps: emit(ev="assign", ps=sorted(p.partition for p in ps)),
        on_revoke=lambda c, ps: emit(ev="revoke", ps=sorted(p.partition for p in ps)),
    )
    while running[0]:
        m = consumer.poll(0.2)
        if m is None or m.error():
            continue
        emit(ev="rec", p=m.partition(), o=m.offset())
        try:
            consumer.commit(message=m, asynchronous=False)
            emit(ev="commit", p=m.partition(), o=m.offset() + 1)
        except KafkaException as e:
            emit(ev="commit_error", p=m.partition(), o=m.offset() + 1, err=str(e))
    consumer.close()
    emit(ev="closed")


# ---------------------------------------------------------------------------------------------------------------
# Test-side helpers
# ---------------------------------------------------------------------------------------------------------------


class Worker:
    """A group member subprocess and the events it printed (read by a thread)."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, assignor: str, instance: str = "-"):
        self.name = name
        self.args = [bootstrap, group, topic, assignor, instance]
        self.events: List[dict] = []
        self.lock = threading.Lock()
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Worker":
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "test_groups.py"), "worker", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        proc = self.proc
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["t"] = time.monotonic()
            with self.lock:
                self.events.append(ev)

    def snapshot(self, kind: Optional[str] = None) -> List[dict]:
        with self.lock:
            return [e for e in self.events if kind is None or e["ev"] == kind]

    def records(self) -> List[Tuple[int, int]]:
        return [(e["p"], e["o"]) for e in self.snapshot("rec")]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % PARTITIONS)
    assert p.flush(30) == 0


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def expected_offsets(total: int) -> Set[Tuple[int, int]]:
    """(partition, offset) of records 0..total produced round-robin over the partitions."""
    return {(i % PARTITIONS, i // PARTITIONS) for i in range(total)}


def union(workers: List[Worker]) -> Counter:
    c: Counter = Counter()
    for w in workers:
        c.update(w.records())
    return c


def list_groups(admin) -> list:
    """ListGroups through confluent-kafka, retrying COORDINATOR_LOAD_IN_PROGRESS (groups still loading after a
    broker restart), which librdkafka reports in `errors` rather than retrying."""
    deadline = time.monotonic() + 30
    while True:
        result = admin.list_consumer_groups().result(timeout=30)
        if not result.errors or time.monotonic() > deadline:
            assert not result.errors, result.errors
            return result.valid
        time.sleep(0.2)


@pytest.fixture
def workers():
    made: List[Worker] = []
    yield made
    for w in made:
        w.kill()


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_three_consumers_consume_every_record_exactly_once(broker, topic_name, workers, assignor):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    produce(broker.bootstrap, topic_name, 0, 300)
    group = f"g-{topic_name}"
    for i in range(3):
        workers.append(Worker(f"w{i}", broker.bootstrap, group, topic_name, assignor).start())
    # Every member gets partitions (the initial rebalance delay gathers all three into one generation).
    wait_for(lambda: all(w.snapshot("assign") and w.snapshot("assign")[-1]["ps"] for w in workers), 60,
             "all three members assigned")
    produce(broker.bootstrap, topic_name, 300, 300)
    want = expected_offsets(600)
    wait_for(lambda: set(union(workers)) >= want, 60, "all 600 records consumed")
    # The assignments partition the topic: every partition owned by exactly one member (cooperative-sticky
    # reports increments, so replay them).
    owned: List[int] = []
    for w in workers:
        mine: Set[int] = set()
        for e in w.snapshot():
            if e["ev"] == "assign":
                mine = (mine | set(e["ps"])) if assignor == "cooperative-sticky" else set(e["ps"])
            elif e["ev"] == "revoke":
                mine -= set(e["ps"])
        assert mine, f"{w.name} owns no partition"
        owned += sorted(mine)
    assert sorted(owned) == list(range(PARTITIONS))
    for w in workers:
        w.stop()
    got = union(workers)
    assert set(got) == want
    dupes = {k: n for k, n in got.items() if n > 1}
    assert not dupes, f"records consumed more than once: {sorted(dupes)[:10]}"
    for w in workers:
        assert not w.snapshot("commit_error"), w.snapshot("commit_error")


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_sigkilled_member_rebalances_within_session_timeout_and_nothing_is_lost(
    broker, topic_name, workers, assignor
):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    group = f"g-{topic_name}"
    for i in range(3):
        workers.append(Worker(f"w{i}", broker.bootstrap, group, topic_name, assignor).start())
    wait_for(lambda: all(w.snapshot("assign") and w.snapshot("assign")[-1]["ps"] for w in workers), 60,
             "all three members assigned")
    produce(broker.bootstrap, topic_name, 0, 600)
    wait_for(lambda: set(union(workers)) >= expected_offsets(600), 60, "the first 600 records consumed")
    victim = workers[2]
    victim_partitions = set(victim.snapshot("assign")[-1]["ps"])
    assert victim_partitions
    last_commit: Dict[int, int] = {}
    for e in victim.snapshot("commit"):
        last_commit[e["p"]] = max(last_commit.get(e["p"], 0), e["o"])
    victim.kill()
    killed_at = time.monotonic()
    produce(broker.bootstrap, topic_name, 600, 600)
    survivors = workers[:2]
    want = expected_offsets(1200)
    wait_for(lambda: set(union(workers)) >= want, 60, "every record consumed after the kill")
    # The survivors took over the victim's partitions within the session timeout (plus a heartbeat and the
    # rejoin), and continued from the victim's committed offsets.
    first_takeover: Dict[int, dict] = {}
    for w in survivors:
        for e in w.snapshot("rec"):
            if e["p"] in victim_partitions and e["t"] > killed_at:
                if e["p"] not in first_takeover or e["t"] < first_takeover[e["p"]]["t"]:
                    first_takeover[e["p"]] = e
    assert set(first_takeover) == victim_partitions
    slowest = max(e["t"] for e in first_takeover.values()) - killed_at
    assert slowest < SESSION_TIMEOUT_MS / 1000 + 5, f"took over after {slowest:.1f}s"
    for p, e in first_takeover.items():
        assert e["o"] == last_commit.get(p, 0), f"partition {p}: resumed at {e['o']}, committed {last_commit.get(p)}"
    for w in survivors:
        w.stop()
    got = union(workers)
    assert set(got) == want, "records lost"
    # Only records the victim read after its last commit may be read twice.
    dupes = {k for k, n in got.items() if n > 1}
    assert all(p in victim_partitions for p, _ in dupes), sorted(dupes)[:10]


def test_static_member_restart_within_session_timeout_does_not_rebalance(broker, topic_name, workers):
    """KIP-345: a static member (group.instance.id) that restarts within its session timeout gets its old
    assignment back and the other members see no rebalance."""
    from confluent_kafka.admin import AdminClient

    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    group = f"g-{topic_name}"
    leader = Worker("w0", broker.bootstrap, group, topic_name, "range", "static-0").start()
    workers.append(leader)
    wait_for(lambda: bool(leader.snapshot("assign")), 60, "the first member assigned")
    member = Worker("w1", broker.bootstrap, group, topic_name, "range", "static-1").start()
    workers.append(member)
    wait_for(lambda: bool(member.snapshot("assign")) and len(leader.snapshot("assign")) >= 2, 60,
             "the second member assigned")
    produce(broker.bootstrap, topic_name, 0, 120)
    wait_for(lambda: set(union(workers)) >= expected_offsets(120), 60, "120 records consumed")
    before = member.snapshot("assign")[-1]["ps"]
    leader_events = len(leader.snapshot("assign")) + len(leader.snapshot("revoke"))
    member.kill()
    restarted = Worker("w1b", broker.bootstrap, group, topic_name, "range", "static-1").start()
    workers.append(restarted)
    wait_for(lambda: bool(restarted.snapshot("assign")), 30, "the restarted member assigned")
    assert restarted.snapshot("assign")[-1]["ps"] == before
    produce(broker.bootstrap, topic_name, 120, 120)
    wait_for(lambda: set(union(workers)) >= expected_offsets(240), 60, "240 records consumed")
    assert len(leader.snapshot("assign")) + len(leader.snapshot("revoke")) == leader_events, \
        "the other member saw a rebalance"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert desc.state.name == "STABLE"
    assert sorted(m.group_instance_id for m in desc.members) == ["static-0", "static-1"]


def test_kafka_python_group_consumer_commits_and_resumes(broker, topic_name):
    from kafka import KafkaConsumer, TopicPartition

    create_topic(broker.bootstrap, topic_name, 3)
    produce_n = 90
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(produce_n):
        p.produce(topic_name, value=b"v%d" % i, partition=i % 3)
    assert p.flush(30) == 0
    group = f"kp-{topic_name}"

    def consumer():
        return KafkaConsumer(
            topic_name,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=15000,
        )

    c = consumer()
    got = []
    for m in c:
        got.append((m.partition, m.offset))
        if len(got) == 60:
            break
    c.commit()
    committed = {tp: c.committed(TopicPartition(topic_name, tp)) for tp in range(3)}
    assert sum(committed.values()) == 60
    c.close()
    # A new member of the same group resumes from the committed offsets.
    c = consumer()
    rest = []
    for m in c:
        rest.append((m.partition, m.offset))
        if len(rest) == produce_n - 60:
            break
    c.close()
    assert sorted(got + rest) == sorted((i % 3, i // 3) for i in range(produce_n))


def test_groups_and_offsets_through_two_admin_clients_and_restart(broker, topic_name):
    """ListGroups, DescribeGroups, OffsetFetch, DeleteGroups and OffsetDelete via confluent-kafka's and
    kafka-python's admin clients; committed offsets and groups survive a SIGKILL restart."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition, KafkaException
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition

    create_topic(broker.bootstrap, topic_name, 2)
    # A standalone consumer (assign + commit, no membership) and a group member.
    standalone = f"solo-{topic_name}"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": standalone})
    c.commit(offsets=[TopicPartition(topic_name, 0, 5), TopicPartition(topic_name, 1, 7, "meta")],
             asynchronous=False)
    c.close()
    member_group = f"member-{topic_name}"
    m = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": member_group, "session.timeout.ms": 6000})
    m.subscribe([topic_name])
    deadline = time.monotonic() + 30
    while not m.assignment() and time.monotonic() < deadline:
        m.poll(0.2)
    assert m.assignment()

    ck = AdminClient({"bootstrap.servers": broker.bootstrap})
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    listed = {g.group_id: g.state.name for g in list_groups(ck)}
    assert listed.get(standalone) == "EMPTY" and listed.get(member_group) == "STABLE", listed
    def gid(g):
        return g["group_id"] if isinstance(g, dict) else getattr(g, "group_id", None) or g[0]

    kp_listed = {gid(g) for g in kp.list_groups()}
    assert {standalone, member_group} <= kp_listed
    # KIP-518 state filter.
    assert {gid(g) for g in kp.list_groups(states_filter=["Empty"])} & {standalone, member_group} == {standalone}
    d = ck.describe_consumer_groups([member_group])[member_group].result()
    assert d.state.name == "STABLE" and d.partition_assignor == "range" and len(d.members) == 1
    assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1]
    kd = kp.describe_groups([member_group])[member_group]
    assert kd["group_state"] == "Stable" and len(kd["members"]) == 1, kd
    # Offsets through both clients.
    res = ck.list_consumer_group_offsets([ConsumerGroupTopicPartitions(standalone)])[standalone].result()
    assert {(tp.partition, tp.offset, tp.metadata or "") for tp in res.topic_partitions} == {(0, 5, ""), (1, 7, "meta")}
    # Two groups in one OffsetFetch (v8+, KIP-709).
    koffs = kp.list_group_offsets({standalone: None, member_group: None})
    assert {tp.partition: o.offset for tp, o in koffs[standalone].items()} == {0: 5, 1: 7}
    assert koffs[member_group] == {}
    # Deleting a group with a member is refused.
    with pytest.raises(KafkaException) as e:
        ck.delete_consumer_groups([member_group])[member_group].result()
    assert "NON_EMPTY_GROUP" in str(e.value)
    m.close()

    # SIGKILL the broker: offsets and groups come back from __consumer_offsets.
    broker.restart(kill=True)
    ck = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ck.list_consumer_group_offsets([ConsumerGroupTopicPartitions(standalone)])[standalone].result()
    assert {(tp.partition, tp.offset, tp.metadata or "") for tp in res.topic_partitions} == {(0, 5, ""), (1, 7, "meta")}
    listed = {g.group_id: g.state.name for g in list_groups(ck)}
    assert listed.get(standalone) == "EMPTY" and listed.get(member_group) == "EMPTY", listed
    # Delete the standalone group's offsets for partition 1, then the whole member group.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    deleted = kp.delete_groups([member_group])
    errors = list(deleted.values()) if isinstance(deleted, dict) else [x[-1] for x in deleted]
    assert errors and all(getattr(e, "errno", 0) == 0 for e in errors), deleted
    # OffsetDelete (KIP-496) through kafka-python.
    out = kp.delete_group_offsets(standalone, [KTopicPartition(topic_name, 1)])
    assert all(getattr(e, "errno", 0) == 0 for e in out.values()), out
    # A clean restart keeps the deletions.
    broker.restart()
    ck = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ck.list_consumer_group_offsets([ConsumerGroupTopicPartitions(standalone)])[standalone].result()
    assert {(tp.partition, tp.offset) for tp in res.topic_partitions} == {(0, 5)}
    listed = {g.group_id for g in list_groups(ck)}
    assert member_group not in listed and standalone in listed
    with pytest.raises(KafkaException) as e:
        ck.delete_consumer_groups([member_group])[member_group].result()
    assert "GROUP_ID_NOT_FOUND" in str(e.value)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker_main(sys.argv[2:])
