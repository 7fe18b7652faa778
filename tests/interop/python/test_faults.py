"""Fault injection against a replicated 3-node cluster with real clients (the replication issue's fault tests).

The first test is a short run of `fault_runner.py` (see its doc for the cluster, the load, each fault kind and
each check): every fault kind at least once (the first faults of a schedule are a seeded permutation of the
kinds), healed one by one, under idempotent acks=all confluent-kafka producers; then every partition read back
from offset 0 and the replicas' log files compared. Checked: records lost = 0, duplicates = 0, no offset
acknowledged twice, every record at the offset it was acknowledged at, each producer's order kept per partition
(KIP-98), replicas agree, the cluster heals after every fault. The per-fault table (longest gap between
acknowledgements) is printed (`-s`).

The seed is random unless SLUICE_FAULT_SEED is set, and is printed; a failure says how to run it again. The
cut-leader fault needs network namespaces (root, iproute2); elsewhere the run leaves it out. The full run (50
faults) is `scripts/fault-run.py` (docs/faults.md).

Two more tests pin broker bugs the fault runs led to (expected to fail until fixed, each says why):
- a voter healed after a 20 s cut gets the metadata log again only when TCP retransmits (seconds to tens of seconds);
- a leader that comes back from a crash with a shorter log (the unflushed tail a power loss takes) leads at once
  under its old epoch, and its followers throw away acknowledged records to match it.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import netns
from conftest import sluice_bin
from fault_runner import FaultCluster, Runner, Settings, report, wait_for

#: Faults per CI run: every kind once, and a few more.
FAULTS = int(os.environ.get("SLUICE_FAULT_COUNT", "8"))


def test_faults_lose_and_duplicate_nothing(tmp_path: Path):
    seed = int(os.environ.get("SLUICE_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"SLUICE_FAULT_SEED={seed}")
    outcome = Runner(seed, FAULTS, tmp_path / "run").run()
    table = report(outcome)
    print(table)
    assert outcome.ok, (
        f"{table}\nbroker logs under {outcome.workdir}\n"
        f"Reproduce with: SLUICE_FAULT_SEED={seed} .venv/bin/python -m pytest tests/interop/python/test_faults.py -s"
        f"  (or scripts/fault-run.py --faults {FAULTS} --seed {seed})")


#: A partition long enough for TCP's retransmission timer to back off to several seconds.
LONG_CUT_S = 20
#: Kafka's voters fetch with controller.quorum.request.timeout.ms (2 s) and drop a connection that does not answer
#: in time; three of those is a generous bound for a healed voter to receive the log again.
CATCH_UP_S = 6


def test_a_voter_healed_after_a_long_cut_catches_up_within_seconds(tmp_path: Path):
    """A voter cut off for LONG_CUT_S (packets dropped, as a pulled cable) and healed gets the metadata log again
    within CATCH_UP_S: its own Metadata shows a topic the majority created during the cut. (Before quorum
    connections had a TCP_USER_TIMEOUT, the healed voter waited for TCP's backed-off retransmission: 7.4 s after a
    20 s cut, 24-26 s after a 30 s one; now about 1 s.)"""
    reason = netns.skip_reason()
    if reason:
        pytest.skip(reason)
    netns.sweep_stale()
    binary = tmp_path / "sluice"
    shutil.copy2(sluice_bin(), binary)
    with netns.Network(3) as net:
        cluster = FaultCluster(tmp_path, binary, Settings(), net)
        try:
            cluster.start_all()
            views = wait_for(lambda: [v for i in cluster.ids if (v := cluster.view(i, "during-cut"))
                                      and v.brokers == (1, 2, 3) and v.controller in cluster.ids], 60,
                             "every node lists the three brokers")
            victim = next(i for i in cluster.ids if i != views[0].controller)
            majority = [i for i in cluster.ids if i != victim]
            net.cut(victim)
            time.sleep(LONG_CUT_S)
            admin = AdminClient({"bootstrap.servers": cluster.bootstrap(majority)})
            admin.create_topics([NewTopic("during-cut", 1, 2)], operation_timeout=10)["during-cut"].result(30)
            del admin  # destroyed now: it would go on reconnecting to addresses that leave with the network
            net.heal(victim)
            healed = time.monotonic()
            seen = None
            while time.monotonic() - healed < 60:
                v = cluster.view(victim, "during-cut")
                if v is not None and v.topic_error == 0:
                    seen = time.monotonic() - healed
                    break
                time.sleep(0.2)
            print(f"node {victim} cut off {LONG_CUT_S}s: its Metadata shows during-cut "
                  + (f"{seen:.1f}s after the heal" if seen is not None else "not within 60s of the heal"))
            assert seen is not None and seen <= CATCH_UP_S, (
                f"node {victim} got the metadata log {seen}s after the heal (bound {CATCH_UP_S}s)\n"
                + cluster.log_tails())
        finally:
            for node in cluster.nodes.values():
                node.kill()


#: Batches the restarted leader's segment loses (what a power loss takes from a log that was never fsynced).
LOST_TAIL_BATCHES = 20


def test_a_leader_that_lost_its_unflushed_tail_loses_no_acknowledged_record(tmp_path: Path):
    """Kafka's default flush policy never fsyncs (replication is the durability): a leader whose machine loses power
    comes back with a shorter log than its followers. SIGKILL of the leader, its active segment cut by
    LOST_TAIL_BATCHES batches at a batch boundary (the page cache it lost), restarted at once, producing on: every
    record acknowledged with acks=all before or after is still there. (It lost before-480..499 in 3 of 3 runs
    while a node restarted within its broker session led its partitions from the image it had before the crash,
    at the same leader epoch: the followers truncated to its shorter log. It now hosts nothing until its new
    registration is committed, by which time the controller has fenced the old incarnation and moved its
    leaderships.)"""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    from fault_runner import producer_config, read_batches

    binary = tmp_path / "sluice"
    shutil.copy2(sluice_bin(), binary)
    settings = Settings()
    cluster = FaultCluster(tmp_path, binary, settings, None)
    try:
        cluster.start_all()
        wait_for(lambda: all((v := cluster.view(i, "tail")) and v.brokers == (1, 2, 3) and v.controller > 0
                             for i in cluster.ids), 60, "every node lists the three brokers")
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
        admin.create_topics([NewTopic("tail", 1, 3, config={"min.insync.replicas": "2"})])["tail"].result(30)
        del admin
        wait_for(lambda: all((v := cluster.view(i, "tail")) and v.partitions and len(v.partitions[0].isr) == 3
                             for i in cluster.ids), 30, "the ISR is full on every node")
        acked = {}

        def produce(prefix: bytes, count: int) -> None:
            producer = Producer(producer_config(cluster.bootstrap(), settings))
            for n in range(count):
                producer.produce("tail", key=prefix + b"%d" % n, value=b"v", partition=0,
                                 on_delivery=lambda e, m: e is None and acked.__setitem__(m.key(), m.offset()))
                producer.poll(0)
                time.sleep(0.01)
            assert producer.flush(60) == 0

        produce(b"before-", 500)
        leader = cluster.view(1, "tail").partitions[0].leader
        cluster.nodes[leader].kill()
        directory = cluster.nodes[leader].data_dir / "tail-0"
        batches = read_batches(directory)
        segment = sorted(directory.glob("*.log"))[-1]
        assert len(batches) > LOST_TAIL_BATCHES and segment.stat().st_size == sum(12 + b[1] for b in batches)
        with open(segment, "r+b") as f:
            f.truncate(sum(12 + b[1] for b in batches[:-LOST_TAIL_BATCHES]))
        cluster.nodes[leader].start()
        # Still within the old session: the followers' next fetches meet the restarted node (if it leads).
        time.sleep(3)
        produce(b"after-", 200)
        wait_for(lambda: all((v := cluster.view(i, "tail")) and v.brokers == (1, 2, 3)
                             and len(v.partitions[0].isr) == 3 for i in cluster.ids), 60, "healed")
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": "tail-check",
                             "enable.partition.eof": True})
        consumer.assign([TopicPartition("tail", 0, 0)])
        found = set()
        while True:
            m = consumer.poll(10)
            assert m is not None, "no end of partition within 10 s"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                break
            found.add(m.key())
        consumer.close()
        lost = sorted(k.decode() for k in acked if k not in found)
        truncations = [line for i in cluster.ids for line in cluster.nodes[i].log_path.read_text().splitlines()
                       if "truncating" in line and "topic=tail " in line]
        assert not lost, (f"{len(lost)} acknowledged records lost after leader {leader} came back without its last "
                          f"{LOST_TAIL_BATCHES} batches: {lost[:10]}...\n" + "\n".join(truncations))
    finally:
        for node in cluster.nodes.values():
            node.kill()
