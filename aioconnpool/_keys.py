"""The public pool key, and turning what users pass to ``stats()`` into one."""

from __future__ import annotations

from typing import Any, NamedTuple

from yarl import URL

__all__ = ["PoolKey", "mask_userinfo", "pool_key_of", "to_pool_key"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_TLS_SCHEMES = frozenset({"https", "wss"})


class PoolKey(NamedTuple):
    """The (host, port, ssl) triple that stats are grouped by.

    ``ssl`` is only "TLS or not": aiohttp pools per full ``ConnectionKey``
    (ssl context, proxy, proxy credentials, server_hostname...), and so do we,
    but stats add those pools up per ``PoolKey`` and never show credentials.
    """

    host: str
    port: int
    ssl: bool

    def __str__(self) -> str:
        scheme = "https" if self.ssl else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def pool_key_of(connection_key: Any) -> PoolKey:
    """The ``PoolKey`` of an aiohttp ``ConnectionKey``, or of the plain tuple
    of its fields that the core keeps for a drained host: host, port and
    is_ssl are its first three fields (``_aiohttp.compat`` checks that
    aiohttp's ``ConnectionKey`` still starts with them)."""
    return PoolKey(
        str(connection_key[0]), int(connection_key[1]), bool(connection_key[2])
    )


def to_pool_key(target: object) -> PoolKey:
    """Turn a ``PoolKey``, URL string or ``yarl.URL`` into a ``PoolKey``.

    Raises ``TypeError`` for other types and ``ValueError`` for a URL that has
    no host or whose scheme is not http, https, ws or wss.
    """
    if isinstance(target, PoolKey):
        return target
    if isinstance(target, str):
        shown = mask_userinfo(target)
        try:
            url = URL(target)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"stats target {shown!r} is not a valid URL") from exc
    elif isinstance(target, URL):
        url = target
        shown = mask_userinfo(str(url))
    else:
        raise TypeError(
            "stats target must be a PoolKey, a URL string or a yarl.URL, "
            f"not {type(target).__name__}: {mask_userinfo(repr(target))}"
        )
    scheme = url.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"stats target {shown!r} must be an absolute http, https, ws or wss URL"
        )
    host = url.raw_host
    if not host:
        raise ValueError(f"stats target {shown!r} has no host")
    port = url.explicit_port or _DEFAULT_PORTS[scheme]
    return PoolKey(host, port, scheme in _TLS_SCHEMES)


def mask_userinfo(text: str) -> str:
    """``text`` with any ``user:password@`` replaced by ``***@``, for messages.

    Everything from the authority's start (after ``//``, or the start of the
    text when there is no scheme) to the last ``@`` goes: a password may
    itself hold ``@`` or ``/``, and masking too much is harmless.
    """
    slashes = text.find("//")
    start = slashes + 2 if slashes >= 0 else 0
    at = text.rfind("@", start)
    if at < 0:
        return text
    return f"{text[:start]}***{text[at:]}"
