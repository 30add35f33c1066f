"""A network namespace joined to this host by a veth pair: a second "machine" for the
partition scenarios. A process run through `prefix()` sees only the link; Redis must
listen on `host_ip` to be reached from it. `cut()` takes the link down (packets are
dropped, connections hang as in a real partition); `heal()` brings it back.
`drop_replies(port)` cuts one way only: what a server on the host's side sends back."""

import os
import shutil
import subprocess


def ip_command() -> str:
    """iproute2's `ip`, by its full path."""
    found = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if not found:
        raise FileNotFoundError("`ip` (iproute2) is not installed")
    return found


def iptables_command() -> str:
    found = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if not found:
        raise FileNotFoundError("`iptables` is not installed")
    return found


def ip(*args: str) -> None:
    subprocess.run([ip_command(), *args], check=True, capture_output=True, timeout=10)


class Namespace:
    def __init__(self, number: int) -> None:
        """`number` (0-255): several namespaces of one run, apart by name and /30."""
        tag = f"{os.getpid() % 10000}-{number}"
        self.name = f"chaos-{tag}"
        self.host_link, self.inner_link = f"vh{tag}", f"vn{tag}"
        subnet = f"10.{200 + (os.getpid() % 50)}.{number}"
        self.host_ip, self.inner_ip = f"{subnet}.1", f"{subnet}.2"

    def create(self) -> "Namespace":
        ip("netns", "add", self.name)
        ip(
            "link",
            "add",
            self.host_link,
            "type",
            "veth",
            "peer",
            "name",
            self.inner_link,
        )
        ip("link", "set", self.inner_link, "netns", self.name)
        ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_link)
        ip("link", "set", self.host_link, "up")
        self._inside("addr", "add", f"{self.inner_ip}/30", "dev", self.inner_link)
        self._inside("link", "set", self.inner_link, "up")
        self._inside("link", "set", "lo", "up")
        return self

    def prefix(self) -> tuple[str, ...]:
        return (ip_command(), "netns", "exec", self.name)

    def cut(self) -> None:
        ip("link", "set", self.host_link, "down")

    def heal(self) -> None:
        ip("link", "set", self.host_link, "up")

    def drop_replies(self, port: int) -> None:
        """Drop, on the namespace's side, what the host's `port` sends: requests to a
        server there still arrive, its answers never come back (until pass_replies)."""
        self._replies("-A", port)

    def pass_replies(self, port: int) -> None:
        self._replies("-D", port)

    def _replies(self, action: str, port: int) -> None:
        rule = ("INPUT", "-p", "tcp", "-s", self.host_ip, "--sport", str(port))
        prefix = (*self.prefix(), iptables_command())
        subprocess.run([*prefix, action, *rule, "-j", "DROP"],
                       check=True, capture_output=True, timeout=10)  # fmt: skip

    def delete(self) -> None:
        ip_path = ip_command()
        subprocess.run([ip_path, "link", "del", self.host_link], capture_output=True)
        subprocess.run([ip_path, "netns", "del", self.name], capture_output=True)

    def _inside(self, *args: str) -> None:
        ip("netns", "exec", self.name, "ip", *args)
