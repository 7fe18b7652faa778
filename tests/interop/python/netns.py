"""Private networks of Linux network namespaces for partition tests: one namespace per node, all on one bridge.

    root namespace (the test process)        node namespaces
    bridge slb<tag>  10.A.B.254/24  ---+--- slv<tag>1 <-veth-> eth0 10.A.B.1/24   (sluice-<tag>-1)
                                       +--- slv<tag>2 <-veth-> eth0 10.A.B.2/24   (sluice-<tag>-2)
                                       +--- slv<tag>3 <-veth-> eth0 10.A.B.3/24   (sluice-<tag>-3)

Every node reaches every other node and the test process reaches every node through the bridge. `cut(i)` sets the
bridge side of node i's veth down: its packets to and from the other nodes are then dropped silently (connects
hang, established connections stop delivering), as a pulled cable; processes inside the namespace still reach the
node at its own address, so a client started there with `exec_argv(i)` is "a client on the minority side". For the
test process alone the cut node is also made unreachable by a route (connects fail at once with EHOSTUNREACH), so
that clients on the majority side, which pick brokers at random, do not sit out connection timeouts. `heal(i)` undoes
both. Only iproute2 is needed (no iptables or nft, which a clean Debian machine lacks).

Names and subnets are unique while their owner lives: `<tag>` is the owner's pid and a counter (`<pid hex>x<n
hex>`, so link names stay within Linux's 15 characters), and the /24 is chosen under a file lock among those no
route of this machine uses, then taken at once by the bridge's address, so parallel workers (pytest-xdist) never
clash. `destroy()` deletes everything `create()` and `cut()` made, even after a half-made `create()`; `sweep_stale()`
deletes what a killed test run (whose pid is gone) left behind.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

#: Lock held while choosing a subnet and creating its bridge, and while sweeping stale networks.
LOCK_PATH = Path(tempfile.gettempdir()) / "sluice-netns.lock"
#: Subnets are 10.<second>.<third>.0/24 with the second octet in this range (rarely used by real networks).
SECOND_OCTETS = range(200, 250)
#: The bridge's (the test process's) host number in every subnet.
HOST_OCTET = 254

_NAME = re.compile(r"^(?:sluice-|slb|slv)([0-9a-f]+)x([0-9a-f]+)(?:-?\d+)?$")
_counter = itertools.count()
_skip_reason: Optional[str] = None
_probed = False


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `ip <args>`; with `check`, a failure raises with ip's own message."""
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return out


class NetnsError(Exception):
    """An `ip` command failed."""


def skip_reason() -> Optional[str]:
    """Why namespace tests cannot run here (not root, no iproute2, namespaces/veth/bridges refused), or None.

    Probed once per process by making and deleting a namespace, a bridge and a veth pair.
    """
    global _skip_reason, _probed
    if _probed:
        return _skip_reason
    _probed = True
    if os.geteuid() != 0:
        _skip_reason = "network namespace tests need root (ip netns add)"
    elif shutil.which("ip") is None:
        _skip_reason = "iproute2 (`ip`) is not installed"
    else:
        tag = _new_tag()
        ns, bridge, veth = f"sluice-{tag}-0", f"slb{tag}", f"slv{tag}0"
        try:
            _ip("netns", "add", ns)
            _ip("link", "add", bridge, "type", "bridge")
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        except (NetnsError, OSError, subprocess.SubprocessError) as e:
            _skip_reason = f"network namespaces, bridges or veth pairs are not available here: {e}"
        finally:
            _ip("link", "del", veth, check=False)
            _ip("link", "del", bridge, check=False)
            _ip("netns", "del", ns, check=False)
    return _skip_reason


def _new_tag() -> str:
    return f"{os.getpid():x}x{next(_counter) % 256:x}"


class _Lock:
    """An exclusive flock on LOCK_PATH (shared by every process on the machine)."""

    def __enter__(self) -> "_Lock":
        self.fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> List[str]:
    """Deletes the namespaces and links of networks whose owner process is gone; returns what it deleted."""
    deleted = []
    with _Lock():
        links = _ip("-o", "link", "show", check=False).stdout
        link_names = [m.group(1).split("@")[0] for m in re.finditer(r"^\d+: ([^:]+):", links, re.M)]
        namespaces = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line]
        for name in link_names + namespaces:
            m = _NAME.match(name)
            if m is None or _pid_alive(int(m.group(1), 16)):
                continue
            kind = "netns" if name.startswith("sluice-") else "link"
            if _ip(kind, "del", name, check=False).returncode == 0:
                deleted.append(name)
        # Routes of cuts whose bridge (the only holder of an address in their subnet) is gone.
        addresses = _ip("-4", "-o", "addr", "show", check=False).stdout
        for m in re.finditer(r"^unreachable (10\.(\d+)\.(\d+)\.\d+) ", _ip(
                "-4", "route", "show", "type", "unreachable", check=False).stdout + "\n", re.M):
            subnet = f"10.{m.group(2)}.{m.group(3)}."
            if int(m.group(2)) in SECOND_OCTETS and f" {subnet}{HOST_OCTET}/" not in addresses:
                if _ip("route", "del", "unreachable", f"{m.group(1)}/32", check=False).returncode == 0:
                    deleted.append(f"route unreachable {m.group(1)}")
    return deleted


class Network:
    """`size` namespaces on one bridge (see the module doc). Use as a context manager or call create/destroy."""

    def __init__(self, size: int = 3):
        assert 1 <= size <= 9, "one digit per node in link names"
        self.size = size
        self.tag = _new_tag()
        self.bridge = f"slb{self.tag}"
        self.prefix: Optional[str] = None  # "10.A.B"
        self._made_namespaces: List[str] = []
        self._made_links: List[str] = []
        self._routes: List[str] = []  # unreachable /32 routes of cut nodes, in the root namespace

    # Names and addresses -------------------------------------------------------------------------------------------

    def netns(self, node: int) -> str:
        return f"sluice-{self.tag}-{node}"

    def host_veth(self, node: int) -> str:
        """The bridge side of node `node`'s veth pair (in the root namespace)."""
        return f"slv{self.tag}{node}"

    def node_ip(self, node: int) -> str:
        assert self.prefix is not None, "create() first"
        return f"{self.prefix}.{node}"

    @property
    def host_ip(self) -> str:
        assert self.prefix is not None, "create() first"
        return f"{self.prefix}.{HOST_OCTET}"

    def exec_argv(self, node: int) -> List[str]:
        """Prefix that runs a command inside node `node`'s namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns(node)]

    # Life cycle ----------------------------------------------------------------------------------------------------

    def __enter__(self) -> "Network":
        try:
            return self.create()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc) -> None:
        self.destroy()

    def create(self) -> "Network":
        with _Lock():
            self.prefix = self._free_prefix()
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made_links.append(self.bridge)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for node in range(1, self.size + 1):
            ns, veth = self.netns(node), self.host_veth(node)
            _ip("netns", "add", ns)
            self._made_namespaces.append(ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._made_links.append(veth)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.node_ip(node)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def destroy(self) -> None:
        """Deletes the veth pairs, namespaces and bridge (whatever of them exists). Stop the processes running in
        the namespaces first: a namespace lives on while a process is inside it. Raises if something remains."""
        errors = []
        for ip in list(self._routes):
            out = _ip("route", "del", "unreachable", f"{ip}/32", check=False)
            if out.returncode != 0 and f"unreachable {ip} " in _ip("route", "show", "type", "unreachable").stdout + " ":
                errors.append(f"route unreachable {ip}: {out.stderr.strip()}")
        self._routes.clear()
        for veth in [l for l in self._made_links if l != self.bridge]:
            _ip("link", "del", veth, check=False)  # also deletes the peer inside the namespace
        for ns in self._made_namespaces:
            out = _ip("netns", "del", ns, check=False)
            if out.returncode != 0 and ns in _ip("netns", "list", check=False).stdout.split():
                errors.append(f"netns {ns}: {out.stderr.strip()}")
        if self.bridge in self._made_links:
            out = _ip("link", "del", self.bridge, check=False)
            if out.returncode != 0 and _ip("link", "show", self.bridge, check=False).returncode == 0:
                errors.append(f"bridge {self.bridge}: {out.stderr.strip()}")
        self._made_namespaces.clear()
        self._made_links.clear()
        if errors:
            raise NetnsError("could not delete: " + "; ".join(errors))

    def _free_prefix(self) -> str:
        """A 10.A.B prefix that no address or route of this machine falls in (call with the lock held)."""
        used = _ip("-4", "route", "show", "table", "all", check=False).stdout
        used += _ip("-4", "-o", "addr", "show", check=False).stdout
        taken = set(re.findall(r"\b10\.(\d+)\.(\d+)\.\d+", used))
        rng = random.Random(f"{os.getpid()}-{self.tag}-{os.urandom(4).hex()}")
        for _ in range(1000):
            a, b = rng.choice(SECOND_OCTETS), rng.randrange(256)
            if (str(a), str(b)) not in taken:
                return f"10.{a}.{b}"
        raise NetnsError("no free 10.x.y.0/24 subnet")

    # Faults --------------------------------------------------------------------------------------------------------

    def cut(self, node: int) -> None:
        """Cuts node `node` off the other nodes (its veth's bridge side down: packets dropped, nothing refused) and
        off the test process (unreachable at once)."""
        _ip("link", "set", self.host_veth(node), "down")
        ip = self.node_ip(node)
        if ip not in self._routes:
            _ip("route", "add", "unreachable", f"{ip}/32")
            self._routes.append(ip)

    def heal(self, node: int) -> None:
        """Reconnects node `node`."""
        ip = self.node_ip(node)
        if ip in self._routes:
            _ip("route", "del", "unreachable", f"{ip}/32")
            self._routes.remove(ip)
        _ip("link", "set", self.host_veth(node), "up")

    def pids(self, node: int) -> List[int]:
        """Processes running in node `node`'s namespace."""
        out = _ip("netns", "pids", self.netns(node), check=False).stdout
        return [int(p) for p in out.split()]

    def describe(self) -> Dict[str, str]:
        return {"bridge": self.bridge, "subnet": f"{self.prefix}.0/24", "namespaces": ",".join(
            self.netns(i) for i in range(1, self.size + 1))}
