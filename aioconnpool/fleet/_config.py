"""``RedisFleet``'s settings, checked before anything connects.

Every error names the bad value; a Redis URL is only ever shown with its
password masked (``redis://user:***@host``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from aioconnpool import HostLimits, PoolKey

__all__ = ["ON_UNAVAILABLE", "FleetConfig", "mask_url", "validate_config"]

ON_UNAVAILABLE = ("local", "wait", "raise")
_SCHEMES = ("redis", "rediss", "unix")
# A name becomes part of every key, inside the hash tag ``{name}``: braces
# would move the tag and spaces would split the script's words.
_NAME = re.compile(r"^[A-Za-z0-9._:/@+-]{1,100}$")


_QUERY_SECRET = re.compile(r"([?&](?:password|username)=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with any ``user:password@`` (everything from the authority's
    start to its last ``@``: a password may hold ``@`` or ``/``) and any
    ``password=`` or ``username=`` query value replaced by ``***``."""
    slashes = url.find("//")
    start = slashes + 2 if slashes >= 0 else 0
    at = url.rfind("@", start)
    if at >= 0:
        url = f"{url[:start]}***{url[at:]}"
    return _QUERY_SECRET.sub(r"\1***", url)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    url: str
    address: str  # the URL with the password masked: for messages and stats
    name: str
    limit_per_host: int
    host_limits: HostLimits
    lease_ttl: float
    on_unavailable: str
    acquire_timeout: float | None
    redis_timeout: float
    cluster: bool = False

    @property
    def prefix(self) -> str:
        """Every key of the fleet starts with this; ``{name}`` is the Redis
        Cluster hash tag, so the whole fleet lives on one slot and each call
        is one atomic script."""
        return f"aioconnpool:{{{self.name}}}:"

    def limit_of(self, key: PoolKey) -> int | None:
        """The fleet limit of a host: its ``host_limits`` override, else
        ``limit_per_host``; ``None`` (an override of ``None``): no fleet
        limit for that host."""
        found = self.host_limits.lookup(*key)
        return self.limit_per_host if found is None else found[1]


def _positive(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds, not {type(value).__name__}: {value!r}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def validate_config(
    url: object,
    *,
    name: object,
    limit_per_host: object,
    host_limits: Mapping[str, int | None] | None,
    lease_ttl: object,
    on_unavailable: object,
    acquire_timeout: object,
    redis_timeout: object,
    cluster: object = False,
) -> FleetConfig:
    if not isinstance(url, str):
        raise TypeError(f"the Redis URL must be a string, not {type(url).__name__}")
    address = mask_url(url)
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the Redis URL {address!r} is not a valid URL") from exc
    if parsed.scheme in _SCHEMES and parsed.scheme != "unix" and not parsed.host:
        raise ValueError(f"the Redis URL {address!r} has no host")
    if parsed.scheme not in _SCHEMES:
        raise ValueError(
            f"the Redis URL {address!r} must start with redis://, rediss:// or unix://"
        )
    if parsed.scheme != "unix":
        if not parsed.host:
            raise ValueError(f"the Redis URL {address!r} has no host")
        try:
            port = parsed.port
        except ValueError as exc:
            raise ValueError(f"the Redis URL {address!r} has a bad port") from exc
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"the Redis URL {address!r} has a bad port: {port}")
        db = parsed.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(
                f"the Redis URL {address!r} names database {db!r}: it must be a number"
            )
    if not isinstance(cluster, bool):
        raise TypeError(f"cluster must be True or False, not {cluster!r}")
    if cluster:
        # A cluster node is reached by host and port, and serves database 0
        # only: a URL that says otherwise names something the cluster is not.
        if parsed.scheme == "unix":
            raise ValueError(
                f"cluster=True needs a redis:// or rediss:// URL of one of the "
                f"cluster's nodes, not the unix socket {address!r}"
            )
        if parsed.path.strip("/") not in ("", "0"):
            raise ValueError(
                f"the Redis URL {address!r} names database "
                f"{parsed.path.strip('/')!r}: Redis Cluster has database 0 only"
            )
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            "name must be 1 to 100 letters, digits or ._:/@+- (it becomes part "
            f"of every Redis key), got {name!r}"
        )
    if isinstance(limit_per_host, bool) or not isinstance(limit_per_host, int):
        raise TypeError(
            "limit_per_host must be an int >= 1, not "
            f"{type(limit_per_host).__name__}: {limit_per_host!r}"
        )
    if limit_per_host < 1:
        raise ValueError(f"limit_per_host must be >= 1, got {limit_per_host!r}")
    if on_unavailable not in ON_UNAVAILABLE:
        raise ValueError(
            f"on_unavailable must be one of {', '.join(map(repr, ON_UNAVAILABLE))}, "
            f"got {on_unavailable!r}"
        )
    ttl = _positive("lease_ttl", lease_ttl)
    assert ttl is not None
    if ttl < 0.3:
        raise ValueError(
            f"lease_ttl must be at least 0.3 s (heartbeats run every third of "
            f"it), got {lease_ttl!r}"
        )
    timeout = _positive("redis_timeout", redis_timeout)
    assert timeout is not None
    return FleetConfig(
        url=url,
        address=address,
        name=name,
        limit_per_host=limit_per_host,
        host_limits=HostLimits(host_limits),
        lease_ttl=ttl,
        on_unavailable=str(on_unavailable),
        acquire_timeout=_positive("acquire_timeout", acquire_timeout, allow_none=True),
        redis_timeout=timeout,
        cluster=cluster,
    )
