"""Seeded multi-process fault runner: a 3-node Sluice cluster, idempotent acks=all producers, injected faults.

A run is (seed, fault count, fault kinds): the seed alone decides the fault schedule (kind, partition, durations and
pauses of every fault, printed before the first); which node a fault hits is the node that leads (or follows) the
chosen partition when the fault starts, read from Metadata. The same seed with the same kinds gives the same
schedule; the timing of a real cluster does the rest, so a failure is reproduced by running its seed again, not
replayed step by step.

    cluster   3 `sluice server` processes, each broker+controller (a Raft voter), on loopback or, where the machine
              allows network namespaces (root, iproute2: `netns.py`), each in its own namespace on one bridge
    topic     RF 3, min.insync.replicas=2, `partitions` partitions
    load      `producers` confluent-kafka producers (enable.idempotence, acks=all), each in a thread, `rate`
              records/s, round-robin over the partitions, every acknowledged key recorded with its partition and
              offset and the time of its acknowledgement
    faults    one at a time, each healed (every node up, unfenced, every partition's ISR back to 3 in every node's
              Metadata) before the next, so the cluster stays available with min ISR 2:
      kill-leader       SIGKILL the leader of a partition, restart it after a (seeded) downtime
      zombie-leader     SIGSTOP the leader of a partition past broker.session.timeout.ms, wait until the others
                        fenced it and moved its leaderships, let the producers go on, SIGCONT it: the stale leader
                        must not acknowledge writes that are then lost
      cluster-restart   every node SIGKILLed or SIGTERMed at once, then all started again
      lagging-follower  SIGSTOP a follower of a partition longer than replica.lag.time.max.ms but within its session:
                        it leaves the ISR (AlterPartition) and must catch up and rejoin after SIGCONT
      cut-leader        (namespaces only) the leader of a partition cut off from the controller quorum and from its
                        followers (its cable down); a producer inside its namespace keeps writing to it (the
                        minority side); healed after the majority moved its leaderships
    checks    producers stopped and flushed, every partition read from offset 0 through the cluster: every
              acknowledged record present exactly once and at the offset it was acknowledged at (lost = 0,
              duplicates = 0), no two acknowledgements of one offset, each producer's records in a partition in
              the order it produced them (KIP-98); then the cluster stopped and the three replicas' log files
              compared batch by batch (base offset, length, leader epoch, CRC): all replicas agree.
    reported  per fault: what, where, how long until healed, the longest gap between two acknowledgements of one
              partition while it lasted (the unavailability a client saw); totals.

Entry points: `tests/interop/python/test_faults.py` (a few faults, CI) and `scripts/fault-run.py` (the full run).
This file is also the minority-side producer: `python fault_runner.py minority <bootstrap> <topic> <partition>
<key prefix>` (run inside a node's namespace by the cut-leader fault).
"""

from __future__ import annotations

import bisect
import collections
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from conftest import Broker, _die_with_parent, _recv_exact, free_port, stop_all  # noqa: E402
import netns  # noqa: E402

T = TypeVar("T")

KILL_LEADER = "kill-leader"
ZOMBIE_LEADER = "zombie-leader"
CLUSTER_RESTART = "cluster-restart"
LAGGING_FOLLOWER = "lagging-follower"
CUT_LEADER = "cut-leader"
#: Every fault kind, in report order; CUT_LEADER needs network namespaces.
KINDS = (KILL_LEADER, ZOMBIE_LEADER, CLUSTER_RESTART, LAGGING_FOLLOWER, CUT_LEADER)
#: How often each kind is drawn once every kind has had its turn.
KIND_WEIGHTS = {KILL_LEADER: 3, ZOMBIE_LEADER: 2, CLUSTER_RESTART: 1, LAGGING_FOLLOWER: 2, CUT_LEADER: 2}

#: A topic whose config the heal check rewrites (one metadata record each time) to see every voter replicate.
PROBE_TOPIC = "fault-probe"
CLIENT_PORT = 9092
CONTROLLER_PORT = 9093


@dataclass
class Settings:
    """Cluster timeouts and load. The timeouts are short but keep Kafka's proportions: a broker's heartbeat stuck on a
    dead controller gives up after half the session (lifecycle.rs), so a controller failover does not fence healthy
    brokers; a follower leaves the ISR well within its session."""

    partitions: int = 6
    producers: int = 2
    #: Records per second per producer.
    rate: float = 100.0
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    replica_lag_time_max_ms: int = 2000
    election_timeout_ms: int = 1000
    #: Producer request timeout: a request stuck on a paused leader is retried after this.
    request_timeout_ms: int = 5000
    #: Producer delivery timeout: longer than any fault lasts, so a record fails only if the cluster stays down.
    message_timeout_ms: int = 120_000
    #: A fault not healed within this is a liveness failure (the run stops there).
    heal_timeout_s: float = 90.0


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: a pure function of the seed."""

    index: int
    kind: str
    partition: int
    #: kill-leader: downtime; cluster-restart: downtime; lagging-follower: pause length.
    duration_s: float
    #: zombie-leader / cut-leader: how long the producers go on against the new leaders before the old one returns.
    extra_s: float
    #: lagging-follower: which of the partition's two followers (0 or 1, in id order).
    follower_pick: int
    #: cluster-restart: "kill" (SIGKILL) or "term" (SIGTERM, controlled shutdown).
    stop_mode: str
    #: Pause after the heal before the next fault.
    settle_s: float

    def describe(self) -> str:
        if self.kind == KILL_LEADER:
            return f"p{self.partition} down {self.duration_s:.1f}s"
        if self.kind in (ZOMBIE_LEADER, CUT_LEADER):
            return f"p{self.partition} +{self.extra_s:.1f}s after failover"
        if self.kind == CLUSTER_RESTART:
            return f"{self.stop_mode}, down {self.duration_s:.1f}s"
        return f"p{self.partition} follower #{self.follower_pick} paused {self.duration_s:.1f}s"


def make_schedule(seed: int, count: int, kinds: Sequence[str], settings: Settings) -> List[Fault]:
    """The faults of run `seed`: every kind once first (a seeded order, so a short run covers every kind), then
    kinds drawn by KIND_WEIGHTS; the parameters of each from the same stream."""
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    weighted = [k for k in kinds for _ in range(KIND_WEIGHTS[k])]
    chosen = order[:count] + [rng.choice(weighted) for _ in range(count - len(order))]
    lag_s = settings.replica_lag_time_max_ms / 1000
    session_s = settings.session_timeout_ms / 1000
    faults = []
    for i, kind in enumerate(chosen):
        partition = rng.randrange(settings.partitions)
        if kind == KILL_LEADER:
            # Both sides of the session: restarted before the controller fenced it, or after.
            duration = rng.uniform(0.5, session_s + 2.0)
        elif kind == CLUSTER_RESTART:
            duration = rng.uniform(0.5, 3.0)
        elif kind == LAGGING_FOLLOWER:
            # Out of the ISR by lag (plus the leader's check period), back before its session ends.
            duration = rng.uniform(lag_s + 1.0, max(lag_s + 1.0, session_s - 2.0))
        else:
            duration = 0.0
        faults.append(Fault(
            index=i + 1,
            kind=kind,
            partition=partition,
            duration_s=round(duration, 2),
            extra_s=round(rng.uniform(1.0, 3.0), 2),
            follower_pick=rng.randrange(2),
            stop_mode=rng.choice(["kill", "term"]),
            settle_s=round(rng.uniform(0.5, 1.5), 2),
        ))
    return faults


# -------------------------------------------------------------------------------------------------------------------
# Metadata over a raw socket: one node's own view, with a short timeout (a paused node never answers)
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionView:
    partition: int
    leader: int
    leader_epoch: int
    replicas: Tuple[int, ...]
    isr: Tuple[int, ...]


@dataclass(frozen=True)
class View:
    """One node's Metadata for one topic: live (unfenced) brokers, its controller id, the partitions."""

    brokers: Tuple[int, ...]
    controller: int
    #: The topic's error code (3: UNKNOWN_TOPIC_OR_PARTITION before it is created); partitions empty then.
    topic_error: int
    partitions: Dict[int, PartitionView]


def metadata(host: str, port: int, topic: str, timeout_s: float = 2.0) -> Optional[View]:
    """Metadata v7 for `topic` from the node at host:port itself, or None if it does not answer in time."""
    client_id = b"sluice-faults"
    name = topic.encode()
    body = struct.pack(">hhih", 3, 7, 0x5EED, len(client_id)) + client_id
    body += struct.pack(">ih", 1, len(name)) + name + b"\x00"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv_exact(s, 4))[0]
            payload = _recv_exact(s, size)
    except (OSError, ValueError):
        return None
    r = _Reader(payload)
    if r.i32() != 0x5EED:
        return None
    r.i32()  # throttle
    brokers = []
    for _ in range(r.i32()):
        brokers.append(r.i32())
        r.string()
        r.i32()
        r.string()
    r.string()  # cluster id
    controller = r.i32()
    partitions: Dict[int, PartitionView] = {}
    error = -1
    for _ in range(r.i32()):
        error = r.i16()
        r.string()
        r.i8()
        for _ in range(r.i32()):
            r.i16()
            index, leader, epoch = r.i32(), r.i32(), r.i32()
            replicas, isr = r.i32s(), r.i32s()
            r.i32s()  # offline
            partitions[index] = PartitionView(index, leader, epoch, tuple(sorted(replicas)), tuple(sorted(isr)))
    return View(tuple(sorted(brokers)), controller, error, partitions)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _take(self, fmt: str):
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def i8(self) -> int:
        return self._take(">b")

    def i16(self) -> int:
        return self._take(">h")

    def i32(self) -> int:
        return self._take(">i")

    def i32s(self) -> List[int]:
        return [self.i32() for _ in range(self.i32())]

    def string(self) -> Optional[str]:
        n = self.i16()
        if n < 0:
            return None
        value = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return value


# -------------------------------------------------------------------------------------------------------------------
# The cluster
# -------------------------------------------------------------------------------------------------------------------


class FaultNode(Broker):
    """`sluice server` from a pinned copy of the binary (a concurrent `cargo build` cannot swap it mid-run), on
    loopback or inside a network namespace (`exec_argv`)."""

    def __init__(self, binary: Path, exec_argv: List[str], host: str, port: Optional[int], data_dir: Path,
                 log_path: Path, overrides: Dict[str, str]):
        super().__init__(data_dir, log_path, overrides)
        self.binary = binary
        self.exec_argv = exec_argv
        self.host = host
        if port is not None:
            self.port = port

    def command(self) -> List[str]:
        listener = f"PLAINTEXT://{self.host}:{self.port}"
        overrides = {"listeners": listener, "advertised.listeners": listener, "log.dirs": str(self.data_dir),
                     **self.extra_overrides}
        cmd = self.exec_argv + [str(self.binary), "server"]
        for key, value in overrides.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, "node not running"
        os.kill(self.proc.pid, sig)


class FaultCluster:
    """Three broker+controller nodes: on loopback (`net` None) or node i in namespace i of `net`."""

    def __init__(self, workdir: Path, binary: Path, settings: Settings, net: Optional[netns.Network]):
        self.workdir = workdir
        self.settings = settings
        self.net = net
        self.ids = [1, 2, 3]
        cluster_id = "RmF1bHRSdW5uZXJDbHVzdA"
        if net is None:
            hosts = {i: "127.0.0.1" for i in self.ids}
            controller_ports = {i: free_port() for i in self.ids}
        else:
            hosts = {i: net.node_ip(i) for i in self.ids}
            controller_ports = {i: CONTROLLER_PORT for i in self.ids}
        voters = ",".join(f"{i}@{hosts[i]}:{controller_ports[i]}" for i in self.ids)
        self.nodes: Dict[int, FaultNode] = {}
        for i in self.ids:
            node = FaultNode(binary, net.exec_argv(i) if net else [], hosts[i], CLIENT_PORT if net else None,
                             workdir / f"node-{i}", workdir / f"node-{i}.log", {})
            client = f"PLAINTEXT://{hosts[i]}:{node.port}"
            node.extra_overrides = {
                "node.id": str(i),
                "process.roles": "broker,controller",
                "listeners": f"{client},CONTROLLER://{hosts[i]}:{controller_ports[i]}",
                "advertised.listeners": client,
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "controller.quorum.voters": voters,
                "controller.quorum.election.timeout.ms": str(settings.election_timeout_ms),
                "cluster.id": cluster_id,
                "broker.session.timeout.ms": str(settings.session_timeout_ms),
                "broker.heartbeat.interval.ms": str(settings.heartbeat_interval_ms),
                "replica.lag.time.max.ms": str(settings.replica_lag_time_max_ms),
                "num.partitions": "3",
            }
            self.nodes[i] = node

    def start_all(self) -> None:
        """Starts every node that is not running, all at once (each waits for the others to form the quorum)."""
        starting = [n for n in self.nodes.values() if not n.is_running()]
        for node in starting:
            node.proc = None
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node._spawn()
        for node in starting:
            node._wait_ready()
            node.starts += 1

    def stop_all(self, mode: str) -> None:
        if mode == "kill":
            for node in self.nodes.values():
                if node.is_running():
                    os.kill(node.proc.pid, signal.SIGCONT)
                    node.proc.kill()
            for node in self.nodes.values():
                node.kill()
        else:
            stop_all(self.nodes.values())

    def bootstrap(self, ids: Optional[Sequence[int]] = None) -> str:
        return ",".join(self.nodes[i].bootstrap for i in (ids or self.ids))

    def view(self, node_id: int, topic: str) -> Optional[View]:
        node = self.nodes[node_id]
        return metadata(node.host, node.port, topic)

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"--- node {i} ---\n{n.log_tail(lines)}" for i, n in self.nodes.items())


def wait_for(probe: Callable[[], T], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Unhealed(f"not within {timeout_s:.0f}s: {what}")
        time.sleep(0.2)


class Unhealed(Exception):
    """The cluster did not reach an expected state in time (a liveness failure)."""


# -------------------------------------------------------------------------------------------------------------------
# The load: idempotent acks=all producers
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class Ack:
    partition: int
    offset: int
    at: float  # time.monotonic()


class Ledger:
    """Everything the producers were told: acknowledgements (key -> partition, offset, time) and failures."""

    def __init__(self, partitions: int):
        self.lock = threading.Lock()
        self.acks: Dict[bytes, Ack] = {}
        self.ack_times: Dict[int, List[float]] = {p: [] for p in range(partitions)}
        self.failures: collections.Counter = collections.Counter()
        self.fatal: List[str] = []
        self.double_acks: List[bytes] = []
        #: Keys whose acknowledgement came from the minority side of a cut (cut-leader), with the fault index.
        self.minority: Dict[bytes, int] = {}

    def acked(self, key: bytes, partition: int, offset: int, at: float) -> None:
        with self.lock:
            if key in self.acks:
                self.double_acks.append(key)
            self.acks[key] = Ack(partition, offset, at)
            self.ack_times[partition].append(at)

    def failed(self, name: str) -> None:
        with self.lock:
            self.failures[name] += 1

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acks)


def producer_config(bootstrap: str, settings: Settings) -> Dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "request.timeout.ms": settings.request_timeout_ms,
        "message.timeout.ms": settings.message_timeout_ms,
        "socket.timeout.ms": settings.request_timeout_ms + 1000,
        "topic.metadata.refresh.interval.ms": 1000,
        "retry.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }


class ProducerThread(threading.Thread):
    """Produces `rate` records/s round-robin over the partitions; keys `<id>-<seq>` are never reused. A fatal
    client error (which an idempotent producer raises on an unexpected sequence or producer-id error) is recorded
    and the producer replaced, so the load goes on."""

    def __init__(self, producer_id: int, bootstrap: str, topic: str, settings: Settings, ledger: Ledger):
        super().__init__(name=f"producer-{producer_id}", daemon=True)
        self.producer_id = producer_id
        self.bootstrap = bootstrap
        self.topic = topic
        self.settings = settings
        self.ledger = ledger
        self.stop_event = threading.Event()
        self.produced = 0
        self.unfinished = 0
        self.error: Optional[BaseException] = None
        self._fatal = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the runner
            self.error = e

    def _new_producer(self):
        from confluent_kafka import Producer

        def on_error(err) -> None:
            if err.fatal():
                self.ledger.fatal.append(f"producer {self.producer_id}: {err.name()}: {err.str()}")
                self._fatal.set()

        return Producer({**producer_config(self.bootstrap, self.settings), "error_cb": on_error})

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        partitions = self.settings.partitions
        interval = 1.0 / self.settings.rate
        producer = self._new_producer()
        ledger = self.ledger

        def delivered(err, msg) -> None:
            if err is not None:
                ledger.failed(err.name())
            else:
                ledger.acked(msg.key(), msg.partition(), msg.offset(), time.monotonic())

        seq = 0
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            next_at = max(next_at, now - 1.0)  # no burst after a stall
            while next_at <= now:
                key = b"%d-%d" % (self.producer_id, seq)
                value = key + b"|" + b"x" * (64 + seq % 64)
                try:
                    producer.produce(self.topic, key=key, value=value, partition=seq % partitions,
                                     on_delivery=delivered)
                except BufferError:
                    break
                except KafkaException:
                    if not self._fatal.is_set():
                        raise
                    break
                seq += 1
                next_at += interval
            producer.poll(0.01)
            if self._fatal.is_set():
                producer.purge()
                producer.poll(0)
                producer = self._new_producer()
                self._fatal.clear()
        self.produced = seq
        self.unfinished = producer.flush(self.settings.message_timeout_ms / 1000 + 10)


# -------------------------------------------------------------------------------------------------------------------
# The minority-side producer (cut-leader): runs inside the cut node's namespace
# -------------------------------------------------------------------------------------------------------------------


def minority_main(argv: List[str]) -> None:
    """Produces to one partition through one node until killed; prints `{"ev": "ready"}` once a first record is
    acknowledged (so it is connected to the node before the cut), then one JSON line per acknowledgement."""
    from confluent_kafka import Producer

    bootstrap, topic, partition, prefix = argv[0], argv[1], int(argv[2]), argv[3]
    out_lock = threading.Lock()

    def emit(**event) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    ready = threading.Event()

    def delivered(err, msg) -> None:
        if err is None:
            emit(ev="ack", key=msg.key().decode(), partition=msg.partition(), offset=msg.offset(), wall=time.time())
            if not ready.is_set():
                ready.set()
                emit(ev="ready")
        else:
            emit(ev="error", key=msg.key().decode(), error=err.name())

    p = Producer({**producer_config(bootstrap, Settings()), "message.timeout.ms": 300_000})
    seq = 0
    while True:
        key = f"{prefix}-{seq}".encode()
        p.produce(topic, key=key, value=key + b"|minority", partition=partition, on_delivery=delivered)
        seq += 1
        p.poll(0.02 if ready.is_set() else 0.1)


class MinorityProducer:
    """A `minority_main` process inside node `node_id`'s namespace, talking to that node only."""

    def __init__(self, net: netns.Network, node: FaultNode, node_id: int, topic: str, partition: int, prefix: str,
                 log_path: Path):
        argv = net.exec_argv(node_id) + [sys.executable, str(HERE / "fault_runner.py"), "minority", node.bootstrap,
                                         topic, str(partition), prefix]
        self.events: List[dict] = []
        self._ready = threading.Event()
        with open(log_path, "ab") as stderr:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                         text=True, cwd=HERE, preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            event["at"] = time.monotonic()
            self.events.append(event)
            if event["ev"] == "ready":
                self._ready.set()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


# -------------------------------------------------------------------------------------------------------------------
# The run
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class FaultResult:
    fault: Fault
    node: Optional[int] = None
    injected_at: float = 0.0
    healed_at: float = 0.0
    notes: List[str] = field(default_factory=list)
    #: Filled in after the run from the acknowledgement times.
    max_gap_s: float = 0.0
    max_gap_partition: int = -1
    acks_during: int = 0

    @property
    def heal_s(self) -> float:
        return self.healed_at - self.injected_at


@dataclass
class Outcome:
    """What a run found. `ok` is the verdict; `problems` says why not."""

    seed: int
    kinds: List[str]
    network: str
    faults: List[FaultResult] = field(default_factory=list)
    produced: int = 0
    acknowledged: int = 0
    failed_deliveries: Dict[str, int] = field(default_factory=dict)
    fatal_errors: List[str] = field(default_factory=list)
    unfinished: int = 0
    minority_acks: int = 0
    minority_acks_after_cut: int = 0
    records_read: int = 0
    lost: int = 0
    duplicates: int = 0
    offset_conflicts: int = 0
    misplaced: int = 0
    reordered: int = 0
    unacked_present: int = 0
    replicas_agree: Optional[bool] = None
    replica_batches: int = 0
    problems: List[str] = field(default_factory=list)
    duration_s: float = 0.0
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


class Runner:
    def __init__(self, seed: int, faults: int, workdir: Path, settings: Optional[Settings] = None,
                 use_netns: Optional[bool] = None, log: Callable[[str], None] = print,
                 kinds: Optional[Sequence[str]] = None):
        self.seed = seed
        self.count = faults
        self.workdir = workdir
        self.settings = settings or Settings()
        self.log_fn = log
        self.started = time.monotonic()
        reason = netns.skip_reason() if use_netns is not False else "disabled"
        self.use_netns = reason is None
        self.netns_reason = reason
        wanted = list(kinds or KINDS)
        unknown = set(wanted) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        self.kinds = [k for k in KINDS if k in wanted and (k != CUT_LEADER or self.use_netns)]
        self.schedule = make_schedule(seed, faults, self.kinds, self.settings)
        self.topic = "faults"
        self.ledger = Ledger(self.settings.partitions)
        self.outcome = Outcome(seed=seed, kinds=self.kinds, network="namespaces" if self.use_netns else "loopback",
                               workdir=str(workdir))
        self.net: Optional[netns.Network] = None
        self.cluster: Optional[FaultCluster] = None
        self.producers: List[ProducerThread] = []
        self.minority: List[MinorityProducer] = []
        self._probe_writes = 0
        self.quorum_lag_s = 0.0
        #: Set by a fault when it undoes itself: when it restarted, resumed or reconnected nodes, and which were
        #: restarted.
        self._undone_at: Optional[float] = None
        self._restarted: List[int] = []

    def log(self, what: str) -> None:
        wall = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        self.log_fn(f"{wall} [{time.monotonic() - self.started:7.2f}s] {what}")

    # Set-up and tear-down -----------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self.log(f"seed {self.seed}: {self.count} faults of {', '.join(self.kinds)} on {self.outcome.network}"
                 + ("" if self.use_netns else f" (no cut-leader: {self.netns_reason})"))
        for f in self.schedule:
            self.log(f"  schedule #{f.index:<3} {f.kind:<17} {f.describe()}")
        try:
            self._setup()
            self._inject_all()
            self._finish()
        except Unhealed as e:
            self.outcome.problems.append(f"liveness: {e}")
            self.log(f"FAILED: {e}")
        finally:
            self._teardown()
        self.outcome.duration_s = time.monotonic() - self.started
        return self.outcome

    def _setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        source = Path(os.environ.get("SLUICE_BIN") or HERE.parents[2] / "target" / "debug" / "sluice")
        if not source.is_file():
            raise FileNotFoundError(f"broker binary {source} not found: cargo build -p sluice-cli, or set SLUICE_BIN")
        binary = self.workdir / "sluice"
        shutil.copy2(source, binary)
        if self.use_netns:
            netns.sweep_stale()
            self.net = netns.Network(3).create()
        self.cluster = FaultCluster(self.workdir, binary, self.settings, self.net)
        self.cluster.start_all()
        wait_for(lambda: all((v := self.cluster.view(i, self.topic)) and v.brokers == tuple(self.cluster.ids)
                             and v.controller in self.cluster.ids for i in self.cluster.ids),
                 60, "every node lists the three brokers and a controller")
        self._create_topic()
        self._wait_healthy("cluster up", restarted=self.cluster.ids)
        for i in range(self.settings.producers):
            t = ProducerThread(i, self.cluster.bootstrap(), self.topic, self.settings, self.ledger)
            t.start()
            self.producers.append(t)
        wait_for(lambda: all(self.ledger.ack_times[p] for p in range(self.settings.partitions)), 60,
                 "every partition acknowledges a record")
        self.log(f"cluster up ({self.outcome.network}), topic {self.topic} RF 3 min ISR 2 "
                 f"{self.settings.partitions} partitions, {self.settings.producers} producers at "
                 f"{self.settings.rate:.0f}/s each")
        time.sleep(1.0)

    def _create_topic(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap(), "socket.timeout.ms": 10000})
        futures = admin.create_topics([NewTopic(self.topic, num_partitions=self.settings.partitions,
                                                replication_factor=3, config={"min.insync.replicas": "2"}),
                                       NewTopic(PROBE_TOPIC, num_partitions=1, replication_factor=3)],
                                      operation_timeout=20, request_timeout=30)
        for future in futures.values():
            future.result(timeout=60)

    def _teardown(self) -> None:
        for t in self.producers:
            t.stop_event.set()
        for m in self.minority:
            m.kill()
        if self.cluster is not None:
            for node in self.cluster.nodes.values():
                if node.is_running():
                    os.kill(node.proc.pid, signal.SIGCONT)
                node.kill()
        if self.net is not None:
            self.net.destroy()

    # Cluster state ----------------------------------------------------------------------------------------------

    def _healthy(self) -> bool:
        """Every node running and, in its own Metadata, all three brokers live and every partition led by a live
        broker with all three replicas in its ISR."""
        for i in self.cluster.ids:
            if not self.cluster.nodes[i].is_running():
                return False
            v = self.cluster.view(i, self.topic)
            if v is None or v.brokers != tuple(self.cluster.ids) or len(v.partitions) != self.settings.partitions:
                return False
            if any(p.leader not in self.cluster.ids or len(p.isr) != 3 for p in v.partitions.values()):
                return False
        return True

    def _registered(self, node_id: int) -> bool:
        """Whether node `node_id`'s current process has registered with the controller (its log says so after
        its last start marker): until then the image may still show the previous process's registration, live."""
        text = self.cluster.nodes[node_id].log_path.read_text(errors="replace")
        return "registered with the controller" in text[text.rfind("==== start #"):]

    def _quorum_caught_up(self) -> bool:
        """Writes one metadata record (a config of the probe topic) and checks that every voter has replicated it
        within 3 s (DescribeQuorum: each voter's log end offset at or past the high watermark after the write). A
        voter whose quorum connection is still dead after a heal fails this."""
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        self._probe_writes += 1
        admin = None
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.cluster.bootstrap(), request_timeout_ms=5000,
                                     client_id="sluice-fault-probe")
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, PROBE_TOPIC,
                                                configs={"retention.ms": str(3_600_000 + self._probe_writes)})])
            target = None
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                partition = admin.describe_metadata_quorum()["topics"][0]["partitions"][0]
                if partition.get("error_code") or partition["leader_id"] < 0:
                    return False
                target = target if target is not None else partition["high_watermark"]
                if all(v["log_end_offset"] >= target for v in partition["current_voters"]):
                    return True
                time.sleep(0.1)
            return False
        except Exception:  # noqa: BLE001 - an election, a node not answering yet: the caller tries again
            return False
        finally:
            if admin is not None:
                admin.close()

    def _wait_healthy(self, what: str, since: Optional[float] = None, restarted: Sequence[int] = ()) -> float:
        """Waits until the cluster is whole again: every node running and, in every node's Metadata, all brokers
        live and every ISR full; each restarted node registered in its new incarnation; every partition has
        acknowledged a record after `since` (when the fault was undone); every voter replicates a fresh metadata
        record. Returns when (time.monotonic())."""
        first_ok: List[float] = []  # when everything but the quorum check first passed

        def probe() -> bool:
            for i, node in self.cluster.nodes.items():
                if node.proc is not None and node.proc.poll() is not None:
                    raise Unhealed(f"{what}: node {i} exited by itself with {node.proc.returncode}:\n"
                                   + node.log_tail(30))
            if not self._healthy() or not all(self._registered(i) for i in restarted):
                return False
            if since is not None and not all(ts and ts[-1] > since for ts in self.ledger.ack_times.values()):
                return False
            if not first_ok:
                first_ok.append(time.monotonic())
            return self._quorum_caught_up()

        wait_for(probe, self.settings.heal_timeout_s,
                 f"{what}: every node live and registered, every ISR full, every partition acknowledging, "
                 f"every voter replicating")
        now = time.monotonic()
        #: How long the metadata quorum lagged behind everything else (a voter not replicating).
        self.quorum_lag_s = now - first_ok[0]
        return now

    def _any_view(self, via: Sequence[int]) -> Optional[View]:
        for i in via:
            v = self.cluster.view(i, self.topic)
            if v is not None and len(v.partitions) == self.settings.partitions:
                return v
        return None

    def _leader_of(self, partition: int) -> PartitionView:
        v = wait_for(lambda: self._any_view(self.cluster.ids), 30, "Metadata from any node")
        return v.partitions[partition]

    def _moved_away(self, victim: int, via: List[int]) -> Optional[View]:
        """The view of `via` once `victim` is fenced (not live) and leads nothing."""
        v = self._any_view(via)
        if v is None or victim in v.brokers:
            return None
        if any(p.leader == victim or p.leader < 0 for p in v.partitions.values()):
            return None
        return v

    # Faults -------------------------------------------------------------------------------------------------------

    def _views_line(self) -> str:
        """Every node's own view: live brokers, controller, and per partition leader/epoch/ISR (for the log)."""
        parts = []
        for i in self.cluster.ids:
            v = self.cluster.view(i, self.topic) if self.cluster.nodes[i].is_running() else None
            if v is None:
                parts.append(f"node {i}: -")
                continue
            leaders = " ".join(f"p{p.partition}:{p.leader}e{p.leader_epoch}{''.join(map(str, p.isr))}"
                               for p in sorted(v.partitions.values(), key=lambda p: p.partition))
            parts.append(f"node {i}: live {''.join(map(str, v.brokers))} ctl {v.controller} {leaders}")
        return " | ".join(parts)

    def _inject_all(self) -> None:
        for fault in self.schedule:
            result = FaultResult(fault)
            self.outcome.faults.append(result)
            self.log(f"#{fault.index} views (leader, epoch, ISR): {self._views_line()}")
            acked_before = self.ledger.ack_count()
            log_sizes = {i: n.log_path.stat().st_size for i, n in self.cluster.nodes.items()}
            self._undone_at, self._restarted = None, []
            getattr(self, "_" + fault.kind.replace("-", "_"))(fault, result)
            assert self._undone_at is not None, f"{fault.kind} did not say when it was undone"
            result.healed_at = self._wait_healthy(f"fault #{fault.index} {fault.kind}", self._undone_at,
                                                  self._restarted)
            result.notes.append(f"whole {result.healed_at - self._undone_at:.1f}s after undone")
            if self.quorum_lag_s > 1.0:
                result.notes.append(f"quorum last, +{self.quorum_lag_s:.1f}s")
            truncated = self._truncations_since(log_sizes)
            if truncated:
                result.notes.append(f"tails truncated: {truncated}")
            self.log(f"#{fault.index} {fault.kind}: healed {result.heal_s:.1f}s after injection; "
                     f"{self.ledger.ack_count() - acked_before} acks meanwhile")
            self._check_producers()
            time.sleep(fault.settle_s)

    def _truncations_since(self, log_sizes: Dict[int, int]) -> str:
        """Which nodes truncated a divergent tail of which topic partitions since their logs had `log_sizes`
        (a stale leader's appends that the new leader never had), as `n3:p2,p5`."""
        out = []
        for i, node in self.cluster.nodes.items():
            with open(node.log_path, "rb") as f:
                f.seek(log_sizes[i])
                text = f.read().decode(errors="replace")
            parts = sorted({int(line.split(" partition=")[1].split()[0]) for line in text.splitlines()
                            if "truncating" in line and f"topic={self.topic} " in line})
            if parts:
                out.append(f"n{i}:" + ",".join(f"p{p}" for p in parts))
        return " ".join(out)

    def _check_producers(self) -> None:
        for t in self.producers:
            if t.error is not None or not t.is_alive():
                raise RuntimeError(f"{t.name} stopped: {t.error!r}")

    def _kill_leader(self, fault: Fault, r: FaultResult) -> None:
        leader = self._leader_of(fault.partition).leader
        r.node = leader
        r.injected_at = time.monotonic()
        self.cluster.nodes[leader].kill()
        self.log(f"#{fault.index} kill-leader: SIGKILL node {leader} (leader of p{fault.partition}); "
                 f"restart in {fault.duration_s:.1f}s")
        time.sleep(fault.duration_s)
        self.cluster.nodes[leader].start()
        self._undone_at, self._restarted = time.monotonic(), [leader]
        self.log(f"#{fault.index} node {leader} restarted")

    def _zombie_leader(self, fault: Fault, r: FaultResult) -> None:
        leader = self._leader_of(fault.partition).leader
        others = [i for i in self.cluster.ids if i != leader]
        r.node = leader
        r.injected_at = time.monotonic()
        self.cluster.nodes[leader].signal(signal.SIGSTOP)
        self.log(f"#{fault.index} zombie-leader: SIGSTOP node {leader} (leader of p{fault.partition})")
        try:
            v = wait_for(lambda: self._moved_away(leader, others), self.settings.session_timeout_ms / 1000 + 30,
                         f"nodes {others} fence node {leader} and move its leaderships")
            moved = time.monotonic() - r.injected_at
            r.notes.append(f"fenced+moved {moved:.1f}s")
            self.log(f"#{fault.index} node {leader} fenced, p{fault.partition} now led by "
                     f"{v.partitions[fault.partition].leader} ({moved:.1f}s); producing {fault.extra_s:.1f}s more")
            time.sleep(fault.extra_s)
        finally:
            self.cluster.nodes[leader].signal(signal.SIGCONT)
            self._undone_at = time.monotonic()
        self.log(f"#{fault.index} SIGCONT node {leader}")

    def _cluster_restart(self, fault: Fault, r: FaultResult) -> None:
        r.injected_at = time.monotonic()
        self.cluster.stop_all(fault.stop_mode)
        stopped = time.monotonic() - r.injected_at
        r.notes.append(f"stopped in {stopped:.1f}s")
        self.log(f"#{fault.index} cluster-restart: all nodes stopped ({fault.stop_mode}, {stopped:.1f}s); "
                 f"start in {fault.duration_s:.1f}s")
        time.sleep(fault.duration_s)
        self.cluster.start_all()
        self._undone_at, self._restarted = time.monotonic(), list(self.cluster.ids)
        self.log(f"#{fault.index} all nodes started")

    def _lagging_follower(self, fault: Fault, r: FaultResult) -> None:
        p = self._leader_of(fault.partition)
        followers = sorted(i for i in p.replicas if i != p.leader)
        follower = followers[fault.follower_pick % len(followers)]
        r.node = follower
        r.injected_at = time.monotonic()
        self.cluster.nodes[follower].signal(signal.SIGSTOP)
        self.log(f"#{fault.index} lagging-follower: SIGSTOP node {follower} (follower of p{fault.partition}, "
                 f"leader {p.leader}) for {fault.duration_s:.1f}s")
        shrunk: Optional[float] = None
        try:
            while time.monotonic() - r.injected_at < fault.duration_s:
                if shrunk is None:
                    v = self.cluster.view(p.leader, self.topic)
                    if v is not None and follower not in v.partitions[fault.partition].isr:
                        shrunk = time.monotonic() - r.injected_at
                time.sleep(0.1)
        finally:
            self.cluster.nodes[follower].signal(signal.SIGCONT)
            self._undone_at = time.monotonic()
        r.notes.append(f"left ISR {shrunk:.1f}s" if shrunk is not None else "stayed in ISR")
        self.log(f"#{fault.index} SIGCONT node {follower}; "
                 + (f"it left p{fault.partition}'s ISR {shrunk:.1f}s after the stop" if shrunk is not None
                    else f"it never left p{fault.partition}'s ISR"))

    def _cut_leader(self, fault: Fault, r: FaultResult) -> None:
        assert self.net is not None
        leader = self._leader_of(fault.partition).leader
        majority = [i for i in self.cluster.ids if i != leader]
        r.node = leader
        minority = MinorityProducer(self.net, self.cluster.nodes[leader], leader, self.topic, fault.partition,
                                    f"m{fault.index}", self.workdir / f"minority-{fault.index}.log")
        self.minority.append(minority)
        if not minority.wait_ready(30):
            minority.kill()
            raise Unhealed(f"fault #{fault.index}: the minority producer got no acknowledgement from node {leader}")
        r.injected_at = time.monotonic()
        cut_wall = time.time()
        self.net.cut(leader)
        self.log(f"#{fault.index} cut-leader: node {leader} (leader of p{fault.partition}) cut off; a producer "
                 f"in its namespace keeps writing to it")
        try:
            v = wait_for(lambda: self._moved_away(leader, majority), self.settings.session_timeout_ms / 1000 + 30,
                         f"nodes {majority} fence node {leader} and move its leaderships")
            moved = time.monotonic() - r.injected_at
            r.notes.append(f"fenced+moved {moved:.1f}s")
            self.log(f"#{fault.index} node {leader} fenced, p{fault.partition} now led by "
                     f"{v.partitions[fault.partition].leader} ({moved:.1f}s); producing {fault.extra_s:.1f}s more")
            time.sleep(fault.extra_s)
        finally:
            # Killed before the heal: what it was told while cut off is what is judged.
            minority.kill()
            self.net.heal(leader)
            self._undone_at = time.monotonic()
        late, latest = 0, 0.0
        for e in minority.events:
            if e["ev"] == "ack":
                key = e["key"].encode()
                self.ledger.acked(key, e["partition"], e["offset"], e["at"])
                self.ledger.minority[key] = fault.index
                self.outcome.minority_acks += 1
                if e["wall"] > cut_wall:
                    late += 1
                    latest = max(latest, e["wall"] - cut_wall)
                    self.log(f"#{fault.index} minority ack {e['key']} p{e['partition']}@{e['offset']} "
                             f"{e['wall'] - cut_wall:.3f}s after the cut")
        self.outcome.minority_acks_after_cut += late
        errors = collections.Counter(e["error"] for e in minority.events if e["ev"] == "error")
        r.notes.append(f"minority acks after cut: {late}" + (f" (last +{latest:.3f}s)" if late else ""))
        self.log(f"#{fault.index} node {leader} healed; the minority producer had {late} acknowledgements after the "
                 f"cut, errors {dict(errors) or 'none'}")

    # Checks -------------------------------------------------------------------------------------------------------

    def _finish(self) -> None:
        self.log("faults done; stopping the producers")
        for t in self.producers:
            t.stop_event.set()
        for t in self.producers:
            t.join(self.settings.message_timeout_ms / 1000 + 30)
            if t.error is not None:
                raise RuntimeError(f"{t.name} failed: {t.error!r}")
        o = self.outcome
        o.produced = sum(t.produced for t in self.producers)
        o.unfinished = sum(t.unfinished for t in self.producers)
        o.acknowledged = self.ledger.ack_count()
        o.failed_deliveries = dict(self.ledger.failures)
        o.fatal_errors = list(self.ledger.fatal)
        self._wait_healthy("after the producers stopped")
        self._measure_gaps()
        records = self._read_everything()
        self._check_records(records)
        self.log("stopping the cluster (SIGKILL: what is written is in the files) to compare the replicas' logs")
        self.cluster.stop_all("kill")
        self._compare_replicas()
        if o.acknowledged == 0:
            o.problems.append("no record was acknowledged")
        if o.lost:
            o.problems.append(f"{o.lost} acknowledged records lost")
        if o.duplicates:
            o.problems.append(f"{o.duplicates} duplicate records")
        if o.offset_conflicts or self.ledger.double_acks:
            o.problems.append(f"{o.offset_conflicts} offsets acknowledged for two records, "
                              f"{len(self.ledger.double_acks)} records acknowledged twice")
        if o.misplaced:
            o.problems.append(f"{o.misplaced} acknowledged records at another offset than acknowledged")
        if o.reordered:
            o.problems.append(f"{o.reordered} records out of their producer's order")
        if o.replicas_agree is False:
            o.problems.append("replicas disagree")

    def _measure_gaps(self) -> None:
        """Per fault, per partition: the longest time without an acknowledgement from the last one before the
        injection to the first one after the heal (cut at the next fault's injection)."""
        times = {p: sorted(ts) for p, ts in self.ledger.ack_times.items()}
        results = [r for r in self.outcome.faults if r.healed_at]
        for n, r in enumerate(results):
            end_cap = results[n + 1].injected_at if n + 1 < len(results) else float("inf")
            for p, ts in times.items():
                lo, hi = bisect.bisect_right(ts, r.injected_at), bisect.bisect_right(ts, r.healed_at)
                before = ts[max(lo - 1, 0):lo]
                inside = ts[lo:hi]
                after = [min(t, end_cap) for t in ts[hi:hi + 1]]
                points = before + inside + after
                r.acks_during += len(inside)
                for a, b in zip(points, points[1:]):
                    if b - a > r.max_gap_s:
                        r.max_gap_s, r.max_gap_partition = b - a, p

    def _read_everything(self) -> Dict[int, List[Tuple[int, bytes, bytes]]]:
        """Every record of every partition, from offset 0 to the high watermark, through the cluster."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        c = Consumer({"bootstrap.servers": self.cluster.bootstrap(), "group.id": "fault-runner-check",
                      "enable.auto.commit": False, "enable.partition.eof": True, "fetch.max.bytes": 8 << 20})
        ends = {}
        for p in range(self.settings.partitions):
            low, high = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
            ends[p] = high
            if low != 0:
                self.outcome.problems.append(f"p{p} starts at {low}, not 0")
        c.assign([TopicPartition(self.topic, p, 0) for p in range(self.settings.partitions)])
        records: Dict[int, List[Tuple[int, bytes, bytes]]] = {p: [] for p in range(self.settings.partitions)}
        done: Set[int] = {p for p, high in ends.items() if high == 0}
        deadline = time.monotonic() + 300
        while len(done) < len(ends) and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if m.offset() >= ends[m.partition()]:
                        done.add(m.partition())
                    continue
                raise RuntimeError(f"consumer error: {m.error()}")
            records[m.partition()].append((m.offset(), m.key(), m.value()))
        c.close()
        if len(done) < len(ends):
            self.outcome.problems.append(f"partitions {sorted(set(ends) - done)} not read to their end in 300s")
        self.outcome.records_read = sum(len(r) for r in records.values())
        self.log(f"read {self.outcome.records_read} records; high watermarks {ends}")
        return records

    def _check_records(self, records: Dict[int, List[Tuple[int, bytes, bytes]]]) -> None:
        o = self.outcome
        found: Dict[bytes, List[Tuple[int, int]]] = collections.defaultdict(list)
        for p, recs in records.items():
            offsets = [off for off, _, _ in recs]
            if len(set(offsets)) != len(offsets) or offsets != sorted(offsets):
                o.problems.append(f"p{p}: offsets read are not unique and increasing")
            for off, key, value in recs:
                found[key].append((p, off))
                if not value.startswith(key + b"|"):
                    o.problems.append(f"p{p}@{off}: value {value[:40]!r} does not belong to key {key!r}")
        acks = self.ledger.acks
        by_offset: Dict[Tuple[int, int], bytes] = {}
        examples: Dict[str, List[str]] = collections.defaultdict(list)
        for key, ack in acks.items():
            where = found.get(key, [])
            if not where:
                o.lost += 1
                examples["lost"].append(f"{key.decode()} acked at p{ack.partition}@{ack.offset}")
            elif (ack.partition, ack.offset) not in where:
                o.misplaced += 1
                examples["misplaced"].append(f"{key.decode()} acked at p{ack.partition}@{ack.offset}, found {where}")
            other = by_offset.setdefault((ack.partition, ack.offset), key)
            if other != key:
                o.offset_conflicts += 1
                examples["offset conflicts"].append(f"p{ack.partition}@{ack.offset}: {other!r} and {key!r}")
        for key, where in found.items():
            if len(where) > 1:
                o.duplicates += len(where) - 1
                examples["duplicates"].append(f"{key.decode()} at {where}")
            if key not in acks:
                o.unacked_present += 1
        # KIP-98: one idempotent producer's records in a partition keep their order.
        last: Dict[Tuple[str, int], Tuple[int, int]] = {}
        for p, recs in records.items():
            for off, key, _ in recs:
                producer, seq = key.decode().split("-", 1)
                prev = last.get((producer, p))
                if prev is not None and int(seq) < prev[0]:
                    o.reordered += 1
                    examples["reordered"].append(f"p{p}: {producer}-{seq}@{off} after {producer}-{prev[0]}@{prev[1]}")
                last[(producer, p)] = (int(seq), off)
        for what, lines in examples.items():
            self.log(f"{what}: {len(lines)}, e.g. " + "; ".join(lines[:10]))
            for key_line in lines[:10]:
                if what == "lost":
                    key = key_line.split(" ", 1)[0].encode()
                    if key in self.ledger.minority:
                        self.log(f"  {key_line} was acknowledged to the minority producer of fault "
                                 f"#{self.ledger.minority[key]}")

    def _compare_replicas(self) -> None:
        """Each node's log files of each partition, batch by batch: (base offset, length, leader epoch, CRC)."""
        o = self.outcome
        agree = True
        for p in range(self.settings.partitions):
            logs = {i: read_batches(n.data_dir / f"{self.topic}-{p}") for i, n in self.cluster.nodes.items()}
            reference = logs[1]
            for i, batches in logs.items():
                if batches != reference:
                    agree = False
                    first = next((k for k, (a, b) in enumerate(zip(reference, batches)) if a != b),
                                 min(len(reference), len(batches)))
                    o.problems.append(
                        f"p{p}: node {i}'s log differs from node 1's at batch {first} "
                        f"(node 1: {reference[first] if first < len(reference) else 'end'}, node {i}: "
                        f"{batches[first] if first < len(batches) else 'end'}; {len(reference)} vs {len(batches)} "
                        f"batches)")
            o.replica_batches += len(reference)
        o.replicas_agree = agree
        self.log(f"replica logs {'agree' if agree else 'DISAGREE'} ({o.replica_batches} batches per replica)")


def read_batches(partition_dir: Path) -> List[Tuple[int, int, int, int]]:
    """(base offset, batch length, partition leader epoch, CRC) of every record batch in the partition's segment
    files, in offset order (docs/storage.md: `<20-digit base offset>.log`, magic-v2 batches as appended)."""
    out = []
    segments = sorted(f for f in partition_dir.glob("*.log") if f.stem.isdigit() and len(f.stem) == 20)
    for segment in segments:
        data = segment.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length, epoch, _magic, crc = struct.unpack_from(">qiibI", data, pos)
            if length <= 0 or pos + 12 + length > len(data):
                out.append((base, length, epoch, -1))  # torn tail: shows as a difference
                break
            out.append((base, length, epoch, crc))
            pos += 12 + length
    return out


# -------------------------------------------------------------------------------------------------------------------
# The report
# -------------------------------------------------------------------------------------------------------------------


def report(o: Outcome, started_wall: Optional[str] = None) -> str:
    lines = []
    lines.append(f"seed {o.seed}  network {o.network}  kinds {', '.join(o.kinds)}  "
                 f"duration {o.duration_s:.0f}s" + (f"  started {started_wall}" if started_wall else ""))
    lines.append("")
    lines.append(f"{'#':>3}  {'fault':<17} {'node':>4}  {'detail':<32} {'healed':>7} {'max gap':>8} {'acks':>6}  notes")
    for r in o.faults:
        node = str(r.node) if r.node is not None else "all"
        gap = f"{r.max_gap_s:.2f}s" + (f" p{r.max_gap_partition}" if r.max_gap_partition >= 0 else "")
        healed = f"{r.heal_s:.1f}s" if r.healed_at else "-"
        lines.append(f"{r.fault.index:>3}  {r.fault.kind:<17} {node:>4}  {r.fault.describe():<32} {healed:>7} "
                     f"{gap:>11} {r.acks_during:>6}  {'; '.join(r.notes)}")
    lines.append("")
    by_kind = collections.Counter(r.fault.kind for r in o.faults if r.healed_at)
    worst = max(o.faults, key=lambda r: r.max_gap_s, default=None)
    rows = [
        ("faults injected (healed)", f"{len(o.faults)} ({sum(by_kind.values())}): "
                                     + ", ".join(f"{k} {by_kind[k]}" for k in o.kinds)),
        ("records produced by the load", o.produced),
        ("records acknowledged", o.acknowledged),
        ("  of them to the minority side", f"{o.minority_acks} ({o.minority_acks_after_cut} after a cut)"),
        ("failed deliveries", f"{sum(o.failed_deliveries.values())} {o.failed_deliveries or ''}".strip()),
        ("fatal producer errors", len(o.fatal_errors)),
        ("records read back", o.records_read),
        ("records lost", o.lost),
        ("duplicates", o.duplicates),
        ("offsets acknowledged twice", o.offset_conflicts),
        ("acked at another offset", o.misplaced),
        ("out of producer order", o.reordered),
        ("present, never acknowledged", o.unacked_present),
        ("replicas agree", f"{o.replicas_agree} ({o.replica_batches} batches x 3)"),
        ("longest unavailability", f"{worst.max_gap_s:.2f}s (fault #{worst.fault.index} {worst.fault.kind})"
         if worst else "-"),
    ]
    for name, value in rows:
        lines.append(f"{name:<32} {value}")
    for e in o.fatal_errors[:5]:
        lines.append(f"  fatal: {e}")
    lines.append("")
    lines.append("PASS" if o.ok else "FAIL: " + "; ".join(o.problems))
    return "\n".join(lines)


def outcome_json(o: Outcome) -> dict:
    return {
        "seed": o.seed, "network": o.network, "kinds": o.kinds, "duration_s": round(o.duration_s, 1),
        "faults": [{"index": r.fault.index, "kind": r.fault.kind, "node": r.node, "detail": r.fault.describe(),
                    "heal_s": round(r.heal_s, 2) if r.healed_at else None, "max_gap_s": round(r.max_gap_s, 2),
                    "max_gap_partition": r.max_gap_partition, "acks_during": r.acks_during, "notes": r.notes}
                   for r in o.faults],
        "produced": o.produced, "acknowledged": o.acknowledged, "failed_deliveries": o.failed_deliveries,
        "fatal_errors": o.fatal_errors, "minority_acks": o.minority_acks,
        "minority_acks_after_cut": o.minority_acks_after_cut, "records_read": o.records_read, "lost": o.lost,
        "duplicates": o.duplicates, "offset_conflicts": o.offset_conflicts, "misplaced": o.misplaced,
        "reordered": o.reordered, "unacked_present": o.unacked_present, "replicas_agree": o.replicas_agree,
        "problems": o.problems, "ok": o.ok,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["minority"]:
        minority_main(sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} minority <bootstrap> <topic> <partition> <key prefix>")
