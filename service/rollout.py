"""How a name's unversioned requests are shared among its versions during a rollout: canaries by weight, sticky by
the client's routing key, and shadows that get a copy.

A request's routing key (the ``X-Routing-Key`` header, or the same gRPC metadata) is set per request by whichever
wire carries it, in ``ROUTING_KEY``: the public routes' signatures are BentoML's API schema, and the key is not
part of it. A key hashes to one of ``BUCKETS`` fixed buckets; each canary holds a range of them from the bottom,
in the order the canaries were started, so a canary that grows keeps every key it had (consistent assignment).
With several canaries of one name, the ranges of those started after one that grows, or ends, move with it.
"""

import hashlib
import random
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import ApiError

BUCKETS = 10_000  # a hundredth of a percent each
ROUTING_KEY: ContextVar[str | None] = ContextVar("routing_key", default=None)
HEADER = "x-routing-key"


def bucket(key: str | None) -> int:
    """The key's bucket, the same in every process and on every host; a fresh draw without a key."""
    if key is None:
        return random.randrange(BUCKETS)
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class Plan:
    """What a repository load asks for beyond the version: a canary's percent of the name's unversioned requests
    (0 ends it), or a shadow's share of them copied to it (0 ends it). Neither: a plain load."""

    traffic: float | None = None
    shadow_rate: float | None = None

    @classmethod
    def of(cls, params: dict) -> "Plan | None":
        """A load's ``traffic``, or ``shadow`` and ``shadow_rate`` (default 1); None for a plain load. 400 for values
        out of range, or for both kinds at once, or either with ``default`` (a rollout never moves the default)."""
        traffic, shadow, rate = (params.get(k) for k in ("traffic", "shadow", "shadow_rate"))
        if traffic is None and shadow is None and rate is None:
            return None
        if "default" in params:
            raise ApiError(400, "bad_rollout", "a canary or shadow never changes the default: send default alone")
        if traffic is not None:
            if shadow is not None or rate is not None:
                raise ApiError(400, "bad_rollout", "a version is a canary (traffic) or a shadow, not both")
            return cls(traffic=_number(traffic, 100, "traffic is a percent from 0 to 100"))
        if not isinstance(shadow, bool):
            raise ApiError(400, "bad_rollout", "shadow_rate goes with shadow: true")
        rate = _number(1 if rate is None else rate, 1, "shadow_rate is a share from 0 to 1")
        return cls(shadow_rate=rate if shadow else 0.0)

    def parameters(self) -> dict:
        """As a repository load sends it (what ``of`` reads)."""
        if self.traffic is not None:
            return {"traffic": self.traffic}
        return {"shadow": bool(self.shadow_rate)} | ({"shadow_rate": self.shadow_rate} if self.shadow_rate else {})


def within(value: object, most: float) -> bool:
    """Whether ``value`` is a number (not a bool) from 0 to ``most``: a weight or a rate, as a load or a fleet's set
    gives it."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= most


def _number(value: object, most: float, reason: str) -> float:
    if not within(value, most):
        raise ApiError(400, "bad_rollout", f"{reason}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Split:
    """One name's versions for unversioned requests: ``canaries`` (version, percent) in the order they started, the
    rest to ``default``; ``shadows`` (version, rate) get copies of what the default answers."""

    default: str
    canaries: tuple[tuple[str, float], ...] = ()
    shadows: tuple[tuple[str, float], ...] = ()

    def pick(self) -> str:
        """The version for this request: by its routing key's bucket when it has one, else drawn."""
        if not self.canaries:
            return self.default
        drawn, edge = bucket(ROUTING_KEY.get()), 0.0
        for version, percent in self.canaries:
            edge += percent * BUCKETS / 100
            if drawn < edge:
                return version
        return self.default

    def mirrored(self) -> list[str]:
        """The shadow versions that get a copy of this request, each drawn at its rate."""
        return [version for version, rate in self.shadows if random.random() < rate]
