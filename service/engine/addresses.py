"""Where the engines are: RESNET_ENGINE_URL's comma-separated list, each host name resolved to every address it has.

A Kubernetes headless Service's name resolves to one address per ready engine pod, so resolving it again every
few seconds finds engines that join and drops those that leave, without a restart. ``unix:///path`` is the socket
of the engines BentoML runs beside the fronts.
"""

import ipaddress
import socket
from urllib.parse import urlsplit


class BadAddress(ValueError):
    """RESNET_ENGINE_URL does not parse: the pre-flight check stops on it with the reason."""


def parse(value: str) -> tuple[str, ...]:
    """The engine URLs of a comma-separated list, each ``http(s)://host:port`` or ``unix:///path``."""
    urls = tuple(u.strip().rstrip("/") for u in value.split(",") if u.strip())
    for url in urls:
        if url.startswith("unix://"):
            if not url.removeprefix("unix://").startswith("/"):
                raise BadAddress(f"{url!r}: a socket is unix:///absolute/path")
            continue
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise BadAddress(f"{url!r}: the port is not a number from 0 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise BadAddress(f"{url!r}: an engine is http://host:port, https://host:port or unix:///path")
        if parts.path or parts.query or parts.fragment or parts.username:
            raise BadAddress(f"{url!r}: give the engine's base URL only (scheme, host and port)")
    return urls


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(url: str) -> list[str]:
    """The URL once per address its host name has now (IPv4 where it has any): one URL per engine. A literal
    address, a socket, or an https URL (its certificate names the host, not the addresses) is itself; a name that
    does not resolve (yet) is no engine."""
    parts = urlsplit(url)
    if url.startswith(("unix://", "https://")) or _literal(parts.hostname):
        return [url]
    try:
        found = socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    v4 = sorted({a[4][0] for a in found if a[0] == socket.AF_INET})
    hosts = v4 or [f"[{h}]" for h in sorted({a[4][0] for a in found if a[0] == socket.AF_INET6})]
    return [f"{parts.scheme}://{host}:{parts.port}" for host in hosts]
