"""Broker fixture for the Python interop suites: starts `sluice server` on a free loopback port.

Every test that needs a broker gets its own process (`broker` fixture) with its own data directory, so the
suites can run in parallel (pytest-xdist) without sharing state. The process is started as

    $SLUICE_BIN server --override listeners=PLAINTEXT://127.0.0.1:<port>
                       --override advertised.listeners=PLAINTEXT://127.0.0.1:<port>
                       --override log.dirs=<tmp dir>

and is considered ready when it answers an ApiVersions request on that port. It is stopped with SIGTERM
(SIGKILL if it does not exit in time) when the test ends, and the kernel kills it if the test process dies
(PR_SET_PDEATHSIG), so no broker is ever left running. `Broker.restart()` (clean) and
`Broker.restart(kill=True)` (SIGKILL) reuse the same data directory and port for durability tests.

`SLUICE_BIN` defaults to `target/debug/sluice`; `./test.sh` points it at the release build.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

#: How long a broker may take to start answering (seconds).
START_TIMEOUT_S = 30.0
#: How long a SIGTERM'd broker may take to shut down cleanly before it is killed (seconds).
STOP_TIMEOUT_S = 30.0

_PR_SET_PDEATHSIG = 1


def sluice_bin() -> Path:
    """The broker binary under test: `$SLUICE_BIN`, else `target/debug/sluice` in the repo."""
    path = Path(os.environ.get("SLUICE_BIN") or REPO_ROOT / "target" / "debug" / "sluice")
    if not path.is_file():
        pytest.fail(
            f"broker binary {path} not found: build it (cargo build -p sluice-cli) or set SLUICE_BIN",
            pytrace=False,
        )
    return path


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process has not handed out before:
    a cluster picks every node's ports before the nodes bind them, and the kernel may offer a port twice meanwhile
    (two nodes of one cluster were given the same listener port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _die_with_parent() -> None:
    """preexec_fn: the broker gets SIGKILL when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def api_versions(host: str, port: int, timeout_s: float = 5.0) -> Dict[int, Tuple[int, int]]:
    """Sends ApiVersions v0 over a raw socket and returns {api_key: (min_version, max_version)}.

    Raises OSError / ValueError when the broker does not answer with a well-formed v0 response.
    """
    client_id = b"sluice-pytest"
    correlation_id = 0x5EED
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(s, 4))[0]
        if size < 10 or size > 1 << 20:
            raise ValueError(f"ApiVersions response size {size} is implausible")
        payload = _recv_exact(s, size)
    got_correlation, error_code, count = struct.unpack(">ihi", payload[:10])
    if got_correlation != correlation_id:
        raise ValueError(f"correlation id {got_correlation} != {correlation_id}")
    if error_code != 0:
        raise ValueError(f"ApiVersions error code {error_code}")
    if count < 0 or 10 + 6 * count > len(payload):
        raise ValueError(f"ApiVersions array count {count} does not fit the {len(payload)} byte response")
    versions = {}
    for i in range(count):
        key, vmin, vmax = struct.unpack(">hhh", payload[10 + 6 * i : 16 + 6 * i])
        versions[key] = (vmin, vmax)
    return versions


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class Broker:
    """One `sluice server` process on 127.0.0.1:<port> with data in `data_dir`."""

    def __init__(self, data_dir: Path, log_path: Path, overrides: Optional[Dict[str, str]] = None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_overrides = dict(overrides or {})
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        """`host:port` for `bootstrap.servers`."""
        return f"{self.host}:{self.port}"

    def command(self) -> List[str]:
        listener = f"PLAINTEXT://{self.host}:{self.port}"
        overrides = {
            "listeners": listener,
            "advertised.listeners": listener,
            "log.dirs": str(self.data_dir),
            **self.extra_overrides,
        }
        cmd = [str(sluice_bin()), "server"]
        for key, value in overrides.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    def start(self) -> "Broker":
        """Starts the broker and waits until it answers ApiVersions; on a port clash picks another port."""
        assert self.proc is None, "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_ready()
                self.starts += 1
                return self
            except _PortClash:
                if self.starts > 0 or attempt == 2:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        log = open(self.log_path, "ab")
        log.write(f"\n==== start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir.parent,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Optional[BaseException] = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                tail = self.log_tail()
                if "address already in use" in tail.lower() or "addrinuse" in tail.lower():
                    raise _PortClash(tail)
                raise AssertionError(f"sluice server exited with {code} during start-up:\n{tail}")
            try:
                api_versions(self.host, self.port, timeout_s=2.0)
                return
            except (OSError, ValueError) as e:
                last_error = e
                time.sleep(0.05)
        self.kill()
        raise AssertionError(
            f"sluice server did not answer ApiVersions on {self.bootstrap} within {START_TIMEOUT_S}s "
            f"(last error: {last_error}):\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> Optional[int]:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL. Returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, with no chance to flush or write a clean-shutdown marker."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self, kill: bool = False) -> Optional[int]:
        """Stops (SIGTERM, or SIGKILL with kill=True) and starts again on the same data dir and port.

        Returns the exit code of the stopped process (None after a SIGKILL).
        """
        if kill:
            self.kill()
            code = None
        else:
            code = self.stop()
        self.start()
        return code

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def api_versions(self) -> Dict[int, Tuple[int, int]]:
        """The broker's advertised API version ranges."""
        return api_versions(self.host, self.port)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])


class _PortClash(Exception):
    pass


def stop_all(brokers: Iterable["Broker"]) -> None:
    """Stops brokers in parallel: SIGCONT (a test may have paused one) and SIGTERM to every running one, then waits
    for each. A cluster's last nodes cannot finish a controlled shutdown once the quorum is gone (they wait
    `CONTROLLED_SHUTDOWN_WAIT`); stopping them one by one would pay that wait per node."""
    brokers = list(brokers)
    for b in brokers:
        if b.proc is not None and b.proc.poll() is None:
            try:
                os.kill(b.proc.pid, signal.SIGCONT)
                b.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
    for b in brokers:
        b.stop()


@pytest.fixture
def broker_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """Returns `make(overrides=None) -> Broker` (started); every broker made is stopped after the test."""
    brokers: List[Broker] = []

    def make(overrides: Optional[Dict[str, str]] = None) -> Broker:
        n = len(brokers)
        b = Broker(tmp_path / f"data-{n}", tmp_path / f"broker-{n}.log", overrides)
        brokers.append(b)
        return b.start()

    yield make

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for b in brokers:
        code = b.stop()
        if failed:
            print(f"---- broker log {b.log_path} (last lines) ----\n{b.log_tail()}")
        if code not in (0, None) and not failed:
            print(f"note: broker on {b.bootstrap} exited with {code} on SIGTERM")


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A running broker with default settings, private to this test."""
    return broker_factory()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test (valid under Kafka's naming rules)."""
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in request.node.name)[:180]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Records each phase's report on the item so fixtures can tell whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
