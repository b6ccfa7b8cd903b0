"""Per-host limit overrides, mounted on host names or URL prefixes.

requests mounts adapters on URL prefixes and picks the longest one that
matches. A connection, though, serves every path of one (scheme, host, port),
so here a pattern selects connections, not paths, and comes in three forms,
from least to most specific:

* ``"a.test"``              -- that host, any port, any scheme;
* ``"a.test:8080"``         -- that host and port, any scheme;
* ``"https://a.test"``      -- that scheme, host and port (the scheme's default
  port when none is written, as in any URL); a trailing ``/`` is allowed.

For a connection the most specific matching pattern wins, which is what "the
longest prefix" means once paths are out of the picture. A lookup is three
dict probes, whatever the number of patterns.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from yarl import URL

from .._keys import mask_userinfo

__all__ = ["HostDelays", "HostLimits", "HostPattern", "parse_host_pattern"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_TLS_SCHEMES = frozenset({"https", "wss"})


class HostPattern(NamedTuple):
    """A parsed ``host_limits`` key. ``ssl``/``port`` are ``None`` for "any"."""

    host: str
    port: int | None
    ssl: bool | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.ssl is None:
            return host if self.port is None else f"{host}:{self.port}"
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"


def parse_host_pattern(pattern: object, what: str = "host_limits") -> HostPattern:
    """Parse one ``host_limits`` key (or a key of the table named ``what``,
    such as ``host_delays``); ``TypeError``/``ValueError`` quote it."""
    if not isinstance(pattern, str):
        raise TypeError(
            f"{what} keys must be host names or URL strings, "
            f"not {type(pattern).__name__}: {mask_userinfo(repr(pattern))}"
        )
    shown = mask_userinfo(pattern)
    text = pattern.strip()
    has_scheme = "://" in text
    if not has_scheme and text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    try:
        url = URL(text if has_scheme else f"//{text}")
        port = url.explicit_port
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{what} key {shown!r} is not a host, host:port or URL"
        ) from exc
    if url.user is not None or url.password is not None:
        raise ValueError(f"{what} key {shown!r} must not contain credentials")
    if url.raw_query_string or url.raw_fragment:
        raise ValueError(f"{what} key {shown!r} must not have a query or fragment")
    if url.raw_path not in ("", "/"):
        raise ValueError(
            f"{what} key {shown!r} has the path {url.raw_path!r}: they apply "
            "to connections, which every path of a host shares; use a host, "
            "host:port or scheme://host[:port] prefix"
        )
    host = normalise_host(url.raw_host or "")
    if not host:
        raise ValueError(f"{what} key {shown!r} has no host")
    if not _is_valid_host(host):
        raise ValueError(
            f"{what} key {shown!r}: {host!r} is not a host name or IP address"
            " (wildcards are not supported)"
        )
    if port == 0:
        raise ValueError(f"{what} key {shown!r}: port 0 is not a port")
    if not has_scheme:
        return HostPattern(host, port, None)
    scheme = url.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"{what} key {shown!r}: the scheme must be http, https, ws or wss"
        )
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    return HostPattern(host, port, scheme in _TLS_SCHEMES)


def normalise_host(host: str) -> str:
    """A host as patterns and lookups compare it: a fully qualified name's
    trailing dot dropped, so ``a.test.`` cannot sidestep ``a.test``'s limit."""
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")


def _is_valid_host(host: str) -> bool:
    if ":" in host:  # an IPv6 address (yarl gives it without brackets)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _NAME.fullmatch(host) is not None


def check_host_limit(pattern: object, value: object) -> int | None:
    """A per-host limit: an int >= 1, or ``None`` for no per-host limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"host_limits[{pattern!r}] must be an int or None, "
            f"not {type(value).__name__}: {value!r}"
        )
    if value < 1:
        raise ValueError(
            f"host_limits[{pattern!r}] must be >= 1 (None means no per-host "
            f"limit), got {value!r}"
        )
    return value


class HostLimits:
    """The override table: pattern -> limit, with a most-specific lookup."""

    __slots__ = ("_limits",)

    def __init__(self, limits: Mapping[str, int | None] | None = None) -> None:
        self._limits: dict[HostPattern, int | None] = {}
        if limits is None:
            return
        if not isinstance(limits, Mapping):
            raise TypeError(
                "host_limits must be a mapping of host or URL prefix to limit, "
                f"not {type(limits).__name__}: {mask_userinfo(repr(limits))}"
            )
        # Parse everything before storing anything: nothing is half-applied.
        seen: dict[HostPattern, object] = {}
        for raw, value in limits.items():
            pattern = parse_host_pattern(raw)
            limit = check_host_limit(raw, value)
            if pattern in seen:
                raise ValueError(
                    f"host_limits keys {seen[pattern]!r} and {raw!r} "
                    f"both mean {str(pattern)!r}"
                )
            seen[pattern] = raw
            self._limits[pattern] = limit

    def set(self, raw: object, limit: object) -> HostPattern:
        """Add or change one override; returns the parsed pattern."""
        pattern = parse_host_pattern(raw)
        self._limits[pattern] = check_host_limit(raw, limit)
        return pattern

    def remove(self, raw: object) -> HostPattern:
        """Drop one override; ``KeyError`` naming it if there is none."""
        pattern = parse_host_pattern(raw)
        if self._limits.pop(pattern, _MISSING) is _MISSING:
            raise KeyError(f"no host limit is set for {raw!r}")
        return pattern

    def lookup(
        self, host: str, port: int, ssl: bool
    ) -> tuple[HostPattern, int | None] | None:
        """The most specific override for a connection, if any."""
        limits = self._limits
        if limits:
            host = normalise_host(host)
            for pattern in (
                HostPattern(host, port, ssl),
                HostPattern(host, port, None),
                HostPattern(host, None, None),
            ):
                if pattern in limits:
                    return pattern, limits[pattern]
        return None

    def __len__(self) -> int:
        return len(self._limits)

    @property
    def patterns(self) -> Mapping[HostPattern, int | None]:
        """The overrides, pattern -> limit: the table's own mapping, the same
        object for the table's life (read it, never change it)."""
        return self._limits

    def __iter__(self) -> Iterator[tuple[HostPattern, int | None]]:
        return iter(list(self._limits.items()))

    def as_dict(self) -> dict[str, int | None]:
        """The overrides keyed by their normalised pattern text."""
        return {str(pattern): limit for pattern, limit in self._limits.items()}


_MISSING = object()


def check_host_delay(pattern: object, value: object) -> float:
    """A per-host delay: a finite number of seconds >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"host_delays[{pattern!r}] must be a number of seconds, "
            f"not {type(value).__name__}: {value!r}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"host_delays[{pattern!r}] must be a finite number of seconds >= 0, "
            f"got {value!r}"
        )
    return float(value)


class HostDelays:
    """``host_delays``: pattern -> seconds between two starts, with the same
    patterns and most-specific lookup as :class:`HostLimits`, over a default
    (``delay_per_host``)."""

    __slots__ = ("_delays", "default")

    def __init__(
        self, delays: Mapping[str, float] | None = None, default: float = 0.0
    ) -> None:
        self.default = default
        self._delays: dict[HostPattern, float] = {}
        if delays is None:
            return
        if not isinstance(delays, Mapping):
            raise TypeError(
                "host_delays must be a mapping of host or URL prefix to seconds, "
                f"not {type(delays).__name__}: {mask_userinfo(repr(delays))}"
            )
        seen: dict[HostPattern, object] = {}
        for raw, value in delays.items():
            pattern = parse_host_pattern(raw, "host_delays")
            delay = check_host_delay(raw, value)
            if pattern in seen:
                raise ValueError(
                    f"host_delays keys {seen[pattern]!r} and {raw!r} "
                    f"both mean {str(pattern)!r}"
                )
            seen[pattern] = raw
            self._delays[pattern] = delay

    def set(self, raw: object, delay: object) -> HostPattern:
        """Add or change one host's delay; returns the parsed pattern."""
        pattern = parse_host_pattern(raw, "host_delays")
        self._delays[pattern] = check_host_delay(raw, delay)
        return pattern

    def __bool__(self) -> bool:
        """Whether any host is paced."""
        return bool(self.default or any(self._delays.values()))

    def lookup(self, host: str, port: int, ssl: bool) -> float:
        """The delay of a connection: its most specific pattern's, else the
        default."""
        delays = self._delays
        if delays:
            host = normalise_host(host)
            for pattern in (
                HostPattern(host, port, ssl),
                HostPattern(host, port, None),
                HostPattern(host, None, None),
            ):
                found = delays.get(pattern)
                if found is not None:
                    return found
        return self.default

    def as_dict(self) -> dict[str, float]:
        """The per-host delays keyed by their normalised pattern text."""
        return {str(pattern): delay for pattern, delay in self._delays.items()}
