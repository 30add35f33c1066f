"""Shared fixtures: a real redis-server per session (pytest-redis, free port), a clean
database per test, and helpers to poll for a condition with a deadline."""

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
import redis
from redis.cluster import RedisCluster

from harness.processes import wait_for
from harness.redis_server import EPHEMERAL, LocalCluster, RedisServer
from pipeline_core.connection import ENCODING_ERRORS

T = TypeVar("T")


def require_tool(tool: str, package: str) -> str:
    """The tool's path. Without it: skip locally, but fail under CI, where a skip would
    hide the tests that need it."""
    path = shutil.which(tool)
    if path:
        return path
    message = f"{tool} is not on PATH (make setup installs Debian's {package} with apt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_module(module: str, package: str) -> None:
    """Like require_tool, for a Python package of the dev extra (make setup)."""
    if importlib.util.find_spec(module) is not None:
        return
    message = f"{module} is not installed (make setup installs {package} from PyPI)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_redis_server() -> None:
    require_tool("redis-server", "redis-server")


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Kill what a failed or timed-out test left running (its teardown may not run)."""
    yield
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """TEST_REDIS_URL if set, else a private redis-server that pytest-redis starts."""
    if url := os.environ.get("TEST_REDIS_URL"):
        return url
    require_redis_server()
    process = request.getfixturevalue("redis_proc")
    return f"redis://{process.host}:{process.port}/0"


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A decoded client on an empty database."""
    client = redis.Redis.from_url(
        redis_url, decode_responses=True, encoding_errors=ENCODING_ERRORS
    )  # as pipeline_core.connection.connect() decodes
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One local Redis Cluster (3 masters, each with a replica) for every cluster
    test of the run."""
    require_tool("redis-cli", "redis-server")
    require_redis_server()
    started = LocalCluster(tmp_path_factory.mktemp("cluster"), replicas=1).start()
    yield started
    started.stop()


@pytest.fixture
def rc(cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A decoded cluster client on an empty cluster."""
    cluster.flush()
    client = cluster.client()
    yield client
    client.close()


def eventually(
    check: Callable[[], T], timeout_s: float = 5.0, every_s: float = 0.01
) -> T:
    """Call check until it returns something truthy; fail the test after timeout_s."""
    try:
        return wait_for(check, timeout_s, every_s)
    except TimeoutError as error:
        pytest.fail(f"condition {error}")


@pytest.fixture
def own(tmp_path: Path) -> Iterator[redis.Redis]:
    """A private Redis to break (maxmemory, replication, its data directory)."""
    require_redis_server()
    server = RedisServer(
        tmp_path / "redis", EPHEMERAL, extra=["--enable-protected-configs", "yes"]
    ).start()
    client = server.client()
    yield client
    client.close()
    server.kill()
