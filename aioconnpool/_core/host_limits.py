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
import re
from collections.abc import Iterator, Mapping
from typing import ClassVar, Generic, NamedTuple, TypeVar

from yarl import URL

from .._keys import mask_userinfo
from .checks import check_seconds

__all__ = ["HostDelays", "HostLimits", "HostPattern", "parse_host_pattern"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_TLS_SCHEMES = frozenset({"https", "wss"})

V = TypeVar("V")


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


_MISSING = object()


def check_host_delay(pattern: object, value: object) -> float:
    """A per-host delay: a finite number of seconds >= 0."""
    seconds = check_seconds(f"host_delays[{pattern!r}]", value, allow_none=False)
    assert seconds is not None  # allow_none=False
    return seconds


class _PatternTable(Generic[V]):
    """pattern -> value, with the most-specific lookup: the shape
    ``host_limits`` and ``host_delays`` share. A subclass names its table
    (``_what``, as the user wrote it), says what its values are (``_values``,
    for the error on a table that is not a mapping) and checks one
    (``_check``, raising an error that quotes it)."""

    __slots__ = ("_table",)

    _what: ClassVar[str]
    _values: ClassVar[str]

    def __init__(self, table: Mapping[str, object] | None = None) -> None:
        self._table: dict[HostPattern, V] = {}
        if table is None:
            return
        if not isinstance(table, Mapping):
            raise TypeError(
                f"{self._what} must be a mapping of host or URL prefix to "
                f"{self._values}, not {type(table).__name__}: "
                f"{mask_userinfo(repr(table))}"
            )
        # Parse everything before storing anything: nothing is half-applied.
        seen: dict[HostPattern, object] = {}
        for raw, value in table.items():
            pattern = parse_host_pattern(raw, self._what)
            checked = self._check(raw, value)
            if pattern in seen:
                raise ValueError(
                    f"{self._what} keys {seen[pattern]!r} and {raw!r} "
                    f"both mean {str(pattern)!r}"
                )
            seen[pattern] = raw
            self._table[pattern] = checked

    @staticmethod
    def _check(pattern: object, value: object) -> V:
        raise NotImplementedError

    def set(self, raw: object, value: object) -> HostPattern:
        """Add or change one entry; returns the parsed pattern."""
        pattern = parse_host_pattern(raw, self._what)
        self._table[pattern] = self._check(raw, value)
        return pattern

    def find(self, host: str, port: int, ssl: bool) -> tuple[HostPattern, V] | None:
        """The most specific entry for a connection, if any: three dict
        probes, whatever the number of patterns."""
        table = self._table
        if table:
            host = normalise_host(host)
            for pattern in (
                HostPattern(host, port, ssl),
                HostPattern(host, port, None),
                HostPattern(host, None, None),
            ):
                if pattern in table:
                    return pattern, table[pattern]
        return None

    def __len__(self) -> int:
        return len(self._table)

    @property
    def patterns(self) -> Mapping[HostPattern, V]:
        """The entries, pattern -> value: the table's own mapping, the same
        object for the table's life (read it, never change it)."""
        return self._table

    def __iter__(self) -> Iterator[tuple[HostPattern, V]]:
        return iter(list(self._table.items()))

    def as_dict(self) -> dict[str, V]:
        """The entries keyed by their normalised pattern text."""
        return {str(pattern): value for pattern, value in self._table.items()}


class HostLimits(_PatternTable[int | None]):
    """The override table: pattern -> limit, with a most-specific lookup."""

    __slots__ = ()

    _what = "host_limits"
    _values = "limit"
    _check = staticmethod(check_host_limit)

    def __init__(self, limits: Mapping[str, int | None] | None = None) -> None:
        super().__init__(limits)

    def remove(self, raw: object) -> HostPattern:
        """Drop one override; ``KeyError`` naming it if there is none."""
        pattern = parse_host_pattern(raw)
        if self._table.pop(pattern, _MISSING) is _MISSING:
            raise KeyError(f"no host limit is set for {raw!r}")
        return pattern

    def lookup(
        self, host: str, port: int, ssl: bool
    ) -> tuple[HostPattern, int | None] | None:
        """The most specific override for a connection, if any."""
        return self.find(host, port, ssl)


class HostDelays(_PatternTable[float]):
    """``host_delays``: pattern -> seconds between two starts, with the same
    patterns and most-specific lookup as :class:`HostLimits`, over a default
    (``delay_per_host``)."""

    __slots__ = ("default",)

    _what = "host_delays"
    _values = "seconds"
    _check = staticmethod(check_host_delay)

    def __init__(
        self, delays: Mapping[str, float] | None = None, default: float = 0.0
    ) -> None:
        self.default = default
        super().__init__(delays)

    def __bool__(self) -> bool:
        """Whether any host is paced."""
        return bool(self.default or any(self._table.values()))

    def lookup(self, host: str, port: int, ssl: bool) -> float:
        """The delay of a connection: its most specific pattern's, else the
        default."""
        found = self.find(host, port, ssl)
        return self.default if found is None else found[1]
