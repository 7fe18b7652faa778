#!/usr/bin/env python3
"""Replication benchmarks (not run in CI): a 3-node cluster with RF 3 and acks=all against the single node.

The replication issue asks for these figures, side by side in one run. The script starts its own `sluice server`
processes (SLUICE_BIN, default target/release/sluice) on free loopback ports in a temporary directory, and stops
every one of them at the end, on an error and on Ctrl-C (the kernel also SIGKILLs them if this script dies:
PR_SET_PDEATHSIG). Node handling (spawn, `sluice storage format`, stop, log tails, page-cache warming, load
average) comes from scripts/bench-controller.py, imported. Clients are third-party: confluent-kafka (librdkafka)
producers, each in a child process of its own (this script run with --worker), and a confluent-kafka consumer.

1. Throughput: N records of S bytes (default 2,000,000 x 100 B and 1,000,000 x 1 KiB) produced as fast as one
   producer can (linger.ms=5, librdkafka's default batch.size 1,000,000 and batch.num.messages 10,000, no
   compression, keyless records spread by the sticky partitioner) to a fresh 6-partition topic (deleted after the
   run): the single node (RF 1, acks=all, idempotence on), the 3-node cluster (RF 3, min.insync.replicas=2,
   acks=all, idempotence on), and the cluster with acks=1 (idempotence off). The single node and the cluster are
   up at the same time (the idle one costs little) and the three setups alternate, --repeat times (default 3),
   so a change in the machine's load hits all of them; the table gives medians and every run. MB/s, records/s,
   the cluster/single ratio, and the CPU-seconds the producer and the brokers used (/proc, getrusage).
2. Latency: a producer at a fixed moderate rate (default 5,000 records/s of 100 B for 20 s, linger.ms=5), p50,
   p99 and p99.9 of delivery-callback time minus send time, for the same three setups.
3. Unavailability on the cluster: one idempotent acks=all producer at a steady rate (default 1,000 records/s,
   round-robin over the 6 partitions of an RF 3 topic, min.insync.replicas=2) runs through every round, logging
   each delivery with its send and delivery times. A round picks a node that leads at least one partition and is
   not the active controller (the Raft leader named by DescribeQuorum), then SIGKILLs it (or SIGTERMs it: a
   controlled shutdown, which moves its leaderships first). Per partition: the time from the signal until a record
   sent after it (after the SIGKILLed process was reaped, so no ack can come from it) is delivered, and the
   longest gap between two deliveries until then. The round's figure is the worst partition ("every partition
   delivers again"): with acks=all the victim stalls not only the partitions it leads but every one whose ISR
   holds it, until it is fenced. Goals: SIGKILL within broker.session.timeout.ms + 1 s (the value is read back
   from the cluster with DescribeConfigs), SIGTERM within 1 s. One extra SIGKILL round kills the active controller
   itself (a controller election comes first then). The node is restarted after each round, and the next round
   waits until it is unfenced and every partition's ISR has 3 replicas again. At the end every record the producer
   saw acknowledged must be read back by a consumer (loss = acknowledged but not read; duplicates = read more than
   once). Each round prints the node-log lines between the signal and the resumption (fencing, elections,
   controlled shutdown, fetchers, ISR changes) with their times after the signal.

Before measuring it writes and deletes ~2 GB in a temp file so the page cache and allocator are warm. The load
average is printed at each phase: the machine is shared, so note it beside the figures.

Figures and what they mean: docs/benchmarks.md ("Replication: 3 nodes RF 3 acks=all vs single node").

Usage: .venv/bin/python scripts/bench-replication.py [--quick] [--records N] [--kb-records N] [--repeat N]
       [--rate R] [--latency-seconds S] [--steady-rate R] [--kill-rounds N] [--term-rounds N]
       [--no-controller-round] [--no-acks1] [--skip PHASES] [--session-timeout-ms MS] [--keep] [--no-warm]
       [--report FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1
PARTITIONS = 6
#: Marker of a producer worker's last stdout line (its JSON result).
RESULT = "RESULT "


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


# --- producer workers (child processes: `bench-replication.py --worker '<json>'`) --------------------------------


def _producer(spec: dict, **extra):
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": spec["bootstrap"], "acks": spec["acks"],
            "enable.idempotence": spec["acks"] == "all", "linger.ms": 5, "compression.type": "none",
            "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2 * 1024 * 1024,
            "message.timeout.ms": 120_000, **extra}
    return Producer(conf)


def _cpu_self() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker_throughput(spec: dict) -> dict:
    """`count` records of `size` bytes as fast as the producer takes them; seconds from the first send until
    the last acknowledgement (flush)."""
    errors: List[str] = []
    n_err = [0]

    def failed(err, _msg):
        n_err[0] += 1
        if len(errors) < 5:
            errors.append(str(err))

    p = _producer(spec, **{"delivery.report.only.error": True, "on_delivery": failed})
    topic, count = spec["topic"], spec["count"]
    payload = os.urandom(spec["size"])
    p.produce(topic, payload)  # connect and fetch metadata before the clock starts
    p.flush(30)
    produce, poll = p.produce, p.poll
    cpu0 = _cpu_self()
    t0 = time.monotonic()
    for i in range(count - 1):
        try:
            produce(topic, payload)
        except BufferError:
            poll(0.005)
            produce(topic, payload)
        if not i & 4095:
            poll(0)
    left = p.flush(300)
    took = time.monotonic() - t0
    return {"count": count, "size": spec["size"], "seconds": took, "unflushed": left, "errors": n_err[0],
            "first_errors": errors, "cpu_s": _cpu_self() - cpu0}


def worker_latency(spec: dict) -> dict:
    """`rate` records/s for `seconds`; delivery-callback time minus send time of each."""
    rate, total, size = spec["rate"], int(spec["rate"] * spec["seconds"]), spec["size"]
    send = [0.0] * total
    lat: List[float] = []
    errors: List[str] = []
    pad = os.urandom(max(0, size - 8))

    def done(err, msg):
        now = time.monotonic()
        if err:
            errors.append(str(err))
            return
        i = int.from_bytes(msg.value()[:8], "big")
        if i < total:
            lat.append(now - send[i])

    p = _producer(spec, on_delivery=done)
    topic = spec["topic"]
    for i in range(200):  # warm-up: connections, metadata, the producer id
        p.produce(topic, (total + i).to_bytes(8, "big") + pad)
    p.flush(30)
    t0 = time.monotonic()
    for i in range(total):
        due = t0 + i / rate
        while True:
            now = time.monotonic()
            if now >= due:
                break
            p.poll(due - now)
        send[i] = time.monotonic()
        p.produce(topic, i.to_bytes(8, "big") + pad)
        p.poll(0)
    sent_for = time.monotonic() - t0
    p.flush(60)
    lat.sort()
    return {"sent": total, "acked": len(lat), "errors": len(errors), "first_errors": errors[:5],
            "achieved_rate": total / sent_for, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "p999_ms": pct(lat, 99.9) * 1e3, "max_ms": (lat[-1] if lat else float("nan")) * 1e3}


def worker_steady(spec: dict) -> dict:
    """`rate` records/s round-robin over `partitions` until SIGTERM; every delivery appended to `out` as
    `id partition offset send_t delivery_t` (time.monotonic, the same clock in every process), every failure as
    `E id error delivery_t`."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rate, parts, size = spec["rate"], spec["partitions"], spec["size"]
    out = open(spec["out"], "w", buffering=1 << 16)
    send: List[float] = []
    pad = b"\x00" * max(0, size - 8)
    failed = [0]

    def done(err, msg):
        now = time.monotonic()
        i = int.from_bytes(msg.value()[:8], "big")
        if err:
            failed[0] += 1
            out.write(f"E {i} {err.name()} {now:.6f}\n")
        else:
            out.write(f"{i} {msg.partition()} {msg.offset()} {send[i]:.6f} {now:.6f}\n")

    p = _producer(spec, on_delivery=done, **{"request.timeout.ms": 30_000})
    topic = spec["topic"]
    t0 = time.monotonic()
    last_flush = t0
    i = 0
    while not stop.is_set():
        due = t0 + i / rate
        now = time.monotonic()
        if now < due:
            p.poll(min(due - now, 0.01))
            continue
        send.append(time.monotonic())
        try:
            p.produce(topic, i.to_bytes(8, "big") + pad, partition=i % parts)
        except BufferError:
            send.pop()
            p.poll(0.01)
            continue
        i += 1
        p.poll(0)
        if now - last_flush > 0.1:
            out.flush()
            last_flush = now
    left = p.flush(120)
    out.close()
    return {"sent": i, "unflushed": left, "failed": failed[0]}


def worker_main(arg: str) -> int:
    spec = json.loads(arg)
    fn = {"throughput": worker_throughput, "latency": worker_latency, "steady": worker_steady}[spec["mode"]]
    result = fn(spec)
    print(RESULT + json.dumps(result), flush=True)
    return 0


def pct(sorted_values: List[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values))) - 1))
    return sorted_values[k]


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--worker":
    _die_with_parent()
    sys.exit(worker_main(sys.argv[2]))


# --- the benchmark (parent process) -------------------------------------------------------------------------------

from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic  # noqa: E402


def _load_bench_controller():
    spec = importlib.util.spec_from_file_location("bench_controller", ROOT / "scripts" / "bench-controller.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bc = _load_bench_controller()
bc.SLUICE_BIN = bc.SLUICE_BIN.resolve()  # the nodes run in their own directories
Node = bc.Node
utc_now, load, log_time, wait_until = bc.utc_now, bc.load, bc.log_time, bc.wait_until

_HANDED_OUT: set = set()


def free_port() -> int:
    """A free loopback port not handed out before in this run (a cluster picks all its ports before binding)."""
    while True:
        port = bc.free_port()
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Fleet:
    """Every node this script started, so that one `stop_all` ends them whatever happened."""

    def __init__(self, root: Path, extra: Dict[str, str]):
        self.root = root
        self.extra = extra
        self.nodes: List[Node] = []

    def single(self, name: str) -> Node:
        port = free_port()
        node = Node(self.root / name, name, {"listeners": f"PLAINTEXT://127.0.0.1:{port}"}, port)
        self.nodes.append(node)
        node.spawn()
        node.wait_api_versions()
        return node

    def cluster(self, name: str, size: int = 3) -> List[Node]:
        ids = list(range(1, size + 1))
        ports = {i: free_port() for i in ids}
        cports = {i: free_port() for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{cports[i]}" for i in ids)
        nodes = [Node(self.root / name / f"node-{i}", f"node-{i}",
                      {**bc.combined_props(i, ports[i], cports[i], voters), **self.extra}, ports[i]) for i in ids]
        cluster_id = subprocess.run([str(bc.SLUICE_BIN), "storage", "random-uuid"], capture_output=True,
                                    text=True, timeout=30, check=True).stdout.strip()
        for n in nodes:
            n.format(cluster_id)
        self.nodes.extend(nodes)
        for n in nodes:
            n.spawn()
        for n in nodes:
            n.wait_api_versions()
        bc.wait_all_listed(nodes, size)
        return nodes

    def stop_all(self) -> None:
        running = [n for n in self.nodes if n.proc is not None]
        for n in running:
            try:
                os.kill(n.proc.pid, signal.SIGCONT)
                n.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 30
        for n in running:
            try:
                n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
            n.proc = None


class Workers:
    """Producer child processes: killed on the way out whatever happened."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def start(self, spec: dict) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        self.procs.append(proc)
        return proc

    def result(self, proc: subprocess.Popen, timeout_s: float) -> dict:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise RuntimeError(f"producer worker did not finish within {timeout_s:.0f} s\n{err[-3000:]}")
        lines = [l for l in out.splitlines() if l.startswith(RESULT)]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"producer worker failed ({proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
        return json.loads(lines[-1][len(RESULT):])

    def run(self, spec: dict, timeout_s: float) -> dict:
        return self.result(self.start(spec), timeout_s)

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# --- metadata ------------------------------------------------------------------------------------------------------


class PartitionState:
    __slots__ = ("leader", "replicas", "isr")

    def __init__(self, leader: int, replicas: List[int], isr: List[int]):
        self.leader, self.replicas, self.isr = leader, replicas, isr


def topic_state(port: int, topic: str, timeout_s: float = 3.0) -> Tuple[List[int], Dict[int, PartitionState]]:
    """Metadata v1 for `topic` from the node at `port` itself: (live broker ids, {partition: leader/replicas/ISR})."""
    name = topic.encode()
    r = bc._request(port, 3, 1, struct.pack(">ih", 1, len(name)) + name, timeout_s)
    off = 0

    def i16() -> int:
        nonlocal off
        off += 2
        return struct.unpack_from(">h", r, off - 2)[0]

    def i32() -> int:
        nonlocal off
        off += 4
        return struct.unpack_from(">i", r, off - 4)[0]

    def skip_string() -> None:
        nonlocal off
        n = i16()
        off += max(0, n)

    brokers = []
    for _ in range(i32()):
        brokers.append(i32())
        skip_string()
        i32()
        skip_string()
    i32()
    parts: Dict[int, PartitionState] = {}
    for _ in range(i32()):
        i16()
        skip_string()
        off += 1
        for _ in range(i32()):
            err = i16()
            index = i32()
            leader = i32()
            replicas = [i32() for _ in range(i32())]
            isr = [i32() for _ in range(i32())]
            parts[index] = PartitionState(leader if err in (0, 9) else -1, replicas, isr)  # 9: REPLICA_NOT_AVAILABLE
    return sorted(brokers), parts


def try_state(node: Node, topic: str) -> Optional[Tuple[List[int], Dict[int, PartitionState]]]:
    if node.proc is None:
        return None
    try:
        return topic_state(node.port, topic)
    except (OSError, ValueError, struct.error):
        return None


def fully_replicated(nodes: List[Node], topic: str, partitions: int) -> bool:
    """Every node lists every node and, for every partition, a leader and an ISR of all the replicas."""
    for n in nodes:
        s = try_state(n, topic)
        if s is None:
            return False
        brokers, parts = s
        if len(brokers) != len(nodes) or len(parts) != partitions:
            return False
        if any(p.leader < 0 or sorted(p.isr) != sorted(p.replicas) for p in parts.values()):
            return False
    return True


def active_controller(nodes: List[Node]) -> Optional[int]:
    try:
        q = bc.describe_quorum(",".join(n.bootstrap for n in nodes if n.proc is not None))
    except Exception:  # noqa: BLE001 - kafka-python raises many kinds while an election runs
        return None
    leader = q.get("leader_id", -1)
    return leader if leader >= 0 else None


def admin_for(nodes: List[Node]) -> AdminClient:
    return AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in nodes if n.proc is not None),
                        "socket.timeout.ms": 10000, "log_level": 3})


def create_topic(nodes: List[Node], name: str, rf: int, config: Optional[Dict[str, str]] = None) -> None:
    admin = admin_for(nodes)
    fut = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=rf,
                                        config=config or {})], operation_timeout=30)
    fut[name].result(timeout=60)
    wait_until(f"{name} fully replicated and led on every node", lambda: fully_replicated(nodes, name, PARTITIONS),
               60, 0.1, nodes)


def delete_topic(nodes: List[Node], name: str) -> None:
    try:
        admin = admin_for(nodes)  # kept alive until the future completes
        admin.delete_topics([name], operation_timeout=30)[name].result(timeout=60)
    except KafkaException as e:
        print(f"  (could not delete {name}: {e})", flush=True)


def broker_config(nodes: List[Node], key: str) -> Tuple[str, str]:
    """(value, source) of a broker config as node 1 describes it (DescribeConfigs)."""
    from confluent_kafka.admin import ResourceType

    res = ConfigResource(ResourceType.BROKER, str(nodes[0].node_id))
    admin = admin_for(nodes)
    entries = admin.describe_configs([res])[res].result(timeout=30)
    e = entries[key]
    return e.value, ConfigSource(e.source).name


def cpu_s(node: Node) -> float:
    """utime + stime of the node's process so far."""
    fields = Path(f"/proc/{node.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- 1 and 2: throughput and latency ----------------------------------------------------------------------------------


class Setup:
    def __init__(self, label: str, nodes: List[Node], rf: int, acks: str):
        self.label, self.nodes, self.rf, self.acks = label, nodes, rf, acks

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def topic_config(self) -> Dict[str, str]:
        return {"min.insync.replicas": "2"} if self.rf == 3 else {}


def throughput(setup: Setup, workers: Workers, count: int, size: int, tag: str) -> dict:
    topic = f"thr-{tag}-{size}"
    create_topic(setup.nodes, topic, setup.rf, setup.topic_config)
    cpu0 = {n.name: cpu_s(n) for n in setup.nodes}
    res = workers.run({"mode": "throughput", "bootstrap": setup.bootstrap, "topic": topic, "count": count,
                       "size": size, "acks": setup.acks}, timeout_s=900)
    res["broker_cpu_s"] = sum(cpu_s(n) - cpu0[n.name] for n in setup.nodes)
    res["mb_s"] = count * size / res["seconds"] / 1e6
    res["rec_s"] = count / res["seconds"]
    res["load"] = load()
    print(f"  {setup.label}, {count:,} x {size} B: {res['mb_s']:.1f} MB/s, {res['rec_s']:,.0f} records/s, "
          f"{res['seconds']:.2f} s; CPU-s producer {res['cpu_s']:.1f}, brokers {res['broker_cpu_s']:.1f}; "
          f"errors {res['errors']} {res['first_errors']}; load {res['load']}", flush=True)
    if res["errors"] or res["unflushed"]:
        raise RuntimeError(f"{setup.label}: {res['errors']} delivery errors, {res['unflushed']} unflushed")
    delete_topic(setup.nodes, topic)
    return res


def latency(setup: Setup, workers: Workers, rate: float, seconds: float, tag: str) -> dict:
    topic = f"lat-{tag}"
    create_topic(setup.nodes, topic, setup.rf, setup.topic_config)
    res = workers.run({"mode": "latency", "bootstrap": setup.bootstrap, "topic": topic, "rate": rate,
                       "seconds": seconds, "size": 100, "acks": setup.acks}, timeout_s=seconds + 120)
    res["load"] = load()
    print(f"  {setup.label}, {rate:,.0f}/s for {seconds:.0f} s: p50 {res['p50_ms']:.2f} / p99 {res['p99_ms']:.2f} / "
          f"p99.9 {res['p999_ms']:.2f} / max {res['max_ms']:.1f} ms; achieved {res['achieved_rate']:,.0f}/s; "
          f"acked {res['acked']}/{res['sent']}, errors {res['errors']}; load {res['load']}", flush=True)
    delete_topic(setup.nodes, topic)
    return res


# --- 3: unavailability -----------------------------------------------------------------------------------------------


class Deliveries:
    """The steady producer's delivery log, read as it grows."""

    def __init__(self, path: Path):
        self.path = path
        self._pos = 0
        self._rest = ""
        #: partition -> [(send time, delivery time)], in delivery order (the idempotent producer keeps a
        #: partition's order, so send times rise too).
        self.by_partition: Dict[int, List[Tuple[float, float]]] = {p: [] for p in range(PARTITIONS)}
        self.acked: Dict[int, Tuple[int, int]] = {}  # id -> (partition, offset)
        self.failed: List[str] = []

    def read(self) -> None:
        try:
            with open(self.path) as f:
                f.seek(self._pos)
                chunk = f.read()
                self._pos = f.tell()
        except FileNotFoundError:
            return
        lines = (self._rest + chunk).split("\n")
        self._rest = lines.pop()
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "E":
                self.failed.append(line)
                continue
            i, p, off, sent, t = int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3]), float(parts[4])
            self.acked[i] = (p, off)
            self.by_partition[p].append((sent, t))

    def resumed_after(self, t: float) -> bool:
        """Every partition has delivered a record sent after t."""
        return all(ds and ds[-1][0] > t for ds in self.by_partition.values())

    def outage(self, t_sig: float, t_ref: float) -> Dict[int, Tuple[float, float]]:
        """{partition: (seconds from t_sig until the delivery of its first record sent after t_ref, the longest
        gap between two of its consecutive deliveries from t_sig until then)}.

        t_ref is when the signalled node could no longer acknowledge anything: the moment its SIGKILL was reaped;
        for SIGTERM, the signal itself (records sent after it count only once some leader took them). Deliveries
        in the first moments after t_sig can be acknowledgements the node sent before it died, so the outage is
        measured up to the first record sent after t_ref, not from the first delivery after t_sig."""
        out = {}
        for p, ds in self.by_partition.items():
            first = next((k for k, (sent, _) in enumerate(ds) if sent > t_ref), None)
            if first is None:
                out[p] = (float("inf"), float("inf"))
                continue
            k0 = next((k for k in range(first, -1, -1) if ds[k][1] <= t_sig), -1)
            times = [t_sig] + [d for _, d in ds[k0 + 1:first + 1]]
            if k0 >= 0:
                times[0] = ds[k0][1]
            gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
            out[p] = (ds[first][1] - t_sig, gap)
        return out


LOG_WORDS = ("fenc", "session", "controlled shutdown", "active controller", "elect", "isr", "ISR", "leader",
             "AlterPartition", "shutdown", "unfenced", "registration", "drain", "connections")


def log_excerpt(nodes: List[Node], wall0: float, wall1: float, limit: int = 40) -> List[str]:
    """Node-log lines between wall-clock times wall0 and wall1 that tell where a round's time went."""
    rows = []
    for n in nodes:
        for line in n.log_path.read_text(errors="replace").splitlines()[-3000:]:
            ts = log_time(line)
            if ts is None or ts < wall0 - 0.05 or ts > wall1 + 0.05:
                continue
            if " DEBUG raft" in line and not any(w in line for w in ("election", "became")):
                continue
            if any(w in line for w in LOG_WORDS):
                rows.append((ts, f"    +{ts - wall0:6.3f}s {n.name}: {' '.join(line.split()[1:])[:220]}"))
    rows.sort()
    out = [r for _, r in rows]
    return out if len(out) <= limit else out[:limit // 2] + [f"    ... {len(out) - limit} more ..."] + out[-limit // 2:]


def unavailability(nodes: List[Node], workers: Workers, root: Path, rate: float, kill_rounds: int,
                   term_rounds: int, controller_round: bool, session_ms: int) -> dict:
    topic = "avail"
    create_topic(nodes, topic, 3, {"min.insync.replicas": "2"})
    path = root / "steady.deliveries"
    dl = Deliveries(path)
    proc = workers.start({"mode": "steady", "bootstrap": ",".join(n.bootstrap for n in nodes), "topic": topic,
                          "partitions": PARTITIONS, "rate": rate, "size": 100, "acks": "all", "out": str(path)})
    wall_minus_mono = time.time() - time.monotonic()
    plan = ["kill"] * kill_rounds + (["kill-controller"] if controller_round else []) + ["term"] * term_rounds
    rounds = []
    try:
        wait_until("the steady producer delivering on every partition",
                   lambda: (dl.read(), dl.resumed_after(time.monotonic() - 1.0))[1], 60, 0.2, nodes)
        time.sleep(2)
        for r, kind in enumerate(plan, 1):
            wait_until("every partition's ISR to hold all 3 nodes",
                       lambda: fully_replicated(nodes, topic, PARTITIONS), 120, 0.2, nodes)
            controller = None
            deadline = time.monotonic() + 30
            while controller is None and time.monotonic() < deadline:
                controller = active_controller(nodes)
            _, state = topic_state(nodes[0].port, topic)
            leads: Dict[int, List[int]] = {}
            for p, s in state.items():
                leads.setdefault(s.leader, []).append(p)
            if kind == "kill-controller":
                victim_id = controller
            else:
                candidates = [i for i in sorted(leads) if i != controller]
                victim_id = candidates[r % len(candidates)] if candidates else controller
            victim = next(n for n in nodes if n.node_id == victim_id)
            survivors = [n for n in nodes if n is not victim]
            time.sleep(1.0)  # a steady stretch before the fault
            dl.read()
            t_sig = time.monotonic()
            wall_sig = time.time()
            exit_s = None
            if kind.startswith("kill"):
                victim.kill()  # SIGKILL and reaped: it acknowledges nothing sent from now on
                t_ref = time.monotonic()
            else:
                t_ref = t_sig
                exit_s = victim.stop()  # controlled shutdown, then the process drains and exits
            wait_until(f"round {r}: every partition delivering records sent after the {kind}",
                       lambda: (dl.read(), dl.resumed_after(t_ref))[1], session_ms / 1000 + 90, 0.05, survivors)
            time.sleep(0.5)
            dl.read()
            per = dl.outage(t_sig, t_ref)
            resume = max(r_ for r_, _ in per.values())
            gap = max(g for _, g in per.values())
            stalled = sum(1 for r_, _ in per.values() if r_ > 0.5)
            goal = session_ms / 1000 + 1 if kind.startswith("kill") else 1.0
            row = {"round": r, "kind": kind, "victim": victim_id, "controller": controller,
                   "led": leads.get(victim_id, []), "gap_s": gap, "resume_s": resume, "stalled": stalled,
                   "goal_s": goal, "exit_s": exit_s,
                   "per_partition": {p: round(r_, 3) for p, (r_, _) in per.items()}}
            rounds.append(row)
            print(f"  round {r}: {kind} of node {victim_id} (active controller {controller}; it led partitions "
                  f"{row['led']}){'' if exit_s is None else f', exited {exit_s:.2f} s after SIGTERM'}: longest gap "
                  f"{gap:.2f} s, every partition delivering again {resume:.2f} s after the signal, {stalled} of "
                  f"{PARTITIONS} partitions out > 0.5 s; goal {goal:.1f} s: {'met' if resume <= goal else 'NOT met'}"
                  f" (load {load()})", flush=True)
            print("    per partition, signal -> first record sent after it delivered: "
                  + ", ".join(f"p{p} {g:.2f} s" for p, g in row["per_partition"].items())
                  + "; leaders before: " + ", ".join(f"p{p} {s.leader} isr {s.isr}" for p, s in sorted(state.items())),
                  flush=True)
            row["log"] = log_excerpt(nodes, wall_sig, wall_sig + max(resume, exit_s or 0.0) + 0.2)
            for line in row["log"]:
                print(line, flush=True)
            victim.spawn()
            victim.wait_api_versions()
            wait_until(f"node {victim_id} unfenced", victim.unfenced_since_spawn, 120, 0.1, nodes)
            wait_until(f"node {victim_id} back in every ISR", lambda: fully_replicated(nodes, topic, PARTITIONS),
                       120, 0.1, nodes)
            row["rejoin_s"] = time.monotonic() - victim.started_at
        time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    summary = workers.result(proc, 180)
    dl.read()
    print(f"  steady producer: sent {summary['sent']}, acknowledged {len(dl.acked)}, failed {summary['failed']} "
          f"{dl.failed[:3]}, unflushed {summary['unflushed']}", flush=True)
    check = read_back(nodes, topic, dl)
    return {"rounds": rounds, "producer": summary, "acked": len(dl.acked), "check": check,
            "wall_minus_mono": wall_minus_mono}


def read_back(nodes: List[Node], topic: str, dl: Deliveries) -> dict:
    """Reads the whole topic; every acknowledged id must be there."""
    c = Consumer({"bootstrap.servers": ",".join(n.bootstrap for n in nodes), "group.id": "bench-replication",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.max.bytes": 50 << 20})
    try:
        high = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(PARTITIONS)}
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        seen: Dict[int, int] = {}
        pos = {p: 0 for p in range(PARTITIONS)}
        deadline = time.monotonic() + 120
        while any(pos[p] < high[p] for p in pos) and time.monotonic() < deadline:
            for m in c.consume(num_messages=5000, timeout=1.0):
                if m.error():
                    continue
                i = int.from_bytes(m.value()[:8], "big")
                seen[i] = seen.get(i, 0) + 1
                pos[m.partition()] = m.offset() + 1
    finally:
        c.close()
    lost = [i for i in dl.acked if i not in seen]
    dups = sum(v - 1 for v in seen.values() if v > 1)
    unacked = [i for i in seen if i not in dl.acked]
    res = {"read": sum(seen.values()), "distinct": len(seen), "high_watermarks": sum(high.values()),
           "lost": len(lost), "lost_sample": sorted(lost)[:10], "duplicates": dups,
           "read_not_acked": len(unacked), "complete": all(pos[p] >= high[p] for p in pos)}
    print(f"  read back: {res['read']} records ({res['distinct']} distinct ids, sum of high watermarks "
          f"{res['high_watermarks']}); acknowledged but not read: {res['lost']} {res['lost_sample']}; "
          f"duplicates: {res['duplicates']}; read but never acknowledged: {res['read_not_acked']}", flush=True)
    return res


# --- report ----------------------------------------------------------------------------------------------------------


def med(runs: List[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def fmt_thr(runs: Optional[List[dict]]) -> str:
    if not runs:
        return "-"
    text = f"{med(runs, 'mb_s'):.1f} MB/s ({med(runs, 'rec_s') / 1000:,.0f}k rec/s)"
    if len(runs) > 1:
        each = ", ".join(f"{r['mb_s']:.0f}" for r in runs)
        text += f"; runs {each}"
    return text


def report(args, started: str, ended: str, loads: List[str], thr: Dict[str, Dict[int, List[dict]]],
           lat: Dict[str, dict], av: Optional[dict], session: Tuple[str, str], labels: List[str]) -> str:
    out = [f"bench-replication {started} -> {ended}, binary {bc.SLUICE_BIN}; throughput: median of {args.repeat} "
           f"alternating runs (MB/s of each run after ';')",
           f"load average (1/5/15 min) at each phase: {' | '.join(loads)}", ""]
    single, cl_all = labels[0], labels[1]
    out.append("| measure | " + " | ".join(labels) + f" | ratio {cl_all} / {single} |")
    out.append("|---" * (len(labels) + 2) + "|")
    for size, count in ((100, args.records), (1024, args.kb_records)):
        if not count:
            continue
        cells = [fmt_thr(thr[l].get(size)) for l in labels]
        a, b = thr[single].get(size), thr[cl_all].get(size)
        ratio = "-"
        if a and b:
            ratio = f"**{med(b, 'mb_s') / med(a, 'mb_s'):.2f}x**"
            if len(a) == len(b) > 1:
                pairs = ", ".join(f"{y['mb_s'] / x['mb_s']:.2f}" for x, y in zip(a, b))
                ratio += f" (run by run {pairs})"
        out.append(f"| throughput, {count:,} x {size} B | " + " | ".join(cells) + f" | {ratio} |")
        cpu = [f"{med(thr[l][size], 'cpu_s'):.1f} / {med(thr[l][size], 'broker_cpu_s'):.1f}" if thr[l].get(size)
               else "-" for l in labels]
        out.append(f"| CPU-s producer / all brokers, {size} B (median) | " + " | ".join(cpu) + " | |")
    if lat:
        for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
            cells = [f"{lat[l][key]:.2f} ms" if l in lat else "-" for l in labels]
            ratio = f"{lat[cl_all][key] / lat[single][key]:.2f}x" if single in lat and cl_all in lat else "-"
            out.append(f"| latency {name} at {args.rate:,.0f}/s x 100 B | " + " | ".join(cells) + f" | {ratio} |")
        out.append("| latency: rate achieved | " + " | ".join(
            f"{lat[l]['achieved_rate']:,.0f}/s" if l in lat else "-" for l in labels) + " | |")
    if av:
        out += ["", f"broker.session.timeout.ms = {session[0]} ({session[1]}, read with DescribeConfigs); steady "
                    f"producer {args.steady_rate:,.0f} records/s over {PARTITIONS} partitions, acks=all, idempotent",
                "", "| round | signal | node (partitions it led) | signal -> every partition delivers records sent "
                    "after it | longest gap between deliveries | partitions out > 0.5 s | goal | node back in every "
                    "ISR after restart |",
                "|---|---|---|---|---|---|---|---|"]
        for row in av["rounds"]:
            sig = {"kill": "SIGKILL", "kill-controller": "SIGKILL (active controller)",
                   "term": "SIGTERM"}[row["kind"]]
            if row["exit_s"] is not None:
                sig += f" (exited after {row['exit_s']:.2f} s)"
            met = "met" if row["resume_s"] <= row["goal_s"] else "**not met**"
            out.append(f"| {row['round']} | {sig} | {row['victim']} ({','.join(map(str, row['led']))}) | "
                       f"{row['resume_s']:.2f} s | {row['gap_s']:.2f} s | {row['stalled']} | "
                       f"< {row['goal_s']:.1f} s: {met} | {row.get('rejoin_s', float('nan')):.1f} s |")
        ch = av["check"]
        out += ["", f"Read back: {av['acked']:,} acknowledged, {ch['read']:,} read ({ch['distinct']:,} distinct); "
                    f"acknowledged but not read: {ch['lost']}; duplicates: {ch['duplicates']}; read but not "
                    f"acknowledged: {ch['read_not_acked']}; producer failures: {av['producer']['failed']}"]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="200k x 100 B, 50k x 1 KB, 5 s of latency, 1 round of each kind")
    parser.add_argument("--records", type=int, help="100 B records per throughput run (default 2,000,000)")
    parser.add_argument("--kb-records", type=int, help="1 KiB records per throughput run (default 1,000,000; 0: none)")
    parser.add_argument("--repeat", type=int, help="alternating throughput runs per setup (default 3, --quick 1)")
    parser.add_argument("--rate", type=float, default=5000, help="latency phase records/s (default 5,000)")
    parser.add_argument("--latency-seconds", type=float, help="latency phase length (default 20)")
    parser.add_argument("--steady-rate", type=float, default=1000, help="unavailability producer records/s")
    parser.add_argument("--kill-rounds", type=int, help="SIGKILL rounds (default 3, plus one of the controller)")
    parser.add_argument("--term-rounds", type=int, help="SIGTERM rounds (default 3)")
    parser.add_argument("--no-controller-round", action="store_true", help="no SIGKILL of the active controller")
    parser.add_argument("--no-acks1", action="store_true", help="no acks=1 column")
    parser.add_argument("--skip", default="", help="comma list of phases to skip: throughput,latency,unavailability")
    parser.add_argument("--session-timeout-ms", type=int,
                        help="broker.session.timeout.ms of the cluster (default: the broker default)")
    parser.add_argument("--no-warm", action="store_true", help="skip writing/deleting 2 GB first")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, data) at the end")
    parser.add_argument("--report", type=Path, help="also write the report table to this file")
    args = parser.parse_args()
    q = args.quick
    args.records = args.records if args.records is not None else (200_000 if q else 2_000_000)
    args.kb_records = args.kb_records if args.kb_records is not None else (50_000 if q else 1_000_000)
    args.latency_seconds = args.latency_seconds or (5 if q else 20)
    args.repeat = args.repeat or (1 if q else 3)
    kill_rounds = args.kill_rounds if args.kill_rounds is not None else (1 if q else 3)
    term_rounds = args.term_rounds if args.term_rounds is not None else (1 if q else 3)
    skip = set(filter(None, args.skip.split(",")))
    if not bc.SLUICE_BIN.is_file():
        print(f"{bc.SLUICE_BIN} not found: cargo build --release -p sluice-cli, or set SLUICE_BIN", file=sys.stderr)
        return 2

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background, where SIGINT is ignored
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-replication-"))
    extra = {}
    if args.session_timeout_ms:
        extra["broker.session.timeout.ms"] = str(args.session_timeout_ms)
    fleet = Fleet(root, extra)
    workers = Workers()
    failed = True
    started = utc_now()
    loads = [load()]
    single_l, all_l, one_l = "single node, RF 1, acks=all", "3 nodes, RF 3, acks=all", "3 nodes, RF 3, acks=1"
    labels = [single_l, all_l] + ([] if args.no_acks1 else [one_l])
    thr: Dict[str, Dict[int, List[dict]]] = {l: {} for l in labels}
    lat: Dict[str, dict] = {}
    av = None
    session = ("?", "?")
    sizes = [(100, args.records)] + ([(1024, args.kb_records)] if args.kb_records else [])
    print(f"bench-replication: {bc.SLUICE_BIN}, temp dir {root}, started {started}, load {loads[0]}", flush=True)
    try:
        if not args.no_warm:
            bc.warm_memory(root, 2.0)
        print(f"\n== single node and 3-node cluster, both up (load {load()})", flush=True)
        single = fleet.single("single")
        cluster = fleet.cluster("cluster")
        session = broker_config(cluster, "broker.session.timeout.ms")
        print(f"  cluster: broker.session.timeout.ms = {session[0]} ({session[1]})", flush=True)
        setups = [Setup(single_l, [single], 1, "all"), Setup(all_l, cluster, 3, "all")]
        if not args.no_acks1:
            setups.append(Setup(one_l, cluster, 3, "1"))
        if "throughput" not in skip:
            for r in range(args.repeat):
                print(f"\n== throughput, run {r + 1} of {args.repeat} (load {load()})", flush=True)
                for size, count in sizes:
                    for st in setups:
                        thr[st.label].setdefault(size, []).append(
                            throughput(st, workers, count, size, f"{st.rf}-{st.acks}-{r}"))
            loads.append(load())
        if "latency" not in skip:
            print(f"\n== latency (load {load()})", flush=True)
            for st in setups:
                lat[st.label] = latency(st, workers, args.rate, args.latency_seconds, f"{st.rf}-{st.acks}")
            loads.append(load())
        single.stop()
        if "unavailability" not in skip:
            print(f"\n== unavailability: {kill_rounds} SIGKILL rounds"
                  f"{'' if args.no_controller_round else ' + 1 of the active controller'}, {term_rounds} SIGTERM "
                  f"rounds (load {load()})", flush=True)
            av = unavailability(cluster, workers, root, args.steady_rate, kill_rounds, term_rounds,
                                not args.no_controller_round, int(session[0]))
            loads.append(load())
        failed = False
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({e}); stopping the nodes", file=sys.stderr)
        return 130
    finally:
        workers.kill_all()
        fleet.stop_all()
        if args.keep or failed:
            print(f"kept {root} (node logs: */server.log, */*/server.log)", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    text = report(args, started, utc_now(), loads, thr, lat, av, session, labels)
    print("\n" + text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
