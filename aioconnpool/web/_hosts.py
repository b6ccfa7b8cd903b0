"""The per-host table, sorted, filtered and paginated on the server, so that
100,000 hosts cost the browser one page of rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["COLUMNS", "HostPages", "HostQuery", "HostQueryError"]

COLUMNS = (
    "host",
    "acquired",
    "idle",
    "connecting",
    "waiting",
    "open",
    "limit",
    "available",
    "requests",
    "created",
    "reused",
    "connect_errors",
    "rejected",
    "wait_timeouts",
    "delay",
    "pacing_waiting",
    "pause_reason",
    "adaptive_limit",
    "gradient",
    "min_rtt",
)
"""The columns of ``hosts.json`` rows, which it can sort by, in order: the
host, then ``HostStats``' gauges and counters (``to_dict()``'s names)."""
MAX_PER_PAGE = 500


class HostQueryError(ValueError):
    """A bad ``sort``, ``order``, ``page`` or ``per_page``, named."""


@dataclass(frozen=True, slots=True)
class HostQuery:
    sort: str = "acquired"
    descending: bool = True
    q: str = ""
    page: int = 1
    per_page: int = 50

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> HostQuery:
        sort = params.get("sort", "acquired")
        if sort not in COLUMNS:
            raise HostQueryError(
                f"sort must be one of {', '.join(COLUMNS)}, not {sort!r}"
            )
        order = params.get("order", "asc" if sort == "host" else "desc")
        if order not in ("asc", "desc"):
            raise HostQueryError(f"order must be 'asc' or 'desc', not {order!r}")
        page = _positive_int(params, "page", 1, None)
        per_page = _positive_int(params, "per_page", 50, MAX_PER_PAGE)
        return cls(
            sort=sort,
            descending=order == "desc",
            q=params.get("q", "").strip().lower(),
            page=page,
            per_page=per_page,
        )


def _positive_int(
    params: Mapping[str, str], name: str, default: int, most: int | None
) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HostQueryError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1 or (most is not None and value > most):
        bound = f"between 1 and {most}" if most is not None else ">= 1"
        raise HostQueryError(f"{name} must be {bound}, not {value}")
    return value


# Columns where None means "no limit": the most room, so it sorts above any
# number. Anywhere else None means "nothing" and sorts below.
_NONE_IS_MOST = frozenset({"limit", "available"})


def _sort_key(column: str) -> Any:
    if column == "host":
        return lambda row: row["host"]
    none_rank = 2 if column in _NONE_IS_MOST else 0

    def key(row: dict[str, Any]) -> tuple[int, float, str, str]:
        value = row.get(column)
        if value is None:
            return (none_rank, 0.0, "", row["host"])
        if isinstance(value, (int, float)):
            return (1, float(value), "", row["host"])
        return (1, 0.0, str(value), row["host"])

    return key


class HostPages:
    """Pages of the per-host table. Keeps the last sorted and filtered row
    list, for one snapshot: viewers paging through it sort it once. One per
    dashboard (its server answers from one thread)."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._rows: list[dict[str, Any]] = []

    def query(
        self,
        hosts: Mapping[str, dict[str, Any]],
        query: HostQuery,
        *,
        snapshot: object,
    ) -> dict[str, Any]:
        """One page of ``hosts`` (``to_dict()["hosts"]`` of ``snapshot``) as
        rows of :data:`COLUMNS`, with the count of hosts that match and of
        pages."""
        key = (snapshot, query.sort, query.descending, query.q)
        if self._key == key:
            rows = self._rows
        else:
            rows = [
                {"host": host, **{c: figures.get(c) for c in COLUMNS[1:]}}
                for host, figures in hosts.items()
                if not query.q or query.q in host.lower()
            ]
            rows.sort(key=_sort_key(query.sort), reverse=query.descending)
            self._key, self._rows = key, rows
        pages = max(1, -(-len(rows) // query.per_page))
        start = (query.page - 1) * query.per_page
        return {
            "total": len(hosts),
            "matching": len(rows),
            "page": query.page,
            "pages": pages,
            "per_page": query.per_page,
            "sort": query.sort,
            "order": "desc" if query.descending else "asc",
            "q": query.q,
            "columns": list(COLUMNS),
            "rows": rows[start : start + query.per_page],
        }
