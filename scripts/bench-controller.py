#!/usr/bin/env python3
"""Controller-quorum benchmarks (not run in CI): failover, large CreateTopics, 10,000 partitions.

The controller-quorum issue asks for figures, not timed tests; this script produces them. It starts its own
`sluice server` processes (SLUICE_BIN, default target/release/sluice) on free loopback ports, each in a
temporary directory, and stops every one of them at the end, on an error and on Ctrl-C (they also get SIGKILL
from the kernel if this script dies: PR_SET_PDEATHSIG). Clients are third-party: confluent-kafka (librdkafka)
for CreateTopics, kafka-python for DescribeQuorum; "does broker N list every partition with a leader" is a raw
Metadata v1 request sent to broker N itself, because a client library picks whichever broker it likes.

1. Failover. A 3-node cluster (every node `broker,controller`, formatted with `sluice storage format`, default
   election and session timeouts). The active controller is the Raft leader named by DescribeQuorum
   (`leader_id`); Metadata's controller id is not it: Sluice answers the broker that was asked
   (`controller_id_for_clients`, docs/metadata.md), as Kafka answers a random broker. The leader is SIGKILLed
   and a confluent-kafka AdminClient already connected to the two survivors loops CreateTopics (1 partition,
   RF 1) until one succeeds: seconds from the kill to that success, split at the moment the new leader logged
   "this node is now the active controller". The killed node is restarted and must rejoin (every node's
   log says the controller unfenced it, DescribeQuorum shows all 3 voters at the leader's log end, every broker
   lists 3 brokers) before the next round. Node logs carry raft-rs's election lines (`raft=debug`) and the quorum
   connections' (`sluice_broker::quorum_net=debug`), to tell where a slow round's time went.
2. CreateTopics of 1,000 partitions with RF 3 on the 3-node cluster: seconds until the call returns, until all
   3 brokers' Metadata list every partition with a leader, and until every partition's log directory exists
   (its leader creates it after the call returned); the same with RF 1 on a single node as the baseline.
3. 10,000 partitions (topics of 1,000 partitions, one CreateTopics each): on a single node (fewer when the
   nodes' open-files limit cannot hold 10,000 logs of 3 open files each; --single-partitions overrides), then
   on a fresh 3-node cluster with RF 3: broker RSS (/proc/<pid>/status VmRSS) and open files before and after, the
   metadata dir (`__cluster_metadata`: quorum.log, quorum.snapshot, quorum.state) and data dir sizes, then a
   clean restart (SIGTERM all, wait for exit, start) timed until each node answers ApiVersions and until its
   Metadata lists all partitions with leaders. RSS is read once every leader has created its logs. The
   metadata image's own memory is measured on a controller-only node (a quorum of one that hosts no
   partitions) with broker-only nodes beside it, since a combined node's RSS also holds its partition logs.

Before measuring it writes and deletes ~2 GB in a temp file so the page cache and allocator are warm (the
first run on a freshly booted VM is otherwise slower). The load average is printed at each phase: the machine
is shared, so note it beside the figures.

Figures and what they mean: docs/benchmarks.md ("Controller quorum").

Usage: .venv/bin/python scripts/bench-controller.py [--quick] [--rounds N] [--skip-cluster-10k] [--keep]
       [--single-partitions N] [--nofile N] [--no-warm]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import os
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
SLUICE_BIN = Path(os.environ.get("SLUICE_BIN") or ROOT / "target" / "release" / "sluice")
FAILOVER_GOAL_S = 2.0
#: Bounds of every wait, so a broken broker ends the run with evidence instead of hanging it.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
FAILOVER_TIMEOUT_S = 60.0
LARGE_WAIT_TIMEOUT_S = 600.0
#: Kafka's cap on records per controller operation: a topic of 1,000 partitions (1,001 records) per request.
PARTITIONS_PER_TOPIC = 1000

_PR_SET_PDEATHSIG = 1
#: RLIMIT_NOFILE given to the nodes (--nofile; 0 keeps the inherited one). A partition holds 3 open files
#: (.log, .index, .timeindex of its active segment), so 10,000 partitions need ~30,000: above the 20,000 this
#: machine's shells get, where a node takes its only log dir offline at ~6,660 partitions (docs/benchmarks.md).
NOFILE = 65536


# --- processes -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: the node gets SIGKILL when this script dies, so none is ever left running; and NOFILE."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if NOFILE:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        except (ValueError, OSError):
            pass  # not allowed to raise the hard limit: the node keeps the inherited one (printed at start)


class Node:
    """One `sluice server` process configured by a properties file in its own directory."""

    def __init__(self, home: Path, name: str, props: Dict[str, str], port: Optional[int]):
        self.home = home
        self.name = name
        self.port = port  # client (PLAINTEXT) port; None on a controller-only node
        self.data_dir = home / "data"
        self.config_path = home / "server.properties"
        self.log_path = home / "server.log"
        self.props = {"log.dirs": str(self.data_dir), **props}
        self.node_id = int(self.props.get("node.id", "0"))
        self.proc: Optional[subprocess.Popen] = None
        self.started_at = 0.0  # time.monotonic() of the last spawn
        home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.props.items()))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def format(self, cluster_id: str) -> None:
        out = subprocess.run([str(SLUICE_BIN), "storage", "format", "--cluster-id", cluster_id,
                              "--config", str(self.config_path)], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"sluice storage format for {self.name} failed: {out.stderr.strip()}")

    def spawn(self) -> None:
        assert self.proc is None, f"{self.name} already running"
        # raft=debug: raft-rs's own lines (elections, votes; its debug and trace lines are compiled out of
        # release builds) and the quorum connections' comings and goings, to tell where a failover's time goes.
        log_filter = "info,raft=debug,sluice_broker::quorum_net=debug"
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", log_filter), NO_COLOR="1")
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== bench-controller: start at {utc_now()}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            # Own session: Ctrl-C reaches only this script, which then stops the nodes itself.
            self.proc = subprocess.Popen([str(SLUICE_BIN), "server", "--config", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.home, preexec_fn=_die_with_parent,
                                         start_new_session=True)

    def wait_api_versions(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Seconds from spawn until the client listener answers ApiVersions."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                api_versions(self.port)
                return time.monotonic() - self.started_at
            except (OSError, ValueError):
                time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not answer ApiVersions within {timeout_s:.0f} s\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.proc = None
            raise RuntimeError(f"{self.name} exited with {code}\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, reaped."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> Optional[float]:
        """SIGTERM and wait: seconds until it exited, None if it had to be SIGKILLed after `timeout_s`."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
            took: Optional[float] = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            took = None
        self.proc = None
        return took

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def metadata_dir(self) -> Path:
        return self.data_dir / "__cluster_metadata"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_lines_since(self, marker_count: int = 0) -> List[str]:
        return self.log_path.read_text(errors="replace").splitlines()[marker_count:]

    def unfenced_since_spawn(self) -> bool:
        """True once this incarnation logged that the controller unfenced it (it registered and caught up)."""
        text = self.log_path.read_text(errors="replace")
        return "the controller unfenced this broker" in text[text.rfind("==== bench-controller: start"):]


def stop_together(nodes: List[Node], timeout_s: float = STOP_TIMEOUT_S) -> List[Optional[float]]:
    """SIGTERM all at once (a cluster stopped one node at a time loses its quorum for the last ones' controlled
    shutdown); seconds until each exited, None where it had to be SIGKILLed after `timeout_s`."""
    t0 = time.monotonic()
    for n in nodes:
        if n.proc is not None:
            n.proc.send_signal(signal.SIGTERM)
    took: List[Optional[float]] = []
    for n in nodes:
        if n.proc is None:
            took.append(0.0)
            continue
        try:
            n.proc.wait(timeout=max(0.1, t0 + timeout_s - time.monotonic()))
            took.append(time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()
            took.append(None)
        n.proc = None
    return took


def combined_props(node_id: int, port: int, controller_port: int, voters: str) -> Dict[str, str]:
    """A `broker,controller` node of a static quorum, as docs/configuration.md shows (defaults elsewhere)."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    }


class Fleet:
    """Every node this script started, so that one `stop_all` ends them whatever happened."""

    def __init__(self, root: Path):
        self.root = root
        self.nodes: List[Node] = []
        self._cluster_id: Optional[str] = None

    def cluster_id(self) -> str:
        if self._cluster_id is None:
            out = subprocess.run([str(SLUICE_BIN), "storage", "random-uuid"], capture_output=True, text=True,
                                 timeout=30, check=True)
            self._cluster_id = out.stdout.strip()
        return self._cluster_id

    def single(self, name: str) -> Node:
        """The embedded single node (a quorum of one that formats itself)."""
        port = free_port()
        node = Node(self.root / name, name, {"listeners": f"PLAINTEXT://127.0.0.1:{port}"}, port)
        self.nodes.append(node)
        node.spawn()
        node.wait_api_versions()
        return node

    def cluster(self, name: str, size: int = 3) -> List[Node]:
        """`size` combined nodes, ids 1..size, formatted and started at once; returns when all are listed."""
        ids = list(range(1, size + 1))
        ports = {i: free_port() for i in ids}
        cports = {i: free_port() for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{cports[i]}" for i in ids)
        nodes = [Node(self.root / name / f"node-{i}", f"{name}/node-{i}",
                      combined_props(i, ports[i], cports[i], voters), ports[i]) for i in ids]
        for n in nodes:
            n.format(self.cluster_id())
        self.nodes.extend(nodes)
        for n in nodes:
            n.spawn()
        for n in nodes:
            n.wait_api_versions()
        wait_all_listed(nodes, size)
        return nodes

    def split(self, name: str, brokers: int) -> Tuple[Node, List[Node]]:
        """A controller-only voter (quorum of one, id 1) and `brokers` broker-only observers (ids 2, 3, ...)."""
        cport = free_port()
        common = {"controller.quorum.voters": f"1@127.0.0.1:{cport}", "controller.listener.names": "CONTROLLER",
                  "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"}
        controller = Node(self.root / name / "controller", f"{name}/controller",
                          {**common, "process.roles": "controller", "node.id": "1",
                           "listeners": f"CONTROLLER://127.0.0.1:{cport}"}, None)
        observers = []
        for i in range(2, brokers + 2):
            port = free_port()
            observers.append(Node(self.root / name / f"broker-{i}", f"{name}/broker-{i}",
                                  {**common, "process.roles": "broker", "node.id": str(i),
                                   "listeners": f"PLAINTEXT://127.0.0.1:{port}"}, port))
        for n in [controller, *observers]:
            n.format(self.cluster_id())
            self.nodes.append(n)
            n.spawn()
        for n in observers:
            n.wait_api_versions()
        wait_all_listed(observers, brokers)
        return controller, observers

    def stop_all(self) -> None:
        """SIGTERM every running node at once, then SIGKILL whatever has not exited after 30 s."""
        running = [n for n in self.nodes if n.proc is not None]
        for n in running:
            try:
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


# --- wire helpers ----------------------------------------------------------------------------------------------


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _request(port: int, api_key: int, version: int, body: bytes, timeout_s: float) -> memoryview:
    """One request (header v1) on a fresh connection; the response after its correlation id."""
    client_id = b"bench-controller"
    header = struct.pack(">hhih", api_key, version, 7, len(client_id)) + client_id
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", _recv_exact(s, 4))[0]
        payload = _recv_exact(s, size)
    if struct.unpack_from(">i", payload)[0] != 7:
        raise ValueError("correlation id mismatch")
    return memoryview(payload)[4:]


def api_versions(port: int) -> None:
    resp = _request(port, 18, 0, b"", 2.0)
    if struct.unpack_from(">h", resp)[0] != 0:
        raise ValueError("ApiVersions error")


class TopicView:
    __slots__ = ("partitions", "with_leader", "leaders")

    def __init__(self) -> None:
        self.partitions = 0
        self.with_leader = 0
        self.leaders: Dict[int, int] = {}  # broker id -> partitions it leads


def metadata(port: int, topics: Optional[List[str]] = None, timeout_s: float = 10.0
             ) -> Tuple[List[int], Dict[str, TopicView]]:
    """Metadata v1 sent to this broker: (broker ids, {topic: partitions, partitions with a leader})."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(
            struct.pack(">h", len(t.encode())) + t.encode() for t in topics)
    r = _request(port, 3, 1, body, timeout_s)
    off = 0

    def i16() -> int:
        nonlocal off
        v = struct.unpack_from(">h", r, off)[0]
        off += 2
        return v

    def i32() -> int:
        nonlocal off
        v = struct.unpack_from(">i", r, off)[0]
        off += 4
        return v

    def string() -> Optional[str]:
        nonlocal off
        n = i16()
        if n < 0:
            return None
        v = bytes(r[off:off + n]).decode()
        off += n
        return v

    brokers = []
    for _ in range(i32()):
        brokers.append(i32())
        string()
        i32()
        string()
    i32()  # controller id: the answering broker, not the Raft leader
    result: Dict[str, TopicView] = {}
    for _ in range(i32()):
        i16()
        name = string() or ""
        off += 1  # is_internal
        view = TopicView()
        for _ in range(i32()):
            err = i16()
            i32()
            leader = i32()
            replicas = i32()
            off += 4 * replicas
            isr = i32()
            off += 4 * isr
            view.partitions += 1
            if err == 0 and leader >= 0:
                view.with_leader += 1
                view.leaders[leader] = view.leaders.get(leader, 0) + 1
        result[name] = view
    return sorted(brokers), result


def all_led(port: int, expected: Dict[str, int]) -> bool:
    """True when this broker's Metadata lists every expected topic with all its partitions led."""
    try:
        _, topics = metadata(port, list(expected) if len(expected) <= 20 else None, timeout_s=30)
    except (OSError, ValueError, struct.error):
        return False
    return all(t in topics and topics[t].partitions == n and topics[t].with_leader == n
               for t, n in expected.items())


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, poll_s: float = 0.02,
               nodes: Optional[List[Node]] = None) -> float:
    """Polls `check` until true; seconds waited. Raises with the nodes' log tails on timeout or a node's exit."""
    t0 = time.monotonic()
    while True:
        for n in nodes or []:
            n.check_alive()
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            tails = "\n".join(f"--- {n.name} ---\n{n.log_tail()}" for n in nodes or [])
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")
        time.sleep(poll_s)


def wait_all_listed(nodes: List[Node], brokers: int, timeout_s: float = START_TIMEOUT_S) -> float:
    def check() -> bool:
        try:
            return all(len(metadata(n.port, [])[0]) == brokers for n in nodes if n.port)
        except (OSError, ValueError, struct.error):
            return False

    return wait_until(f"{brokers} brokers listed", check, timeout_s, 0.05, nodes)


def describe_quorum(bootstrap: str) -> dict:
    """kafka-python's DescribeQuorum: {leader_id, leader_epoch, high_watermark, current_voters: [...]}."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-controller",
                             request_timeout_ms=10_000)
    try:
        return admin.describe_metadata_quorum()["topics"][0]["partitions"][0]
    finally:
        admin.close()


def quorum_settled(nodes: List[Node]) -> Optional[int]:
    """The leader's id when every voter is at the leader's log end and every broker lists all brokers."""
    try:
        q = describe_quorum(",".join(n.bootstrap for n in nodes))
    except Exception:  # noqa: BLE001 - kafka-python raises many kinds while an election runs
        return None
    leader = q.get("leader_id", -1)
    voters = {v["replica_id"]: v["log_end_offset"] for v in q.get("current_voters", [])}
    if leader < 0 or len(voters) != len(nodes) or len(set(voters.values())) != 1:
        return None
    try:
        if any(len(metadata(n.port, [])[0]) != len(nodes) for n in nodes):
            return None
    except (OSError, ValueError, struct.error):
        return None
    return leader


def admin_for(nodes: List[Node]) -> AdminClient:
    return AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in nodes), "socket.timeout.ms": 10000})


def create_topic(admin: AdminClient, name: str, partitions: int, rf: int, timeout_s: float = 120.0) -> None:
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf)],
                                  request_timeout=timeout_s, operation_timeout=0)
    futures[name].result(timeout=timeout_s + 5)


# --- measurements ----------------------------------------------------------------------------------------------


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_time(line: str) -> Optional[float]:
    """The UTC timestamp that starts a tracing line, as seconds since the epoch."""
    try:
        return dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    except (ValueError, IndexError):
        return None


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def file_size(path: Path) -> Optional[int]:
    try:
        return path.stat().st_size
    except OSError:
        return None


def partition_dirs(node: Node, prefix: str) -> int:
    try:
        return sum(1 for d in os.listdir(node.data_dir) if d.startswith(prefix))
    except OSError:
        return 0


def mib(kib_or_bytes: float, unit_kib: bool = False) -> str:
    return f"{kib_or_bytes / (1024 if unit_kib else 1024 * 1024):.1f} MiB"


def human(n: Optional[int]) -> str:
    if n is None:
        return "absent"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.2f} MiB"


def warm_memory(root: Path, size_gib: float) -> None:
    """Writes and deletes ~size_gib GiB so the page cache and the machine's memory are warm before measuring."""
    path = root / "warm.bin"
    chunk = b"\xa5" * (8 << 20)
    t0 = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(int(size_gib * 1024 / 8)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    print(f"warmed memory: wrote and deleted {size_gib:.1f} GiB in {time.monotonic() - t0:.1f} s", flush=True)


class Report:
    """Rows of (measure, result), printed as a Markdown table at the end (and as they come)."""

    def __init__(self) -> None:
        self.rows: List[Tuple[str, str]] = []

    def add(self, measure: str, result: str) -> None:
        self.rows.append((measure, result))
        print(f"  {measure}: {result}", flush=True)

    def table(self) -> str:
        lines = ["| measure | result |", "|---|---|"]
        lines += [f"| {m} | {r} |" for m, r in self.rows]
        return "\n".join(lines)


def bench_failover(nodes: List[Node], rounds: int, report: Report) -> None:
    print(f"\n== 1. failover: SIGKILL of the active controller, {rounds} rounds (load {load()})", flush=True)
    times: List[float] = []
    elections: List[float] = []
    rejoins: List[float] = []
    for r in range(1, rounds + 1):
        leader = wait_until_value("a settled quorum", lambda: quorum_settled(nodes), 120, nodes)
        victim = next(n for n in nodes if n.node_id == leader)
        said = [l for l in victim.log_lines_since() if "active controller" in l]
        if not said or "now the active controller" not in said[-1]:
            print(f"  warning: DescribeQuorum names node {leader}, whose log does not say it is the active controller",
                  flush=True)
        survivors = [n for n in nodes if n is not victim]
        # A client that is already connected, to the survivors only, as an application's admin would be.
        admin = admin_for(survivors)
        admin.list_topics(timeout=10)
        log_marks = {n.name: len(n.log_lines_since()) for n in survivors}
        attempts: List[str] = []
        killed_wall = time.time()
        killed = time.monotonic()
        victim.kill()
        took = None
        while time.monotonic() - killed < FAILOVER_TIMEOUT_S:
            name = f"failover-{r}-{len(attempts)}"
            t = time.monotonic()
            try:
                create_topic(admin, name, 1, 1, timeout_s=15)
                took = time.monotonic() - killed
                attempts.append(f"sent +{t - killed:.2f}s: ok +{took:.2f}s")
                break
            except KafkaException as e:
                attempts.append(f"sent +{t - killed:.2f}s: {e.args[0].name()} +{time.monotonic() - killed:.2f}s")
            except Exception as e:  # noqa: BLE001 - the future's own timeout
                attempts.append(f"sent +{t - killed:.2f}s: {type(e).__name__} +{time.monotonic() - killed:.2f}s")
            time.sleep(0.01)
        # When did the new leader say so? (its log, wall clock; same machine, so comparable with the kill)
        elected = None
        for n in survivors:
            for line in n.log_lines_since(log_marks[n.name]):
                if "now the active controller" in line:
                    ts = log_time(line)
                    if ts is not None:
                        elected = ts - killed_wall
                    break
        if took is None:
            raise RuntimeError(f"round {r}: no CreateTopics succeeded within {FAILOVER_TIMEOUT_S:.0f} s "
                               f"of killing node {leader}: {attempts}")
        times.append(took)
        if elected is not None:
            elections.append(elected)
        print(f"  round {r}: killed node {leader}; new leader logged at +{elected if elected is not None else -1:.2f}s; "
              f"CreateTopics ok at +{took:.2f}s; attempts: {'; '.join(attempts)}", flush=True)
        del admin
        # Rejoined: this incarnation is registered and unfenced, every voter at the leader's log end, every
        # broker listed. The new incarnation's BrokerRegistration is refused (DUPLICATE_BROKER_REGISTRATION, as
        # Kafka's) until the killed incarnation's session (broker.session.timeout.ms) expires and fences it.
        victim.spawn()
        victim.wait_api_versions()
        wait_until("the restarted node to be unfenced", victim.unfenced_since_spawn, 120, 0.05, nodes)
        now = wait_until_value("the restarted node to rejoin", lambda: quorum_settled(nodes), 120, nodes)
        rejoins.append(time.monotonic() - victim.started_at)
        print(f"  round {r}: node {leader} restarted, unfenced and caught up after {rejoins[-1]:.2f}s "
              f"(leader now {now})", flush=True)
    med = statistics.median(times)
    report.add(f"failover: SIGKILL of the active controller -> CreateTopics accepted ({rounds} rounds)",
               f"min {min(times):.2f} / median {med:.2f} / max {max(times):.2f} s; goal < {FAILOVER_GOAL_S:.0f} s: "
               f"{'met' if max(times) < FAILOVER_GOAL_S else 'NOT met' if med >= FAILOVER_GOAL_S else 'met at the median, not at the max'}")
    if elections:
        report.add("failover: SIGKILL -> new leader logs 'now the active controller'",
                   f"min {min(elections):.2f} / median {statistics.median(elections):.2f} / max {max(elections):.2f} s")
    report.add("failover: killed node restarted -> unfenced and caught up",
               f"min {min(rejoins):.2f} / median {statistics.median(rejoins):.2f} / max {max(rejoins):.2f} s")


def wait_until_value(what: str, get: Callable[[], Optional[int]], timeout_s: float, nodes: List[Node]) -> int:
    box: List[int] = []

    def check() -> bool:
        v = get()
        if v is None:
            return False
        box.append(v)
        return True

    wait_until(what, check, timeout_s, 0.2, nodes)
    return box[-1]


def bench_create(nodes: List[Node], partitions: int, rf: int, topic: str, label: str, report: Report) -> None:
    admin = admin_for(nodes)
    admin.list_topics(timeout=10)
    t0 = time.monotonic()
    create_topic(admin, topic, partitions, rf)
    returned = time.monotonic() - t0
    led: Dict[str, float] = {}
    on_disk: Optional[float] = None
    deadline = t0 + LARGE_WAIT_TIMEOUT_S
    while len(led) < len(nodes) or on_disk is None:
        for n in nodes:
            if n.name not in led and all_led(n.port, {topic: partitions}):
                led[n.name] = time.monotonic() - t0
            n.check_alive()
        # Every partition's log exists on some broker (its leader's; see the per-broker counts for followers).
        if on_disk is None and sum(partition_dirs(n, f"{topic}-") for n in nodes) >= partitions:
            on_disk = time.monotonic() - t0
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: not every broker listed/created {topic} within {LARGE_WAIT_TIMEOUT_S} s: "
                               f"led {led}, on disk {on_disk}")
        time.sleep(0.02)
    time.sleep(1)
    dirs = [partition_dirs(n, f"{topic}-") for n in nodes]
    report.add(f"CreateTopics {partitions} partitions RF {rf}, {label}: call returns", f"{returned:.2f} s")
    report.add(f"CreateTopics {partitions} partitions RF {rf}, {label}: every broker's Metadata lists all led",
               f"{max(led.values()):.2f} s (per broker: {', '.join(f'{v:.2f}' for v in led.values())})")
    report.add(f"CreateTopics {partitions} partitions RF {rf}, {label}: partition log dirs (per broker)",
               f"{sum(dirs)} of {partitions * rf} replicas ({'/'.join(map(str, dirs))}); "
               f"every partition has one after {on_disk:.2f} s")


def create_many(nodes: List[Node], total: int, rf: int, prefix: str) -> Tuple[float, Dict[str, int]]:
    """Topics of PARTITIONS_PER_TOPIC partitions (one CreateTopics each) totalling `total`; seconds taken."""
    admin = admin_for(nodes)
    admin.list_topics(timeout=10)
    expected: Dict[str, int] = {}
    t0 = time.monotonic()
    left, i = total, 0
    while left > 0:
        n = min(PARTITIONS_PER_TOPIC, left)
        name = f"{prefix}-{i:03d}"
        create_topic(admin, name, n, rf, timeout_s=300)
        expected[name] = n
        left -= n
        i += 1
    return time.monotonic() - t0, expected


def wait_logs(nodes: List[Node], expected: Dict[str, int], prefix: str) -> Tuple[float, Dict[int, int]]:
    """Waits until every broker has a log dir for each partition it leads; (seconds, {broker: partitions led})."""
    _, view = metadata(nodes[0].port)
    leads: Dict[int, int] = {}
    for t in expected:
        for b, c in view[t].leaders.items():
            leads[b] = leads.get(b, 0) + c
    took = wait_until("every leader's partition logs on disk",
                      lambda: all(partition_dirs(n, prefix) >= leads.get(n.node_id, 0) for n in nodes),
                      LARGE_WAIT_TIMEOUT_S, 0.1, nodes)
    return took, leads


def quorum_files(node: Node) -> str:
    d = node.metadata_dir()
    return (f"quorum.log {human(file_size(d / 'quorum.log'))}, quorum.snapshot {human(file_size(d / 'quorum.snapshot'))}, "
            f"quorum.state {human(file_size(d / 'quorum.state'))}; __cluster_metadata {human(dir_size(d))}")


def bench_many_partitions(nodes: List[Node], total: int, rf: int, label: str,
                          report: Report) -> None:
    print(f"\n== {label}: {total} partitions RF {rf} (load {load()})", flush=True)
    rss0 = {n.name: n.rss_kib() for n in nodes}
    fds0 = {n.name: n.open_files() for n in nodes}
    took, expected = create_many(nodes, total, rf, "many")
    led = wait_until(f"all {total} partitions led on every broker",
                     lambda: all(all_led(n.port, expected) for n in nodes), LARGE_WAIT_TIMEOUT_S, 0.2, nodes)
    # Metadata lists a partition as soon as its record is applied; its leader creates the log after that, in
    # the background. Memory is read once every leader has all its logs.
    logs, leads = wait_logs(nodes, expected, "many-")
    time.sleep(2)  # let what follows a log's creation (checkpoints) settle before reading RSS
    rss1 = {n.name: n.rss_kib() for n in nodes}
    fds1 = {n.name: n.open_files() for n in nodes}
    report.add(f"{label}: create {total} partitions RF {rf} ({len(expected)} CreateTopics in a row)",
               f"{took:.2f} s; then all led on every broker after {led:.2f} s more")
    report.add(f"{label}: every leader has created its partition logs",
               f"{took + led + logs:.2f} s after the first CreateTopics was sent")
    for n in nodes:
        report.add(f"{label}: {n.name} RSS before -> after (open files)",
                   f"{mib(rss0[n.name], True)} -> {mib(rss1[n.name], True)} (+{mib(rss1[n.name] - rss0[n.name], True)}); "
                   f"fds {fds0[n.name]} -> {fds1[n.name]}")
    report.add(f"{label}: partition log dirs per broker",
               "/".join(str(partition_dirs(n, "many-")) for n in nodes)
               + f" (each hosts {total * rf // len(nodes)} replicas; leads {'/'.join(str(leads.get(n.node_id, 0)) for n in nodes)})")
    first = nodes[0]
    report.add(f"{label}: {first.name} metadata files", quorum_files(first))
    report.add(f"{label}: {first.name} data dir (all partition logs)", human(dir_size(first.data_dir)))

    # Clean restart: SIGTERM all, then start all and time until each answers Metadata with everything led.
    stopped = stop_together(nodes, LARGE_WAIT_TIMEOUT_S)
    report.add(f"{label}: clean shutdown (SIGTERM -> exit, all nodes at once)",
               ", ".join(f"SIGKILLed after {STOP_TIMEOUT_S:.0f} s" if s is None else f"{s:.2f} s" for s in stopped))
    for n in nodes:
        n.spawn()
    answered: Dict[str, float] = {}
    ready: Dict[str, float] = {}
    t0 = time.monotonic()
    while len(ready) < len(nodes):
        for n in nodes:
            n.check_alive()
            if n.name not in answered:
                try:
                    api_versions(n.port)
                    answered[n.name] = time.monotonic() - n.started_at
                except (OSError, ValueError):
                    continue
            if n.name not in ready and all_led(n.port, expected):
                ready[n.name] = time.monotonic() - n.started_at
        if time.monotonic() - t0 > LARGE_WAIT_TIMEOUT_S:
            raise RuntimeError(f"{label}: restart not ready within {LARGE_WAIT_TIMEOUT_S} s: answered {answered}, "
                               f"ready {ready}\n" + "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in nodes))
        time.sleep(0.05)
    report.add(f"{label}: start-up after clean restart: ApiVersions answered",
               ", ".join(f"{v:.2f} s" for v in answered.values()))
    report.add(f"{label}: start-up after clean restart: Metadata lists all {total} partitions led",
               ", ".join(f"{v:.2f} s" for v in ready.values()))
    time.sleep(2)
    report.add(f"{label}: RSS after restart", ", ".join(mib(n.rss_kib(), True) for n in nodes))


def bench_image_memory(fleet: Fleet, total: int, brokers: int, report: Report) -> None:
    print(f"\n== 3c. metadata image memory on a controller-only node, {total} partitions RF 1 over {brokers} "
          f"broker-only nodes (load {load()})", flush=True)
    controller, observers = fleet.split("split", brokers)
    everyone = [controller, *observers]
    rss0 = {n.name: n.rss_kib() for n in everyone}
    took, expected = create_many(observers, total, 1, "img")
    wait_until("all partitions led", lambda: all(all_led(n.port, expected) for n in observers),
               LARGE_WAIT_TIMEOUT_S, 0.2, everyone)
    wait_logs(observers, expected, "img-")
    time.sleep(2)
    rss1 = {n.name: n.rss_kib() for n in everyone}
    c = controller.name
    report.add(f"3c. controller-only node (image + Raft log, no partitions): RSS before -> after {total} partitions",
               f"{mib(rss0[c], True)} -> {mib(rss1[c], True)} (+{mib(rss1[c] - rss0[c], True)}, "
               f"{(rss1[c] - rss0[c]) * 1024 / total:.0f} B per partition)")
    for n in observers:
        report.add(f"3c. {n.name} (image + {partition_dirs(n, 'img-')} partition logs): RSS",
                   f"{mib(rss0[n.name], True)} -> {mib(rss1[n.name], True)} (+{mib(rss1[n.name] - rss0[n.name], True)})")
    report.add("3c. controller-only node: metadata files", quorum_files(controller))
    stop_together(observers, LARGE_WAIT_TIMEOUT_S)  # first, so their controlled shutdown has a controller
    controller.stop()


def main() -> int:
    global NOFILE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 200 and 2,000 partitions")
    parser.add_argument("--rounds", type=int, help="failover rounds (default 5, --quick 2)")
    parser.add_argument("--skip-cluster-10k", action="store_true", help="no 10,000-partition RF 3 cluster run")
    parser.add_argument("--no-warm", action="store_true", help="skip writing/deleting 2 GB first")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, data) at the end")
    parser.add_argument("--single-partitions", type=int,
                        help="partitions on the single node (default 10,000, or fewer if the open-files limit "
                             "cannot hold their logs)")
    parser.add_argument("--nofile", type=int, default=NOFILE,
                        help=f"open-files limit of the nodes (default {NOFILE}; 0 keeps the inherited one)")
    args = parser.parse_args()
    NOFILE = args.nofile
    rounds = args.rounds or (2 if args.quick else 5)
    big = 200 if args.quick else 1000
    many = 2000 if args.quick else 10_000
    if not SLUICE_BIN.is_file():
        print(f"{SLUICE_BIN} not found: cargo build --release -p sluice-cli, or set SLUICE_BIN", file=sys.stderr)
        return 2

    # SIGTERM/SIGHUP end the run like Ctrl-C, through the `finally` that stops the nodes.
    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-controller-"))
    fleet = Fleet(root)
    report = Report()
    failed = True
    started = utc_now()
    loads = [load()]
    print(f"bench-controller: {SLUICE_BIN}, temp dir {root}, started {started}, load {loads[0]}", flush=True)
    try:
        if not args.no_warm:
            warm_memory(root, 2.0)
        cluster = fleet.cluster("cluster")
        limits = Path(f"/proc/{cluster[0].pid}/limits").read_text().splitlines()
        nofile = int(next(l for l in limits if l.startswith("Max open files")).split()[3])
        # 3 open files per partition log plus slack for sockets and the metadata log.
        fits = (nofile - 1000) // 3 // 1000 * 1000
        single_many = args.single_partitions or min(many, fits)
        print(f"nodes' open-files limit {nofile}: at most ~{fits} partition logs per node", flush=True)
        if single_many < many:
            print(f"  single node: {single_many} partitions, not {many} (--single-partitions {many} shows what "
                  f"happens past the limit: the node takes its log dir offline)", flush=True)
        bench_failover(cluster, rounds, report)
        loads.append(load())

        print(f"\n== 2. CreateTopics {big} partitions (load {load()})", flush=True)
        wait_until_value("a settled quorum", lambda: quorum_settled(cluster), 120, cluster)
        bench_create(cluster, big, 3, "big-rf3", "3-node cluster", report)
        single = fleet.single("single")
        bench_create([single], big, 1, "big-rf1", "single node", report)
        single.stop()
        stop_together(cluster)
        loads.append(load())

        single = fleet.single("single-many")
        bench_many_partitions([single], single_many, 1, "3a. single node", report)
        single.stop(LARGE_WAIT_TIMEOUT_S)
        loads.append(load())
        bench_image_memory(fleet, many, max(1, -(-many // fits)), report)
        loads.append(load())
        if not args.skip_cluster_10k:
            cluster = fleet.cluster("cluster-many")
            wait_until_value("a settled quorum", lambda: quorum_settled(cluster), 120, cluster)
            bench_many_partitions(cluster, many, 3, "3b. 3-node cluster", report)
            loads.append(load())
        failed = False
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({e}); stopping the nodes", file=sys.stderr)
        return 130
    finally:
        fleet.stop_all()
        if args.keep or failed:
            print(f"kept {root} (node logs: */server.log)", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nbench-controller {started} -> {utc_now()}, binary {SLUICE_BIN}")
    print(f"load average (1/5/15 min) at each phase: {' | '.join(loads)}\n")
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
