"""Security against real processes: Redis users of k8s/base/redis-acl (least privilege,
checked with ACL DRYRUN and live), bearer tokens, no secret in any output, and TLS."""

import http.cookiejar
import json
import re
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher.app import create_app
from dispatcher.auth import fingerprint
from dispatcher.settings import Settings
from harness.processes import ROOT, Service, free_port, http_ok
from harness.redis_server import RedisServer
from pipeline_core.keys import Queue
from pipeline_core.partitions import parts
from pipeline_core.redis_settings import RedisSettings
from pipeline_core.sending import Sender, SenderSettings
from pipeline_core.timing import make_timing
from pipeline_core.wire import stream_entries
from tests.conftest import eventually, require_redis_server
from tests.factories import drained, make_worker

pytestmark = pytest.mark.timeout(90)

ACL_DIR = ROOT / "k8s" / "base" / "redis-acl"
USERS = ("dispatcher", "consumer", "operator", "producer", "replication", "sentinel")
TOKEN = "tok-" + "7" * 28
ADMIN = "admin-only-in-this-test"

# (user, command, allowed): what each role may and may not do.
MATRIX = [
    ("dispatcher", "XADD tasks * task demo payload {}", True),
    ("dispatcher", "XINFO GROUPS tasks", True),
    ("dispatcher", "HGET {tasks}:results:1 1-0", True),
    ("dispatcher", "XLEN {tasks}:dead", True),
    ("dispatcher", "XADD {tasks}:dead * a 1", False),
    ("dispatcher", "XREADGROUP GROUP workers c COUNT 1 STREAMS tasks >", False),
    ("dispatcher", "XACK tasks workers 1-0", False),
    ("dispatcher", "HSET {tasks}:results:1 1-0 x", False),
    ("dispatcher", "DEL tasks", False),
    ("dispatcher", "INFO cluster", True),
    ("dispatcher", "TIME", True),
    ("dispatcher", "HMGET {tasks}:results:1 1-0 1-0:owner", True),
    ("dispatcher", "HGET tasks:results:1 1-0", False),  # the old, untagged names
    ("consumer", "HSET tasks:results:1 1-0 x", False),
    ("dispatcher", "FLUSHALL", False),
    # the console's additions: its reads, its throughput history, operators' actions
    ("dispatcher", "XREVRANGE {tasks}:dead + - COUNT 50", True),
    ("dispatcher", "XADD {tasks}:stats MAXLEN ~ 200 * dispatched 1", True),
    ("dispatcher", "XREVRANGE {tasks}:stats + 0 COUNT 200", True),
    ("dispatcher", "SET {tasks}:stats:lock 1 NX PX 4500", True),
    ("dispatcher", "SET tasks x", False),  # SET only on the lock: never over the stream
    ("dispatcher", "SET {tasks}:dead x", False),
    ("dispatcher", "XDEL {tasks}:dead 1-0", True),  # purge, and replay's script
    ("dispatcher", "XDEL tasks 1-0", False),
    ("dispatcher", "EVALSHA 0123 3 tasks {tasks}:dead {tasks}:audit 1-0 x", True),
    ("dispatcher", "EVALSHA 0123 2 {tasks}:dead {tasks}:audit 1-0", True),  # purge
    ("dispatcher", "HINCRBY {tasks}:audit dead_deleted 1", True),
    ("dispatcher", "HGET {tasks}:audit dead_deleted", True),
    ("dispatcher", "SET {tasks}:housekeeping:lock 1 NX PX 55000", True),
    ("dispatcher", "XTRIM {tasks}:dead MINID 1-0", True),  # trimming by age, scripted
    ("consumer", "HINCRBY {tasks}:audit dead_deleted 9", False),
    ("consumer", "HSET {tasks}:audit dead_deleted 9", False),
    ("consumer", "EVALSHA 0123 2 {tasks}:dead {tasks}:audit 1-0", False),
    ("dispatcher", "EVALSHA 0123 1 tasks workers c 3600000", True),  # safe prune
    # The task status and cancel scripts (their commands checked one by one):
    (
        "dispatcher",
        "EVALSHA 0 4 tasks {tasks}:dead {tasks}:results:1 {tasks}:cancels",
        True,
    ),
    ("dispatcher", "EVALSHA 0123 1 {tasks}:other", False),
    # Tasks for later: the send script (with the delayed set), the status and cancel
    # scripts over all their keys, the metrics' reads; no periodic schedules.
    (
        "dispatcher",
        "EVALSHA 0 4 tasks {tasks}:delayed {tasks}:delayed:tasks {tasks}:delayed:seq",
        True,
    ),
    (
        "dispatcher",
        "EVALSHA 0 7 tasks {tasks}:dead {tasks}:results:1 {tasks}:cancels "
        "{tasks}:delayed {tasks}:delayed:tasks {tasks}:cancelled",
        True,
    ),
    ("dispatcher", "ZCARD {tasks}:delayed", True),
    ("dispatcher", "ZADD {tasks}:cancelled 1 1-0", True),
    ("dispatcher", "HSET {tasks}:schedules tick 1", False),
    ("dispatcher", "HGETALL {tasks}:schedules", True),  # the console lists them
    ("dispatcher", "DEL {tasks}:delayed", False),
    ("dispatcher", "HSET {tasks}:results:1 1-0 forged", False),
    ("dispatcher", "ZADD {tasks}:cancels 1 1-0", True),
    ("dispatcher", "ZADD tasks 1 1-0", False),
    ("consumer", "ZMSCORE {tasks}:cancels 1-0", True),
    ("consumer", "ZREM {tasks}:cancels 1-0", True),
    ("consumer", "ZADD {tasks}:cancels 1 1-0", False),
    ("consumer", "EVALSHA 0 3 tasks {tasks}:dead {tasks}:results:1 w 1-0", True),
    ("dispatcher", "EVAL return 1 0", False),
    ("dispatcher", "SCRIPT LOAD return", True),
    ("dispatcher", "XGROUP DELCONSUMER tasks workers c", True),
    ("dispatcher", "XGROUP DESTROY tasks workers", False),
    ("dispatcher", "XGROUP SETID tasks workers 0", False),
    ("dispatcher", "XTRIM {tasks}:dead MAXLEN 0", True),  # detected, not refused
    ("dispatcher", "XTRIM tasks MAXLEN 0", False),
    ("dispatcher", "DEL {tasks}:dead", False),
    ("dispatcher", "XAUTOCLAIM tasks workers c 0 0-0", False),
    ("consumer", "XREADGROUP GROUP workers c COUNT 1 STREAMS tasks >", True),
    ("consumer", "XACK tasks workers 1-0", True),
    ("consumer", "XAUTOCLAIM tasks workers c 1000 0-0 COUNT 10", True),
    ("consumer", "XCLAIM tasks workers c 0 1-0 JUSTID", True),
    ("consumer", "XTRIM tasks MINID 1-0", True),
    ("consumer", "HSET {tasks}:results:1 1-0 x", True),
    ("consumer", "XADD {tasks}:dead * a 1", True),
    ("consumer", "EVALSHA 0123 2 tasks {tasks}:dead workers 1-0", True),
    # Its clock thread promotes delayed tasks and enqueues periodic ticks: it may add
    # tasks (docs/security.md), and touch the delayed set and schedules, no more.
    ("consumer", "XADD tasks * task demo payload {}", True),
    ("consumer", "TIME", True),
    ("consumer", "ZRANGEBYSCORE {tasks}:delayed -inf 1 LIMIT 0 10", True),
    ("consumer", "HSET {tasks}:schedules tick 1", True),
    (
        "consumer",
        "EVALSHA 0 3 {tasks}:delayed {tasks}:delayed:tasks tasks 500 p 60",
        True,
    ),
    ("consumer", "EVALSHA 0 2 {tasks}:schedules tasks n 1 2", True),
    ("consumer", "DEL {tasks}:delayed", False),
    ("consumer", "INCR {tasks}:delayed:seq", False),
    ("consumer", "ZADD {tasks}:cancelled 1 1-0", False),
    ("consumer", "XADD {tasks}:stats * a 1", False),
    ("consumer", "EXPIRE tasks 1", False),
    ("consumer", "EXPIRE {tasks}:results:1 60", True),
    ("consumer", "HSET tasks x y", False),
    ("consumer", "DEL {tasks}:results:1", False),
    # Arguments no ACL can refuse (docs/security.md; detected by alerts instead):
    ("consumer", "XADD {tasks}:dead MAXLEN 0 * a 1", True),
    ("consumer", "XGROUP CREATE tasks another 0", True),
    ("dispatcher", "XADD tasks MAXLEN 0 * task demo payload {}", True),
    ("consumer", "XTRIM {tasks}:dead MAXLEN 0", False),
    ("consumer", "XDEL {tasks}:dead 1-0", False),
    ("consumer", "XGROUP DELCONSUMER tasks workers c", False),
    ("consumer", "KEYS *", False),
    ("consumer", "CONFIG SET appendonly no", False),
    ("producer", "XADD tasks * task demo payload {}", True),
    ("producer", "EVALSHA 0 2 tasks {tasks}:idem:ab workers 10 1000 h", True),  # send
    (
        "producer",
        "EVALSHA 0 4 tasks {tasks}:dead {tasks}:results:1 {tasks}:cancels",
        True,
    ),
    ("producer", "ZADD {tasks}:cancels 1 1-0", True),
    (
        "producer",
        "EVALSHA 0 5 tasks {tasks}:delayed {tasks}:delayed:tasks {tasks}:delayed:seq "
        "{tasks}:idem:ab",
        True,
    ),
    ("producer", "HSET {tasks}:schedules tick 1", False),
    ("producer", "XREADGROUP GROUP workers c COUNT 1 STREAMS tasks >", False),
    ("producer", "XACK tasks workers 1-0", False),
    ("producer", "HSET {tasks}:results:1 1-0 forged", False),
    ("producer", "XADD {tasks}:dead * a 1", False),
    ("producer", "XDEL {tasks}:dead 1-0", False),
    ("producer", "XGROUP DELCONSUMER tasks workers c", False),
    ("producer", "HSET {tasks}:audit dead_deleted 1", False),
    ("operator", "XRANGE {tasks}:dead - +", True),
    ("operator", "XADD tasks * task demo payload {}", True),
    ("operator", "XGROUP DELCONSUMER tasks workers c", True),
    ("operator", "CONFIG GET appendonly", True),
    ("operator", "FLUSHALL", False),
    ("operator", "CONFIG SET appendonly no", False),
    ("operator", "SHUTDOWN", False),
    ("health", "PING", True),
    ("health", "GET x", False),
    # MIN_REPLICAS_ACKED: WAIT after each write; the send script through a pipeline.
    ("dispatcher", "WAIT 1 1000", True),
    ("dispatcher", "SCRIPT EXISTS 0123", True),
    ("dispatcher", "PEXPIRE {tasks}:idem:ab 1000", True),  # a replay, confirmed
    ("consumer", "WAIT 1 1000", False),
    # k8s/sentinel/: replicas sync, Sentinels watch and promote; nothing else.
    ("replication", "PSYNC ? -1", True),
    ("replication", "REPLCONF ACK 0", True),
    ("replication", "XRANGE tasks - +", False),
    ("replication", "XADD tasks * a 1", False),
    ("sentinel", "SLAVEOF NO ONE", True),
    ("sentinel", "CONFIG REWRITE", True),
    ("sentinel", "PUBLISH __sentinel__:hello x", True),
    ("sentinel", "CLIENT KILL TYPE normal", True),
    ("sentinel", "XRANGE tasks - +", False),
    ("sentinel", "CONFIG SET appendonly no", False),
    ("sentinel", "FLUSHALL", False),
    # PARTITIONS: each partition's keys carry its own tag, {tasks:<i>} or
    # {tasks:<i>.<n>} (docs/partitions.md), with the rights of the one-stream queue's
    # keys; nothing beyond ({tasks:x} is no partition, {tasks:0}:other no key of one).
    ("dispatcher", "XADD {tasks:0.20} * task demo payload {}", True),
    (
        "dispatcher",
        "EVALSHA 0 2 {tasks:3.2} {tasks:3.2}:idem:ab workers 10 1000 h",
        True,
    ),
    ("dispatcher", "XLEN {tasks:12.446}:dead", True),
    ("dispatcher", "XADD {tasks:0.20}:dead * a 1", False),
    ("dispatcher", "HSET {tasks:3.2}:results:1 1-0 forged", False),
    ("dispatcher", "XREADGROUP GROUP workers c COUNT 1 STREAMS {tasks:3.2} >", False),
    ("dispatcher", "XADD {tasks:x} * task demo payload {}", False),
    ("dispatcher", "HSET {tasks:0}:other a b", False),
    ("consumer", "XREADGROUP GROUP workers c COUNT 1 STREAMS {tasks:0.20} >", True),
    ("consumer", "EVALSHA 0 2 {tasks:0.20} {tasks:0.20}:dead workers 1-0", True),
    ("consumer", "HSET {tasks:3.2}:results:1 1-0 x", True),
    ("consumer", "XTRIM {tasks:0.20}:dead MAXLEN 0", False),
    ("consumer", "HSET {tasks:3.2}:idem:ab ids 1-0", False),
    ("consumer", "XADD {tasks:x}:dead * a 1", False),
    ("consumer", "XADD {other:0} * a 1", False),
    ("consumer", "XADD tasks:0 * a 1", False),
    (
        "producer",
        "EVALSHA 0 2 {tasks:5.19} {tasks:5.19}:idem:ab workers 10 1000 h",
        True,
    ),
    ("producer", "XACK {tasks:5.19} workers 1-0", False),
]


def render_acl(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """users.acl with a password per role, as the Redis pod's init container does."""
    passwords = {user: f"pw-{user}-{'x' * 20}" for user in USERS}
    directory = tmp_path / "passwords"
    directory.mkdir()
    for user, password in passwords.items():
        (directory / user).write_text(password)
    rendered = tmp_path / "users.acl"
    script = ACL_DIR / "render-acl.sh"
    subprocess.run(
        ["sh", str(script), str(ACL_DIR / "users.acl"), str(directory), str(rendered)],
        check=True,
    )
    return rendered, passwords


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, dict[str, str]]]:
    require_redis_server()
    rendered, passwords = render_acl(tmp_path)
    with rendered.open("a") as acl:  # a test-only admin, to run ACL DRYRUN
        acl.write(f"user admin on >{ADMIN} ~* &* +@all\n")
    server = RedisServer(tmp_path / "redis", extra=["--aclfile", str(rendered)])
    server.start()
    yield server, passwords
    server.kill()


def as_user(server: RedisServer, user: str, password: str) -> redis.Redis:
    return redis.Redis(
        port=server.port, username=user, password=password, decode_responses=True
    )


def test_rendered_acl_holds_hashes_never_passwords(tmp_path: Path) -> None:
    rendered, passwords = render_acl(tmp_path)
    text = rendered.read_text()
    assert not any(password in text for password in passwords.values())
    assert text.count(" on #") == len(USERS)
    assert "user default off" in text


def test_acl_dryrun_matrix_of_every_role(
    acl_redis: tuple[RedisServer, dict[str, str]],
) -> None:
    server, _ = acl_redis
    with as_user(server, "admin", ADMIN) as admin:
        for user, command, allowed in MATRIX:
            answer = admin.execute_command("ACL", "DRYRUN", user, *command.split())
            assert (answer == "OK") is allowed, (user, command, answer)


def test_default_user_is_off_and_roles_are_refused_live(
    acl_redis: tuple[RedisServer, dict[str, str]],
) -> None:
    server, passwords = acl_redis
    with (
        redis.Redis(port=server.port) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()
    with as_user(server, "consumer", passwords["consumer"]) as consumer:
        with pytest.raises(redis.exceptions.NoPermissionError):
            consumer.hset("{tasks}:idem:ab", "ids", "1-0")
        with pytest.raises(redis.exceptions.NoPermissionError):
            consumer.delete("{tasks}:dead")
    with as_user(server, "dispatcher", passwords["dispatcher"]) as dispatcher:
        with pytest.raises(redis.exceptions.NoPermissionError):
            dispatcher.xadd("{tasks}:dead", {"forged": "dead letter"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            dispatcher.flushall()


def post(url: str, body: object, token: str | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def task_state(url: str) -> str:
    request = urllib.request.Request(url)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["state"])


def refused_before_the_body(port: int) -> bool:
    """A POST without a token announcing 10 MB of body, none of it sent: the 401 must
    come back at once, the body never awaited."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            b"POST /dispatch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        return connection.recv(64).startswith(b"HTTP/1.1 401")


def secret_files(tmp_path: Path, secrets: dict[str, str]) -> Path:
    """A directory holding each secret in a file of its name, as Secrets are mounted."""
    files = tmp_path / "files"
    files.mkdir()
    for name, value in secrets.items():
        (files / name).write_text(value + "\n")
    return files


def test_services_work_end_to_end_with_their_own_users_and_leak_no_secret(
    acl_redis: tuple[RedisServer, dict[str, str]], tmp_path: Path
) -> None:
    server, passwords = acl_redis
    secrets = {**passwords, "token": TOKEN}
    files = secret_files(tmp_path, secrets)
    port, metrics_port = free_port(), free_port()
    common = {"REDIS_URL": server.url, "LOG_LEVEL": "DEBUG"}
    dispatcher = Service("dispatcher", common | {
        "PORT": str(port), "HOST": "127.0.0.1", "REDIS_USERNAME": "dispatcher",
        "REDIS_PASSWORD_FILE": str(files / "dispatcher"),
        "DISPATCH_TOKENS_FILE": str(files / "token"),
    }, tmp_path / "dispatcher.log")  # fmt: skip
    consumer = Service("consumer", common | {
        "REDIS_USERNAME": "consumer", "REDIS_PASSWORD_FILE": str(files / "consumer"),
        "METRICS_PORT": str(metrics_port), "METRICS_HOST": "127.0.0.1",
        "TASK_MODULES": "tests.e2e_tasks",
        "MAX_DELIVERIES": "1",
    }, tmp_path / "consumer.log")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    bodies: list[bytes] = []
    try:
        eventually(lambda: http_ok(f"{base}/healthz"), timeout_s=30)
        for token in (None, "wrong-token-of-enough-length", TOKEN[:-1]):
            status, body = post(f"{base}/dispatch", {"num_messages": 1}, token)
            assert status == 401
            bodies.append(body)
        status, body = post(f"{base}/dispatch", {"num_messages": 3}, TOKEN)
        assert status == 202
        status, failed = post(
            f"{base}/dispatch", {"task": "explode", "payloads": [{}]}, TOKEN
        )
        assert status == 202
        bodies += [body, failed]
        with as_user(server, "operator", passwords["operator"]) as operator:
            eventually(lambda: drained(operator, 4), timeout_s=30)
            assert operator.xlen("{tasks}:dead") == 1
        entry_id = json.loads(body)["entry_ids"][0]
        request = urllib.request.Request(f"{base}/results/{entry_id}")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read())["result"] == {"seq": 0}
        assert get_status(f"{base}/results/{entry_id}", None) == 401
        assert get_status(f"{base}/results/{entry_id}", "wrong-" + TOKEN) == 401
        assert refused_before_the_body(port)
        for url in (f"{base}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"):
            with urllib.request.urlopen(url, timeout=5) as answer:
                bodies.append(answer.read())
        assert b"dispatcher_unauthorized_requests_total 6.0" in bodies[-2]
        # The stream state reads with the dispatcher's own user (no permission lacks).
        assert b"pipeline_stream_state_up 1.0" in bodies[-2]
        assert b"pipeline_memory_budget_bytes" in bodies[-2]
        # Tasks for later, each service with its own user: the dispatcher's send
        # script and cancel, the consumer's promotion.
        later_ids = []
        for countdown in (0.2, 3600):
            status, later = post(
                f"{base}/dispatch", {"num_messages": 1, "countdown": countdown}, TOKEN
            )
            assert status == 202, later
            later_ids += json.loads(later)["task_ids"]
        soon, far = (f"{base}/tasks/{task_id}" for task_id in later_ids)
        eventually(lambda: task_state(soon) == "succeeded", timeout_s=30)
        assert task_state(far) == "delayed"
        request = urllib.request.Request(far, method="DELETE")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read())["state"] == "cancelled"
        assert task_state(far) == "cancelled"
    finally:
        dispatcher.stop()
        consumer.stop()
    outputs = [
        dispatcher.log_text(),
        consumer.log_text(),
        *(b.decode() for b in bodies),
    ]
    for name, secret in secrets.items():
        assert not any(secret in output for output in outputs), (
            f"the {name} secret leaked"
        )


def test_a_partitioned_queue_works_with_the_same_users_and_no_more(
    acl_redis: tuple[RedisServer, dict[str, str]], tmp_path: Path
) -> None:
    """PARTITIONS=3: the dispatcher, a consumer and a Python producer, each with its
    own user, on every partition's keys ({tasks:<i>...}); keys beside them refused."""
    server, passwords = acl_redis
    files = secret_files(tmp_path, {**passwords, "token": TOKEN})
    port = free_port()
    common = {"REDIS_URL": server.url, "PARTITIONS": "3", "LOG_LEVEL": "DEBUG"}
    dispatcher = Service("dispatcher", common | {
        "PORT": str(port), "HOST": "127.0.0.1", "REDIS_USERNAME": "dispatcher",
        "REDIS_PASSWORD_FILE": str(files / "dispatcher"), "DISPATCH_TOKENS": TOKEN,
    }, tmp_path / "dispatcher.log")  # fmt: skip
    consumer = Service("consumer", common | {
        "REDIS_USERNAME": "consumer", "REDIS_PASSWORD_FILE": str(files / "consumer"),
        "METRICS_PORT": "0", "TASK_MODULES": "tests.e2e_tasks", "MAX_DELIVERIES": "1",
    }, tmp_path / "consumer.log")  # fmt: skip
    queues = parts(Queue(partitions=3))
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: http_ok(f"{base}/healthz"), timeout_s=30)
        status, body = post(f"{base}/dispatch", {"num_messages": 6}, TOKEN)
        assert status == 202 and sorted(json.loads(body)["partitions"]) == [
            0,
            0,
            1,
            1,
            2,
            2,
        ]
        assert (
            post(f"{base}/dispatch", {"task": "explode", "payloads": [{}]}, TOKEN)[0]
            == 202
        )
        status, later = post(
            f"{base}/dispatch", {"num_messages": 1, "countdown": 0.2}, TOKEN
        )
        assert status == 202, later
        [later_id] = json.loads(later)["task_ids"]
        eventually(lambda: task_state(f"{base}/tasks/{later_id}") == "succeeded",
                   timeout_s=30)  # fmt: skip
        with as_user(server, "admin", ADMIN) as admin:
            eventually(lambda: sum(_read(admin, q.stream) for q in queues) == 8,
                       timeout_s=30)  # fmt: skip
            assert sum(admin.xlen(q.dead_letter_stream) for q in queues) == 1
        task_id = json.loads(body)["task_ids"][0]
        assert task_state(f"{base}/tasks/{task_id}") == "succeeded"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert "pipeline_stream_state_up 1.0" in metrics
        assert 'pipeline_group_lag{partition="2"} 0.0' in metrics
        with as_user(server, "consumer", passwords["consumer"]) as other:
            with pytest.raises(redis.exceptions.NoPermissionError):
                other.xadd("{tasks:x}:dead", {"forged": "dead letter"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                other.xtrim(queues[1].dead_letter_stream, maxlen=0)
    finally:
        dispatcher.stop()
        consumer.stop()
    settings = SenderSettings(
        redis=RedisSettings(url=server.url, username="producer",
                            password=passwords["producer"]),
        queue=Queue(partitions=3),
    )  # fmt: skip
    sender = Sender(settings)
    try:
        refs = sender.send_many("demo", [{"n": n} for n in range(3)])
        assert {ref.id[:3] for ref in refs} == {"p0-", "p1-", "p2-"}
        assert refs[0].status()["state"] == "queued"
        with pytest.raises(redis.exceptions.NoPermissionError):
            sender.client.hset("{tasks:0}:other", "a", "b")
    finally:
        sender.close()
    for log in (dispatcher.log_text(), consumer.log_text()):
        assert "noperm" not in log.lower()  # NOPERM, NoPermissionError, reason


def _read(client: redis.Redis, stream: str) -> int:
    """Entries the group finished on `stream` (-1 while any is pending)."""
    groups = client.xinfo_groups(stream) if client.exists(stream) else []
    if not groups:
        return 0
    return -1 if groups[0]["pending"] else int(groups[0]["entries-read"] or 0)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by openssl."""
    names = ("ca.key", "ca.crt", "server.key", "server.crt", "client.key", "client.crt")
    paths = {name: directory / name for name in names}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=test-ca", "-keyout", str(paths["ca.key"]),
            "-out", str(paths["ca.crt"]))  # fmt: skip
    for who in ("server", "client"):
        csr = directory / f"{who}.csr"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                "-keyout", str(paths[f"{who}.key"]), "-out", str(csr))  # fmt: skip
        extensions = directory / f"{who}.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        signed = str(paths[f"{who}.crt"])
        openssl("x509", "-req", "-in", str(csr), "-CA", str(paths["ca.crt"]),
                "-CAkey", str(paths["ca.key"]), "-CAcreateserial", "-days", "1",
                "-extfile", str(extensions), "-out", signed)  # fmt: skip
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, dict[str, Path]]]:
    require_redis_server()
    certs = make_certificates(tmp_path)
    server = RedisServer(tmp_path / "redis")
    server.options += ["--port", "0", "--tls-port", str(server.port),
                    "--tls-cert-file", str(certs["server.crt"]),
                    "--tls-key-file", str(certs["server.key"]),
                    "--tls-ca-cert-file", str(certs["ca.crt"]),
                    "--tls-auth-clients", "yes"]  # fmt: skip
    try:
        server.start()
    except TimeoutError:
        pytest.fail(
            "this redis-server does not speak TLS (built without BUILD_TLS=yes)"
        )
    server.url = f"rediss://127.0.0.1:{server.port}/0"
    yield server, certs
    server.kill()


def test_both_services_talk_to_redis_over_tls_with_a_client_certificate(
    tls_redis: tuple[RedisServer, dict[str, Path]], tmp_path: Path
) -> None:
    server, certs = tls_redis
    tls = {
        "REDIS_URL": server.url,
        "REDIS_CA_FILE": str(certs["ca.crt"]),
        "REDIS_CERT_FILE": str(certs["client.crt"]),
        "REDIS_KEY_FILE": str(certs["client.key"]),
    }
    port = free_port()
    local = {"PORT": str(port), "HOST": "127.0.0.1", "DISPATCH_ALLOW_ANONYMOUS": "1"}
    dispatcher = Service("dispatcher", tls | local, tmp_path / "dispatcher.log")
    consumer = Service(
        "consumer", tls | {"METRICS_PORT": "0"}, tmp_path / "consumer.log"
    )
    client = redis.Redis.from_url(
        server.url,
        ssl_ca_certs=str(certs["ca.crt"]),
        ssl_certfile=str(certs["client.crt"]),
        ssl_keyfile=str(certs["client.key"]),
        decode_responses=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: http_ok(f"{base}/readyz"), timeout_s=30)
        assert post(f"{base}/dispatch", {"num_messages": 5}, None)[0] == 202
        eventually(lambda: drained(client, 5), timeout_s=30)
        with pytest.raises(redis.ConnectionError):  # no client certificate: refused
            redis.Redis.from_url(server.url, ssl_ca_certs=str(certs["ca.crt"])).ping()
    finally:
        client.close()
        dispatcher.stop()
        consumer.stop()


class Browserless:
    """Just enough of a browser for the console: cookies, forms, CSRF tokens."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as answer:
            return str(answer.read().decode())

    def post(self, path: str, form: dict[str, str], csrf_from: str) -> str:
        token = re.search(r'name="csrf" value="([^"]+)"', self.get(csrf_from))
        assert token, csrf_from
        body = urllib.parse.urlencode({"csrf": token.group(1), **form}).encode()
        with self.opener.open(self.base + path, body, timeout=10) as answer:
            return str(answer.read().decode())


def test_console_acts_with_the_dispatcher_users_rights_alone(
    acl_redis: tuple[RedisServer, dict[str, str]], tmp_path: Path
) -> None:
    server, passwords = acl_redis
    (tmp_path / "password").write_text(passwords["dispatcher"])
    operator_token, key = "operator-" + "o" * 24, "k" * 40
    with as_user(server, "admin", ADMIN) as admin:
        for n in range(3):
            admin.xadd("{tasks}:dead", {"task": "demo", "payload": "{}",
                                        "error": f"boom {n}"})  # fmt: skip
        admin.xgroup_create("tasks", "workers", "0", mkstream=True)
        admin.xreadgroup("workers", "gone", {"tasks": ">"})  # a consumer, idle 0 s
        port = free_port()
        dispatcher = Service("dispatcher", {
            "REDIS_URL": server.url, "PORT": str(port), "HOST": "127.0.0.1",
            "REDIS_USERNAME": "dispatcher",
            "REDIS_PASSWORD_FILE": str(tmp_path / "password"), "DISPATCH_TOKENS": TOKEN,
            "OPERATOR_TOKENS": operator_token, "CONSOLE_SECRET_KEY": key,
        }, tmp_path / "dispatcher.log")  # fmt: skip
        try:
            browser = Browserless(f"http://127.0.0.1:{port}")
            eventually(lambda: http_ok(f"{browser.base}/healthz"), timeout_s=30)
            browser.post("/ui/signin", {"token": operator_token}, "/ui/signin")
            ids = [entry_id for entry_id, _ in admin.xrange("{tasks}:dead")]
            done = {"confirmed": "1"}
            page = browser.post("/ui/dead/replay", {"ids": ids[0], **done}, "/ui/dead")
            assert "Replayed 1 onto" in page
            page = browser.post("/ui/dead/purge", {"ids": ids[1], **done}, "/ui/dead")
            assert "Purged 1 dead letters" in page
            page = browser.post(
                "/ui/consumers/prune", {"consumer": "gone", **done}, "/ui/consumers"
            )
            assert (
                "Kept &#39;gone&#39;" in page
            )  # the script ran; it was not idle an hour
            assert admin.xlen("tasks") == 1 and admin.xlen("{tasks}:dead") == 1
            # The task pages: tasks waiting to be due, schedules, a lookup, a cancel.
            later = Sender(SenderSettings(), client=admin).send(
                "demo", {}, timing=make_timing(countdown_s=3600)
            )
            admin.hset("{tasks}:schedules", "nightly", "4102444800000")
            page = browser.get("/ui/delayed")
            assert later.id in page and "nightly" in page
            assert "delayed" in browser.get(f"/ui/tasks?id={later.id}")
            page = browser.post(
                "/ui/tasks/cancel", {"id": later.id, **done}, f"/ui/tasks?id={later.id}"
            )
            assert f"Cancelled task {later.id}" in page
            # Both deletions recorded, so the tamper gauge stays quiet (test_tamper.py)
            assert admin.hget("{tasks}:audit", "dead_deleted") == "2"
            eventually(lambda: admin.xlen("{tasks}:stats") >= 1, timeout_s=15)
        finally:
            dispatcher.stop()
    log = dispatcher.log_text()
    assert "console on" in log and "throughput sample failed" not in log
    assert "NOPERM" not in log and operator_token not in log and key not in log


TOKEN_A, TOKEN_B, OPERATOR = (
    "client-a-" + "a" * 16,
    "client-b-" + "b" * 16,
    "op-" + "o" * 20,
)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def test_a_result_is_read_by_the_token_that_dispatched_it_and_operators_only(
    r: redis.Redis,
) -> None:
    settings = Settings(tokens=(TOKEN_A, TOKEN_B), operator_tokens=(OPERATOR,),
                        lookups_per_minute=1000)  # fmt: skip
    http = create_app(settings, r).test_client()
    answer = http.post("/dispatch", json={"num_messages": 1}, headers=bearer(TOKEN_A))
    [entry_id] = answer.get_json()["entry_ids"]
    # The entry records the token's fingerprint, never the token.
    [(_, fields)] = stream_entries(r.xrange("tasks"))
    assert fields["owner"] == fingerprint(TOKEN_A) and TOKEN_A not in str(fields)
    make_worker(r, {"demo": lambda **payload: payload}).poll_once()
    path = f"/results/{entry_id}"
    assert http.get(path, headers=bearer(TOKEN_A)).status_code == 200
    assert http.get(path, headers=bearer(OPERATOR)).status_code == 200
    other = http.get(path, headers=bearer(TOKEN_B))
    assert other.status_code == 404  # as if it did not exist: whether it does is A's
    missing = http.get("/results/1-0", headers=bearer(TOKEN_B)).get_json()
    assert other.get_json()["error"] == missing["error"]
    assert http.get(path).status_code == 401
    # An operator's token reads, it never dispatches.
    refused = http.post("/dispatch", json={"num_messages": 1}, headers=bearer(OPERATOR))
    assert refused.status_code == 401


def test_result_lookups_are_limited_per_token(r: redis.Redis) -> None:
    settings = Settings(tokens=(TOKEN_A, TOKEN_B), lookups_per_minute=3)
    http = create_app(settings, r).test_client()
    codes = [
        http.get("/results/1-0", headers=bearer(TOKEN_A)).status_code for _ in range(5)
    ]
    assert codes == [404, 404, 404, 429, 429]
    assert (
        http.get("/results/1-0", headers=bearer(TOKEN_B)).status_code == 404
    )  # its own


def test_a_python_producer_sends_reads_and_cancels_with_its_own_user(
    acl_redis: tuple[RedisServer, dict[str, str]], tmp_path: Path
) -> None:
    server, passwords = acl_redis
    settings = SenderSettings(redis=RedisSettings(
        url=server.url, username="producer", password=passwords["producer"],
    ))  # fmt: skip
    with as_user(server, "admin", ADMIN) as admin:
        admin.xgroup_create("tasks", "workers", "0", mkstream=True)
    sender = Sender(settings)
    try:
        ref = sender.send("demo", {"n": 1}, idempotency_key="once")
        assert sender.send("demo", {"n": 1}, idempotency_key="once").id == ref.id
        assert ref.status()["state"] == "queued"
        assert ref.cancel() is True and ref.status()["state"] == "cancelled"
        later = sender.send("demo", {"n": 2}, timing=make_timing(countdown_s=60))
        assert later.status()["state"] == "delayed"
        assert later.cancel() is True and later.status()["state"] == "cancelled"
        with pytest.raises(redis.exceptions.NoPermissionError):
            sender.client.xack("tasks", "workers", ref.id)
    finally:
        sender.close()
