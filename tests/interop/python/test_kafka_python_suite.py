"""kafka-python's OWN integration tests for the replication admin APIs, run unchanged against a 3-broker Sluice cluster.

Issue 9 asks that kafka-python's `test_elect_leaders`, `test_alter_partition_reassignments`,
`test_list_partition_reassignments`, `test_describe_log_dirs` and `test_alter_replica_log_dirs` pass against a
3-broker cluster. They are not copied here: the kafka-python sdist on PyPI ships its `test/` tree, so this module

1. downloads the sdist of the installed kafka-python version with pip (`pip download --no-binary :all: --no-deps`,
   into `target/kafka-python-sdist/`, once; PyPI is reachable from CI, GitHub is not) and checks its SHA-256;
2. imports kafka-python's `test/integration/test_admin_integration.py` and its `test/integration/conftest.py`
   fixtures (`kafka_admin_client`, `kafka_admin_client_factory`, `topic`) from there, bodies untouched;
3. supplies the one fixture that starts a Kafka, `kafka_broker`, itself: a 3-node Sluice cluster (test_cluster's
   `Cluster`: every node broker+controller), wrapped in a subclass of kafka-python's own `KafkaFixture` so that
   kafka-python's `create_topics` and `client_params` work as they do against a real broker.

kafka-python's integration tests run only with `KAFKA_VERSION` set (their conftest skips them otherwise, and their
`skipif` markers compare it with each API's first Kafka release); it is also the `api_version` their clients are
given, a cap on the negotiated versions. It is set here to the Kafka release Sluice claims (`SLUICE_KAFKA_VERSION`,
default 3.8, as in test_kafka_python.py) unless already set. Topics get 4 partitions and replication factor 3:
the tests assume that every broker holds partition 0 (AlterReplicaLogDirs on the first broker that DescribeLogDirs
lists; a reassignment to all brokers), which with 3 brokers means RF 3.

Two files that kafka-python's fixtures import are not in the sdist: `test/__init__.py` (the package is made here
from the directory, and removed from `sys.modules` afterwards so the standard library's `test` stays importable)
and `test/service.py` (the subprocess wrapper for a real Kafka; a stub that refuses to spawn anything stands in).

kafka-python is Copyright Dana Powers, David Arthur and contributors, Apache License 2.0
(https://github.com/dpkp/kafka-python); nothing of it is vendored into this repository.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import kafka
import pytest

from conftest import REPO_ROOT
from test_cluster import Cluster

#: SHA-256 of each kafka-python sdist this module may run (from PyPI). A new kafka-python version in
#: requirements.txt needs its hash here: check that its test functions still fit a Sluice cluster when adding it.
SDIST_SHA256 = {
    "3.0.12": "4ccda3616b9aa5c353d74a97f2770d6cd1b950890d77ab0e8890e09a48eeed65",
}
KAFKA_PYTHON_VERSION = kafka.__version__
CACHE_DIR = REPO_ROOT / "target" / "kafka-python-sdist"

#: The kafka-python test functions that issue 9 names (all in test/integration/test_admin_integration.py).
SUITE_TESTS = (
    "test_elect_leaders",
    "test_alter_partition_reassignments",
    "test_list_partition_reassignments",
    "test_describe_log_dirs",
    "test_alter_replica_log_dirs",
)

os.environ.setdefault("KAFKA_VERSION", os.environ.get("SLUICE_KAFKA_VERSION", "3.8"))


def _sdist_tree(version: str) -> Path:
    """The extracted sdist (its `kafka_python-<version>/` directory), downloaded and unpacked on first use.
    Concurrent pytest-xdist workers serialise on a lock file; the tree appears by an atomic rename."""
    want_sha = SDIST_SHA256.get(version)
    if want_sha is None:
        raise RuntimeError(
            f"kafka-python {version} is installed but {__file__} knows no sdist hash for it: add it to SDIST_SHA256"
        )
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tree = CACHE_DIR / f"kafka_python-{version}"
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (tree / "test" / "integration" / "test_admin_integration.py").is_file():
            return tree
        archive = CACHE_DIR / f"kafka_python-{version}.tar.gz"
        if not archive.is_file() or _sha256(archive) != want_sha:
            archive.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", f"kafka-python=={version}", "--no-binary", ":all:",
                   "--no-deps", "--disable-pip-version-check", "-q", "-d", str(CACHE_DIR)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if out.returncode != 0 or not archive.is_file():
                raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        got_sha = _sha256(archive)
        if got_sha != want_sha:
            raise RuntimeError(f"{archive}: SHA-256 {got_sha}, expected {want_sha}")
        staging = Path(tempfile.mkdtemp(dir=CACHE_DIR, prefix=".extract-"))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
            shutil.rmtree(tree, ignore_errors=True)
            os.rename(staging / tree.name, tree)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return tree


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import_kafka_python_tests(tree: Path):
    """Imports kafka-python's integration conftest and admin tests as `test.integration.*` from the sdist tree;
    returns (conftest module, test module). The `test` package entries are taken out of `sys.modules` afterwards
    (the functions keep their globals), so the standard library's `test` package is not shadowed."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "test" or name.startswith("test.")}
    for name in saved:
        del sys.modules[name]
    package = types.ModuleType("test")
    package.__path__ = [str(tree / "test")]
    sys.modules["test"] = package
    sys.modules["test.service"] = _service_stub()
    pytest.register_assert_rewrite("test.integration.test_admin_integration")
    try:
        suite_conftest = importlib.import_module("test.integration.conftest")
        suite = importlib.import_module("test.integration.test_admin_integration")
    finally:
        for name in [n for n in sys.modules if n == "test" or n.startswith("test.")]:
            del sys.modules[name]
        sys.modules.update(saved)
    return suite_conftest, suite


def _service_stub() -> types.ModuleType:
    """Stands in for kafka-python's test/service.py (not in the sdist), which runs a real Kafka or ZooKeeper."""
    stub = types.ModuleType("test.service")

    class _NoService:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("kafka-python's own Kafka/ZooKeeper processes are not used: Sluice is the broker")

    stub.ExternalService = _NoService
    stub.SpawnedService = _NoService
    return stub


_suite_conftest, _suite = _import_kafka_python_tests(_sdist_tree(KAFKA_PYTHON_VERSION))

# kafka-python's fixtures, as its conftest defines them.
kafka_admin_client = _suite_conftest.kafka_admin_client
kafka_admin_client_factory = _suite_conftest.kafka_admin_client_factory
topic = _suite_conftest.topic

# kafka-python's tests, as its test_admin_integration.py defines them.
test_elect_leaders = _suite.test_elect_leaders
test_alter_partition_reassignments = _suite.test_alter_partition_reassignments
test_list_partition_reassignments = _suite.test_list_partition_reassignments
test_describe_log_dirs = _suite.test_describe_log_dirs
test_alter_replica_log_dirs = _suite.test_alter_replica_log_dirs


class SluiceClusterFixture(_suite_conftest.KafkaFixture):
    """kafka-python's `KafkaFixture` for a running Sluice cluster: its `_enrich_client_params` (used by
    `client_params` and `create_topics`) as it is, with the cluster's bootstrap list; nothing to start or stop."""

    def __init__(self, cluster: Cluster, replicas: int, partitions: int):
        # KafkaFixture.__init__ would look for a Kafka distribution; only what its client-side methods read is set.
        first = next(iter(cluster.nodes.values()))
        self.cluster = cluster
        self.external = True
        self.running = True
        self.child = None
        self.tmp_dir = None
        self.zookeeper = None
        self.host = first.host
        self.port = first.port
        self.broker_id = next(iter(cluster.nodes))
        self.transport = "PLAINTEXT"
        self.sasl_mechanism = None
        self.ssl_dir = None
        self.replicas = replicas
        self.partitions = partitions

    def bootstrap_server(self) -> str:
        return self.cluster.bootstrap()

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """What kafka-python's `kafka_broker` fixture gives its tests (a `KafkaFixture`, 4 partitions per topic), for a
    3-node Sluice cluster; topics get replication factor 3 so that every broker holds every partition."""
    cluster = Cluster(tmp_path_factory.mktemp("kafka-python-suite")).start()
    try:
        yield SluiceClusterFixture(cluster, replicas=3, partitions=4)
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _cluster_logs_on_failure(request: pytest.FixtureRequest):
    """Prints the nodes' log tails after a failed kafka-python test."""
    yield
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed and "kafka_broker" in request.fixturenames:
        print(request.getfixturevalue("kafka_broker").cluster.log_tails())


def test_suite_is_kafka_pythons_own():
    """The collected functions are the sdist's, for the installed kafka-python, and none is skipped."""
    assert Path(_suite.__file__).is_relative_to(CACHE_DIR / f"kafka_python-{KAFKA_PYTHON_VERSION}")
    for name in SUITE_TESTS:
        fn = globals()[name]
        assert fn is getattr(_suite, name)
        for mark in getattr(fn, "pytestmark", []):
            assert not (mark.name == "skipif" and mark.args and mark.args[0]), f"{name} would be skipped: {mark}"
