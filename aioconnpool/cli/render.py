"""Human tables of a ``PoolStats``, as plain text or as rich renderables.

A report is a list of blocks: a line of text, or a :class:`Table` (headers and
rows of strings). The same blocks are written out by :func:`to_text` (no
dependency; for pipes, CI and logs) or turned into rich renderables by
:func:`to_rich` for a terminal, so both always show the same figures.
``rich`` is an optional extra (``pip install aioconnpool[cli]``) and is only
imported by :func:`to_rich`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, TextIO, TypeAlias

from .. import HostStats, PoolKey, PoolStats

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = [
    "Block",
    "LiveView",
    "Table",
    "emit",
    "endings_table",
    "host_table",
    "nonzero",
    "pool_blocks",
    "reuse_table",
    "rich_available",
    "to_rich",
    "to_text",
]

Label: TypeAlias = Callable[[PoolKey], str]
MAX_BAR = 40  # marks in the longest reuse histogram bar


@dataclass(frozen=True)
class Table:
    """Rows of strings. Columns in ``numeric`` are right-aligned; the last
    ``totals`` rows are set apart (a rule in text, a section in rich)."""

    title: str
    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    numeric: frozenset[int] = field(default_factory=frozenset)
    totals: int = 0


Block: TypeAlias = "str | Table"


# ------------------------------------------------------------------ tables


def nonzero(counts: Mapping[str, int]) -> str:
    """``eof=3 release=1`` for the nonzero entries, ``-`` if there are none."""
    shown = [f"{name}={n}" for name, n in counts.items() if n]
    return " ".join(shown) if shown else "-"


def _reuse_ratio(h: HostStats) -> str:
    # Share of acquisitions served by an already open connection.
    acquisitions = h.created + h.reused
    return f"{100 * h.reused / acquisitions:.0f}%" if acquisitions else "-"


def _opt(n: int | None) -> str:
    return "-" if n is None else str(n)


def _totals(stats: PoolStats) -> HostStats:
    """The pool's totals in the shape of one host (``limit`` the total limit).

    Every ``HostStats`` field that ``PoolStats`` also has is copied, so a
    counter added to both shows in the totals row without a change here.
    """
    shared = {
        f.name: getattr(stats, f.name)
        for f in dataclasses.fields(HostStats)
        if hasattr(stats, f.name)
    }
    return HostStats(**shared)


# Requests that never got a connection, by cause (fields read if present).
NOT_ACQUIRED = (
    ("connect_errors", "connect_error"),
    ("rejected", "rejected"),
    ("wait_timeouts", "wait_timeout"),
)


def _not_acquired(h: HostStats) -> str:
    return nonzero({name: getattr(h, field, 0) for field, name in NOT_ACQUIRED})


def _shown_hosts(
    stats: PoolStats, label: Label, max_rows: int | None
) -> tuple[list[tuple[str, HostStats]], int]:
    """Hosts to show, sorted by label so rows stay put between refreshes.

    With more than ``max_rows`` hosts, the busiest are shown (in use or
    queued first, then by requests) and the number left out is returned.
    """
    hosts = list(stats.hosts.items())
    hidden = 0
    if max_rows is not None and len(hosts) > max_rows:

        def busy(item: tuple[PoolKey, HostStats]) -> tuple[int, int]:
            h = item[1]
            return (h.acquired + h.connecting + h.waiting, h.requests)

        hosts = sorted(hosts, key=busy, reverse=True)[:max_rows]
        hidden = len(stats.hosts) - len(hosts)
    rows = sorted(((label(key), h) for key, h in hosts), key=lambda r: r[0])
    return rows, hidden


HOST_HEADERS = (
    "host",
    "acquired",
    "idle",
    "connecting",
    "waiting",
    "limit",
    "requests",
    "created",
    "reused",
    "reuse",
)


def _host_row(name: str, h: HostStats) -> tuple[str, ...]:
    return (
        name,
        str(h.acquired),
        str(h.idle),
        str(h.connecting),
        str(h.waiting),
        _opt(h.limit),
        str(h.requests),
        str(h.created),
        str(h.reused),
        _reuse_ratio(h),
    )


def host_table(
    stats: PoolStats,
    *,
    label: Label = str,
    max_rows: int | None = None,
    title: str = "per host",
) -> Table:
    """Gauges and counters per host, then the pool's totals.

    ``reuse`` is the share of acquisitions that reused an open connection;
    ``limit`` is the per-host limit, and the total limit on the totals row.
    """
    shown, hidden = _shown_hosts(stats, label, max_rows)
    rows = [_host_row(name, h) for name, h in shown]
    if hidden:
        rows.append((f"... {hidden} more hosts", *[""] * (len(HOST_HEADERS) - 1)))
    if stats.forgotten_hosts:
        rows.append(_host_row(f"{stats.forgotten_hosts} forgotten", stats.forgotten))
    rows.append(_host_row("total", _totals(stats)))
    return Table(title, HOST_HEADERS, rows, frozenset(range(1, 10)), totals=1)


def endings_table(
    stats: PoolStats,
    *,
    label: Label = str,
    max_rows: int | None = None,
    title: str = "how acquisitions ended, why connections closed",
) -> Table:
    """``released`` (how), ``closed`` (why), and requests that got no
    connection (connect errors, rejected, wait timeouts); nonzero entries."""

    def row(name: str, h: HostStats) -> tuple[str, ...]:
        return (name, nonzero(h.released), nonzero(h.closed), _not_acquired(h))

    shown, hidden = _shown_hosts(stats, label, max_rows)
    rows = [row(name, h) for name, h in shown]
    if hidden:
        rows.append((f"... {hidden} more hosts", "", "", ""))
    if stats.forgotten_hosts:
        rows.append(row(f"{stats.forgotten_hosts} forgotten", stats.forgotten))
    rows.append(row("total", _totals(stats)))
    headers = ("host", "released (how)", "closed (why)", "no connection (why)")
    return Table(title, headers, rows, totals=1)


def pool_blocks(
    stats: PoolStats, *, label: Label = str, max_rows: int | None = None
) -> list[Block]:
    """The per-host table and the endings table of one snapshot."""
    return [
        host_table(stats, label=label, max_rows=max_rows),
        "",
        endings_table(stats, label=label, max_rows=max_rows),
    ]


def reuse_table(
    per_socket: Iterable[tuple[PoolKey, int]], *, label: Label = str, title: str
) -> Table:
    """Histogram: how many sockets served 1, 2, ... requests, and their hosts."""
    served: Counter[int] = Counter()
    hosts: dict[int, Counter[str]] = {}
    for key, requests in per_socket:
        served[requests] += 1
        hosts.setdefault(requests, Counter())[label(key)] += 1
    widest = max(served.values(), default=1)
    scale = max(1, -(-widest // MAX_BAR))
    rows = [
        (
            str(n),
            str(served[n]),
            "#" * -(-served[n] // scale),
            ", ".join(f"{host} x{k}" for host, k in sorted(hosts[n].items())),
        )
        for n in sorted(served)
    ]
    headers = ("requests", "sockets", "", "hosts")
    return Table(title, headers, rows, frozenset({0, 1}))


# ------------------------------------------------------------------ output


def _table_lines(table: Table) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in table.rows))
        for i, h in enumerate(table.headers)
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in table.numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    rule = line(["-" * w for w in widths])
    body = table.rows[: len(table.rows) - table.totals]
    totals = table.rows[len(body) :]
    lines = [f"{table.title}:", line(table.headers), rule]
    lines += [line(r) for r in body]
    if totals:
        lines += [rule, *(line(r) for r in totals)]
    return lines


def to_text(blocks: Iterable[Block]) -> str:
    """Plain text: tables with aligned columns, lines as they are."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            out += _table_lines(block)
        else:
            out.append(block)
    return "\n".join(out)


def rich_available() -> bool:
    """Whether the ``cli`` extra (rich) is installed."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def to_rich(blocks: Iterable[Block]) -> RenderableType:
    """The same blocks as rich renderables (needs ``aioconnpool[cli]``)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    items: list[RenderableType] = []
    for block in blocks:
        if not isinstance(block, Table):
            # Text, not markup: host names like [::1] are not style tags.
            items.append(Text(block))
            continue
        table = RichTable(title=block.title, title_justify="left", box=box.SIMPLE_HEAD)
        for i, header in enumerate(block.headers):
            table.add_column(
                header,
                justify="right" if i in block.numeric else "left",
                no_wrap=i == 0,
            )
        first_total = len(block.rows) - block.totals
        for i, row in enumerate(block.rows):
            table.add_row(
                *(Text(cell) for cell in row),
                style="bold" if i >= first_total else None,
                end_section=i == first_total - 1,
            )
        items.append(table)
    return Group(*items)


def emit(blocks: Sequence[Block], out: TextIO, console: Console | None) -> None:
    """The report as rich tables on a console, else as plain text on ``out``."""
    if console is not None:
        console.print(to_rich(blocks))
    else:
        print(to_text(blocks), file=out)


class LiveView:
    """A progress bar over the per-host table, on a rich console.

    rich's refresh thread is off: :meth:`refresh` is called by
    ``_demo.watch()`` on the event loop, where reading ``stats()`` is safe
    (rich's thread would read it from another thread). The view is
    transient: it is erased when the crawl ends, and the final report printed
    in its place.
    """

    def __init__(
        self, console: Console, *, total: int, description: str, label: Label
    ) -> None:
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._console = console
        self._label = label
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
        )
        self._task = self._progress.add_task(description, total=total)
        self._live = Live(
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def refresh(self, stats: PoolStats) -> None:
        from rich.console import Group

        # Leave room for the progress bar, headers and totals.
        rows = max(3, self._console.height - 10)
        table = host_table(stats, label=self._label, max_rows=rows)
        self._live.update(Group(self._progress, to_rich([table])), refresh=True)
