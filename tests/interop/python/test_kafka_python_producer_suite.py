"""kafka-python's OWN producer integration tests for idempotence and transactions, run unchanged against one
Sluice broker: `test_transactional_producer_messages` and `test_transactional_producer_offsets` (issue 10 names
them), and `test_idempotent_producer_max_in_flight` (issue 10 reports it failing intermittently), plus the other
idempotent-producer tests of the same file.

The sdist's `test/integration/test_producer_integration.py` and conftest are imported as `kafka_python_sdist.py`
describes; the one fixture that starts a Kafka, `kafka_broker`, is supplied here: a Sluice broker with
`num.partitions=4` (what kafka-python's own fixture configures: the offsets test commits partition 1 of a topic
the producer auto-creates), wrapped in kafka-python's `KafkaFixture`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Broker
from kafka_python_sdist import CACHE_DIR, KAFKA_PYTHON_VERSION, import_kafka_python_tests, sdist_tree

SUITE_TESTS = (
    "test_idempotent_producer",
    "test_idempotent_producer_max_in_flight",
    "test_idempotent_producer_high_throughput",
    "test_transactional_producer_messages",
    "test_transactional_producer_offsets",
)

_suite_conftest, _suite = import_kafka_python_tests(sdist_tree(KAFKA_PYTHON_VERSION), "test_producer_integration")

# kafka-python's fixtures, as its conftest defines them.
kafka_producer_factory = _suite_conftest.kafka_producer_factory
kafka_consumer_factory = _suite_conftest.kafka_consumer_factory
kafka_admin_client_factory = _suite_conftest.kafka_admin_client_factory
topic = _suite_conftest.topic

# kafka-python's tests, as its test_producer_integration.py defines them.
test_idempotent_producer = _suite.test_idempotent_producer
test_idempotent_producer_max_in_flight = _suite.test_idempotent_producer_max_in_flight
test_idempotent_producer_high_throughput = _suite.test_idempotent_producer_high_throughput
test_transactional_producer_messages = _suite.test_transactional_producer_messages
test_transactional_producer_offsets = _suite.test_transactional_producer_offsets


class SluiceBrokerFixture(_suite_conftest.KafkaFixture):
    """kafka-python's `KafkaFixture` for a running Sluice broker: its client-side methods as they are; nothing to
    start or stop."""

    def __init__(self, broker: Broker, partitions: int):
        # KafkaFixture.__init__ would look for a Kafka distribution; only what its client-side methods read is set.
        self.broker = broker
        self.external = True
        self.running = True
        self.child = None
        self.tmp_dir = None
        self.zookeeper = None
        self.host = "127.0.0.1"
        self.port = broker.port
        self.broker_id = 1
        self.transport = "PLAINTEXT"
        self.sasl_mechanism = None
        self.ssl_dir = None
        self.replicas = 1
        self.partitions = partitions

    def bootstrap_server(self) -> str:
        return self.broker.bootstrap

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """One Sluice broker for the module's tests, with kafka-python's fixture's 4 partitions per new topic."""
    tmp = tmp_path_factory.mktemp("kafka-python-producer-suite")
    broker = Broker(tmp / "data", tmp / "broker.log", {"num.partitions": "4"}).start()
    try:
        yield SluiceBrokerFixture(broker, partitions=4)
    finally:
        broker.stop()


@pytest.fixture(autouse=True)
def _broker_log_on_failure(request: pytest.FixtureRequest):
    """Prints the broker's log tail after a failed kafka-python test."""
    yield
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed and "kafka_broker" in request.fixturenames:
        print(request.getfixturevalue("kafka_broker").broker.log_tail())


def test_suite_is_kafka_pythons_own():
    """The collected functions are the sdist's, for the installed kafka-python, and none is skipped."""
    assert Path(_suite.__file__).is_relative_to(CACHE_DIR / f"kafka_python-{KAFKA_PYTHON_VERSION}")
    for name in SUITE_TESTS:
        fn = globals()[name]
        assert fn is getattr(_suite, name)
        for mark in getattr(fn, "pytestmark", []):
            assert not (mark.name == "skipif" and mark.args and mark.args[0]), f"{name} would be skipped: {mark}"
