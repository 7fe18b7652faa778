#!/usr/bin/env python3
"""Consumer-group benchmark (not run in CI): rebalance time and offset commits per second.

Starts one `sluice server` (SLUICE_BIN, default target/release/sluice) on a free loopback port with a temporary
log dir and `group.initial.rebalance.delay.ms=0`, then measures with librdkafka (confluent-kafka, from the
.venv that scripts/install-test-deps.sh creates):

1. 10 consumers of one group subscribe at once to a 100-partition topic: seconds until every member holds its
   partitions and together they hold all 100, each exactly once (range assignor).
2. an 11th member joins that stable group: seconds until all 11 are reassigned and still cover the topic.
3. synchronous OffsetCommit of one partition from one consumer: commits/s.
4. synchronous OffsetCommit of 100 partitions per request: commits/s and offsets/s.

Usage: .venv/bin/python scripts/bench-groups.py
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE_BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))
PARTITIONS = 100
MEMBERS = 10
COMMITS = 3000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port}")


class Member:
    """One group member polling on its own thread and recording its current assignment."""

    def __init__(self, bootstrap, group, topic):
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
            "enable.auto.commit": False,
        })
        self.assignment = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_assign(self, _consumer, partitions):
        with self.lock:
            self.assignment = {p.partition for p in partitions}

    def _on_revoke(self, _consumer, _partitions):
        with self.lock:
            self.assignment = set()

    def _run(self):
        while not self.stop.is_set():
            self.consumer.poll(0.05)

    def current(self):
        with self.lock:
            return set(self.assignment)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.consumer.close()


def wait_balanced(members, timeout_s=120):
    """Seconds until every member holds partitions and together they hold each partition exactly once."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        held = [m.current() for m in members]
        if all(held) and sum(len(h) for h in held) == PARTITIONS and set().union(*held) == set(range(PARTITIONS)):
            return time.monotonic() - start
        time.sleep(0.01)
    raise RuntimeError("group did not settle within %d s" % timeout_s)


def main():
    port = free_port()
    data = tempfile.mkdtemp(prefix="sluice-bench-groups-")
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen(
        [SLUICE_BIN, "server", "--override", f"listeners=PLAINTEXT://{bootstrap}", "--override", f"log.dirs={data}",
         "--override", "group.initial.rebalance.delay.ms=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    members = []
    try:
        wait_for_port(port)
        topic = "bench-groups"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        del admin  # its background threads would keep reconnecting after the broker stops

        members = [Member(bootstrap, "bench-rebalance", topic) for _ in range(MEMBERS)]
        join_s = wait_balanced(members)
        members.append(Member(bootstrap, "bench-rebalance", topic))
        extra_s = wait_balanced(members)

        committer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-commits",
                              "enable.auto.commit": False})
        one = [TopicPartition(topic, 0, 0)]
        committer.commit(offsets=one, asynchronous=False)  # finds the coordinator, creates the offsets topic
        start = time.monotonic()
        for i in range(COMMITS):
            committer.commit(offsets=[TopicPartition(topic, 0, i + 1)], asynchronous=False)
        single = COMMITS / (time.monotonic() - start)
        start = time.monotonic()
        batches = COMMITS // 3
        for i in range(batches):
            committer.commit(offsets=[TopicPartition(topic, p, i + 1) for p in range(PARTITIONS)], asynchronous=False)
        multi = batches / (time.monotonic() - start)
        committed = committer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        assert all(tp.offset == batches for tp in committed), "commits did not land"
        committer.close()

        print(f"broker {SLUICE_BIN}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        print()
        print("| measure | result |")
        print("|---|---|")
        print(f"| {MEMBERS} members subscribe at once to a {PARTITIONS}-partition topic, until all are assigned | {join_s:.2f} s |")
        print(f"| an 11th member joins the stable group, until all 11 are reassigned | {extra_s:.2f} s |")
        print(f"| synchronous OffsetCommit of 1 partition, one consumer | {single:,.0f} commits/s |")
        print(f"| synchronous OffsetCommit of {PARTITIONS} partitions per request | {multi:,.0f} commits/s = {multi * PARTITIONS:,.0f} offsets/s |")
    finally:
        for m in members:
            m.close()
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
