"""kafka-python's own integration tests, taken from the sdist of the installed version (PyPI ships its `test/`
tree), for modules that run them unchanged against Sluice: the sdist is downloaded once with pip into
`target/kafka-python-sdist/` and checked against its SHA-256, and a test module of it is imported with its
integration conftest. Two files those import are not in the sdist: `test/__init__.py` (the package is made here
from the directory) and `test/service.py` (the subprocess wrapper for a real Kafka; a stub that refuses to spawn
anything stands in).

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

#: SHA-256 of each kafka-python sdist this module may run (from PyPI). A new kafka-python version in
#: requirements.txt needs its hash here: check that its test functions still fit a Sluice cluster when adding it.
SDIST_SHA256 = {
    "3.0.12": "4ccda3616b9aa5c353d74a97f2770d6cd1b950890d77ab0e8890e09a48eeed65",
}
KAFKA_PYTHON_VERSION = kafka.__version__
CACHE_DIR = REPO_ROOT / "target" / "kafka-python-sdist"

os.environ.setdefault("KAFKA_VERSION", os.environ.get("SLUICE_KAFKA_VERSION", "3.8"))


def sdist_tree(version: str) -> Path:
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
        if (tree / "test" / "integration" / "conftest.py").is_file():
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


def import_kafka_python_tests(tree: Path, module: str):
    """Imports kafka-python's integration conftest and `test/integration/<module>.py` as `test.integration.*` from
    the sdist tree; returns (conftest module, test module). The `test` package entries are taken out of
    `sys.modules` afterwards (the functions keep their globals), so the standard library's `test` package is not
    shadowed."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "test" or name.startswith("test.")}
    for name in saved:
        del sys.modules[name]
    package = types.ModuleType("test")
    package.__path__ = [str(tree / "test")]
    sys.modules["test"] = package
    sys.modules["test.service"] = _service_stub()
    pytest.register_assert_rewrite(f"test.integration.{module}")
    try:
        suite_conftest = importlib.import_module("test.integration.conftest")
        suite = importlib.import_module(f"test.integration.{module}")
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
