"""`python -m scripts.images` (`make images`): build both images with Docker or
podman, then print their sizes and the time from `run` to ready. The image tests and
`make bench` use the same functions."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.processes import ROOT, free_port, http_ok, wait_for
from harness.redis_server import RedisServer

SERVICES = ("dispatcher", "consumer")
CONTAINERS_CONF = ROOT / "containers" / "containers.conf"
BASE_SCRIPT = ROOT / "containers" / "build-base-image.sh"
LOCAL_BASE = "localhost/stream-pipeline-base:bookworm"
# Each service's readiness probe (k8s/base) and the variable that sets its port.
READY_PATHS = {"dispatcher": "/readyz", "consumer": "/healthz"}
PORT_VARIABLES = {"dispatcher": "PORT", "consumer": "METRICS_PORT"}


class ImageError(Exception):
    """A build or a run failed; the message carries the engine's output."""


@dataclass(frozen=True, slots=True)
class Figures:
    image: str
    size_bytes: int
    start_s: float  # from `run` to the readiness probe's first 200


def image_name(service: str, tag: str) -> str:
    return f"stream-pipeline-{service}:{tag}"


def engine_env() -> dict[str, str]:
    """podman reads this repository's containers.conf unless CONTAINERS_CONF is set;
    Docker needs BuildKit for the build secret."""
    return {
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "DOCKER_BUILDKIT": "1",
        **os.environ,
    }


def engine_ok(engine: str, *args: str) -> bool:
    """Whether `engine args...` succeeds (its output discarded)."""
    try:
        done = subprocess.run([engine, *args], env=engine_env(), capture_output=True)
    except FileNotFoundError:
        return False
    return done.returncode == 0


def detect_engine() -> str:
    """docker where a Docker engine answers, podman otherwise."""
    return "docker" if engine_ok("docker", "info") else "podman"


def official_base() -> str:
    """The Dockerfiles' default base image (their `ARG BASE_IMAGE=`)."""
    text = (ROOT / "dispatcher" / "Dockerfile").read_text()
    found = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    if found is None:
        raise ImageError("dispatcher/Dockerfile has no ARG BASE_IMAGE=<default>")
    return found.group(1)


def choose_base(engine: str, requested: str) -> str:
    """`official` (the Dockerfiles' default), `local` (made from Debian packages), an
    image name, or `auto`: official where the engine has or can pull it, else local."""
    official = official_base()
    if requested == "auto":
        if engine_ok(engine, "image", "inspect", official) or engine_ok(
            engine, "pull", official
        ):
            return official
        print(f"{official} cannot be pulled here: building on {LOCAL_BASE}", flush=True)
        requested = "local"
    if requested == "official":
        return official
    if requested == "local":
        command = [str(BASE_SCRIPT), LOCAL_BASE]
        if subprocess.run(command, env={**engine_env(), "ENGINE": engine}).returncode:
            raise ImageError(f"{BASE_SCRIPT.name} could not make {LOCAL_BASE}")
        return LOCAL_BASE
    return requested


def pip_options() -> list[str]:
    """The host's package index and CA for pip inside the build (an index behind a proxy
    with a CA of its own): a build argument and the build secret pip_ca."""
    config = dict(re.findall(r"^\S*?\.([\w-]+)='(.*)'$", _pip_config_list(), re.M))
    options = []
    index = os.environ.get("PIP_INDEX_URL") or config.get("index-url", "")
    if index.startswith(("https://", "http://")):  # a file:// index is not in the build
        options += ["--build-arg", f"PIP_INDEX_URL={index}"]
    ca = (
        os.environ.get("PIP_CERT")
        or config.get("cert")
        or os.environ.get("REQUESTS_CA_BUNDLE")
    )
    if ca and Path(ca).is_file():
        options += ["--secret", f"id=pip_ca,src={ca}"]
    return options


def _pip_config_list() -> str:
    command = [sys.executable, "-m", "pip", "config", "list"]
    return subprocess.run(command, capture_output=True, text=True).stdout


def build(engine: str, service: str, tag: str, base: str, quiet: bool = False) -> float:
    """Build one image from the repository root (layers cached); returns the seconds."""
    command = [engine, "build", "-f", f"{service}/Dockerfile"]
    command += ["-t", image_name(service, tag), "--build-arg", f"BASE_IMAGE={base}"]
    command += [*pip_options(), "."]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=engine_env(), capture_output=quiet, text=True
    )
    if done.returncode != 0:
        output = (done.stdout or "")[-4000:] + (done.stderr or "")[-2000:]
        raise ImageError(f"{' '.join(command)} failed\n{output}")
    return time.perf_counter() - started


def size_bytes(engine: str, image: str) -> int:
    command = [engine, "image", "inspect", "--format", "{{.Size}}", image]
    done = subprocess.run(command, env=engine_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"no image {image}: run `make images` ({done.stderr.strip()})")
    return int(done.stdout.strip())


def start_seconds(engine: str, service: str, image: str, redis_url: str) -> float:
    """Seconds from `run` to the readiness probe's 200: host network, read-only root,
    no capabilities, no new privileges, as the manifests run it."""
    port = free_port()
    name = f"stream-pipeline-start-{service}-{os.getpid()}"
    env = {"REDIS_URL": redis_url, PORT_VARIABLES[service]: str(port)}
    env |= {"HOST": "127.0.0.1", "DISPATCH_ALLOW_ANONYMOUS": "1"}  # loopback only
    command = [engine, "run", "-d", "--rm", "--name", name, "--network", "host"]
    command += ["--read-only", "--tmpfs=/tmp", "--cap-drop", "ALL"]
    command += ["--security-opt", "no-new-privileges"]
    command += [f"--env={key}={value}" for key, value in env.items()]
    started = time.perf_counter()
    done = subprocess.run([*command, image], env=engine_env(), capture_output=True)
    if done.returncode != 0:
        raise ImageError(f"{engine} run {image} failed: {done.stderr.decode()[-2000:]}")
    try:
        url = f"http://127.0.0.1:{port}{READY_PATHS[service]}"
        wait_for(lambda: http_ok(url), timeout_s=120, every_s=0.02)
        return time.perf_counter() - started
    finally:
        subprocess.run(
            [engine, "rm", "-f", name], env=engine_env(), capture_output=True
        )


def measure(engine: str, tag: str) -> list[Figures]:
    """Size and time to ready of both built images, against a private redis-server."""
    with tempfile.TemporaryDirectory(prefix="images-") as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        figures = []
        try:
            for service in SERVICES:
                image = image_name(service, tag)
                size = size_bytes(engine, image)
                start_s = start_seconds(engine, service, image, server.url)
                figures.append(Figures(image, size, start_s))
            return figures
        finally:
            server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.images", description=__doc__
    )
    parser.add_argument(
        "--engine", help="docker or podman (default: docker if it answers)"
    )
    parser.add_argument("--tag", default="dev")
    parser.add_argument(
        "--base", default="auto", help="auto (default), official, local or an image"
    )
    args = parser.parse_args()
    engine = args.engine or detect_engine()
    try:
        base = choose_base(engine, args.base)
        built = {s: build(engine, s, args.tag, base) for s in SERVICES}
        figures = measure(engine, args.tag)
    except ImageError as error:
        print(f"make images: {error}", file=sys.stderr)
        return 1
    print(f"\n{engine}, on {base}:")
    for service, row in zip(SERVICES, figures, strict=True):
        print(
            f"  {row.image:<32} {row.size_bytes / 1e6:6.0f} MB   built in "
            f"{built[service]:5.1f} s   run to ready {row.start_s:4.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
