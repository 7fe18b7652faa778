"""kcat (Debian's kcat, librdkafka 2.0.2) against Sluice: metadata (-L), produce (-P), consume (-C -e),
offsets for times (-Q)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import List

import pytest
from confluent_kafka import Producer

from helpers import create_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (scripts/install-test-deps.sh installs it)")


def kcat(broker, *args: str, stdin: bytes = b"", timeout_s: float = 60) -> str:
    proc = subprocess.run(
        [KCAT, "-b", broker.bootstrap, "-X", "broker.address.family=v4", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout.decode()


def test_metadata_list(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 3)
    md = json.loads(kcat(broker, "-L", "-J"))
    brokers = md["brokers"]
    assert len(brokers) == 1
    assert brokers[0]["name"] == f"127.0.0.1:{broker.port}"
    [topic] = [t for t in md["topics"] if t["topic"] == topic_name]
    assert "error" not in topic or not topic["error"]
    assert sorted(p["partition"] for p in topic["partitions"]) == [0, 1, 2]
    for p in topic["partitions"]:
        assert p["leader"] == brokers[0]["id"]
        assert [r["id"] for r in p["replicas"]] == [brokers[0]["id"]]
        assert [r["id"] for r in p["isrs"]] == [brokers[0]["id"]]


def test_produce_then_consume(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    lines: List[str] = [f"key{i}:value number {i}" for i in range(500)]
    kcat(broker, "-P", "-t", topic_name, "-p", "1", "-K", ":", "-H", "src=kcat", "-z", "gzip",
         stdin=("\n".join(lines) + "\n").encode())

    out = kcat(broker, "-C", "-t", topic_name, "-p", "1", "-o", "beginning", "-e", "-f", "%k|%s|%o|%h\n")
    got = out.splitlines()
    assert got == [f"key{i}|value number {i}|{i}|src=kcat" for i in range(500)]

    # Partition 0 stays empty: -e exits at once with nothing.
    assert kcat(broker, "-C", "-t", topic_name, "-p", "0", "-o", "beginning", "-e", "-f", "%s\n") == ""

    # Consume from an absolute offset and a relative-to-end offset.
    assert kcat(broker, "-C", "-t", topic_name, "-p", "1", "-o", "495", "-e", "-f", "%o\n").split() == [
        str(i) for i in range(495, 500)
    ]
    assert kcat(broker, "-C", "-t", topic_name, "-p", "1", "-o", "-2", "-e", "-f", "%o\n").split() == ["498", "499"]


def test_offsets_for_times(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    base = 1_763_000_000_000
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    # Ten records one second apart, each in its own batch so the time index has an entry for each.
    for i in range(10):
        producer.produce(topic_name, value=b"t%d" % i, partition=0, timestamp=base + 1000 * i)
        producer.flush(10)
    assert len(producer) == 0

    def query(ts: int) -> int:
        out = kcat(broker, "-Q", "-t", f"{topic_name}:0:{ts}")
        # "<topic> [0] offset N"
        line = [ln for ln in out.splitlines() if ln.startswith(topic_name)]
        assert len(line) == 1, out
        return int(line[0].rsplit(" ", 1)[1])

    assert query(base) == 0
    assert query(base + 1) == 1  # first record with timestamp >= target
    assert query(base + 5500) == 6
    assert query(base + 9000) == 9
    assert query(base + 9001) == -1  # past the last timestamp: no offset (Kafka answers -1)
    assert query(-2) == 0  # earliest
    assert query(-1) == 10  # latest


def test_produce_auto_creates_topic(broker, topic_name):
    """auto.create.topics.enable defaults to true: producing to an unknown topic creates it with
    num.partitions (default 1) partitions."""
    kcat(broker, "-P", "-t", topic_name, stdin=b"one\ntwo\nthree\n")
    md = json.loads(kcat(broker, "-L", "-J", "-t", topic_name))
    [topic] = md["topics"]
    assert topic["topic"] == topic_name
    assert [p["partition"] for p in topic["partitions"]] == [0]
    out = kcat(broker, "-C", "-t", topic_name, "-p", "0", "-o", "beginning", "-e", "-f", "%o:%s\n")
    assert out.splitlines() == ["0:one", "1:two", "2:three"]
