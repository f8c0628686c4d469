"""Another host, made by the test: a network namespace joined to this one by a veth pair.

Calls "from another host" run inside the namespace (``ip netns exec``) and reach a server of this machine at
``host_address``, the veth's end here; the server sees them come from ``address``, which is not loopback. No
traffic leaves the machine, and nothing is sent to its interface addresses. Needs root (CAP_NET_ADMIN) and
iproute2, as CI has them.
"""

import contextlib
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count

from tests.conftest import ROOT

BLOCKS = ipaddress.ip_network("10.231.0.0/16")  # /30 blocks: this end .1, the namespace's .2
_made = count()


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    host_address: str  # this machine, as the namespace reaches it
    address: str  # the namespace's own address

    def python(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``python ARGS`` in the namespace: this interpreter, in the repository (``-m tests.…`` works)."""
        command = ["ip", "netns", "exec", self.name, sys.executable, *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def another_host() -> Iterator[Host]:
    """A fresh namespace for the block's lifetime, removed (with its veth pair) afterwards."""
    index = (os.getpid() * 64 + next(_made)) % (BLOCKS.num_addresses // 4)
    block = int(BLOCKS.network_address) + 4 * index
    here, there = str(ipaddress.ip_address(block + 1)), str(ipaddress.ip_address(block + 2))
    name, veth = f"rs-{os.getpid()}-{index}", f"rs{index}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", f"{veth}a", "type", "veth", "peer", "name", f"{veth}b")
        _ip("link", "set", f"{veth}b", "netns", name)
        _ip("addr", "add", f"{here}/30", "dev", f"{veth}a")
        _ip("link", "set", f"{veth}a", "up")
        _ip("-n", name, "addr", "add", f"{there}/30", "dev", f"{veth}b")
        _ip("-n", name, "link", "set", f"{veth}b", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Host(name, here, there)
    finally:
        subprocess.run(["ip", "link", "del", f"{veth}a"], capture_output=True)
        _ip("netns", "del", name)
