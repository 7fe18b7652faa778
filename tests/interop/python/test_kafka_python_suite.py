"""kafka-python's OWN integration tests for the replication admin APIs, run unchanged against a 3-broker Sluice cluster.

Issue 9 asks that kafka-python's `test_elect_leaders`, `test_alter_partition_reassignments`,
`test_list_partition_reassignments`, `test_describe_log_dirs` and `test_alter_replica_log_dirs` pass against a
3-broker cluster. They are not copied here: the kafka-python sdist on PyPI ships its `test/` tree, so this module
(through `kafka_python_sdist.py`)

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

from pathlib import Path

import pytest

from kafka_python_sdist import CACHE_DIR, KAFKA_PYTHON_VERSION, import_kafka_python_tests, sdist_tree
from test_cluster import Cluster

#: The kafka-python test functions that issue 9 names (all in test/integration/test_admin_integration.py).
SUITE_TESTS = (
    "test_elect_leaders",
    "test_alter_partition_reassignments",
    "test_list_partition_reassignments",
    "test_describe_log_dirs",
    "test_alter_replica_log_dirs",
)

_suite_conftest, _suite = import_kafka_python_tests(sdist_tree(KAFKA_PYTHON_VERSION), "test_admin_integration")

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
