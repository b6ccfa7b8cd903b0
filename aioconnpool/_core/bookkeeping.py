"""What every event of the core shares: counting, key life, and the idle put.

:class:`Bookkeeping` holds the steps that arrivals, releases and closes all
take: count an acquisition's end and a connection's close (per key and in
total, with their histograms and events), open a key on its first request and
retire it when it holds nothing, keep a connection idle or settle the ones the
idle store let go. It changes state only as part of an event of a subclass,
never on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Any, Final

from .. import _events as ev
from .._histogram import BOUNDS, BUCKET_BY_MS, BY_MS_END, BY_MS_LAST
from .counters import (  # the layout's indices, re-exported for the events
    CLOSED_INDEX,
    CONNECT,
    EOF,
    HISTOGRAMS_AT,
    HOLD,
    HOLD_AT,
    HOLD_SUM,
    LIFETIME,
    N_BUCKETS,
    RELEASED_INDEX,
    SUMS_AT,
    WAIT,
    WAIT_AT,
    WAIT_SUM,
)
from .ready import ReadyQueue
from .records import (
    GONE,
    Closing,
    ConnRecord,
    KeyState,
    counts_of,
)
from .view import C, G, K, PoolView

# Final: the compiled core (setup.py) reads these as C statics, not by name
# (a module name is a dictionary lookup at every use).
_BOUNDS: Final = BOUNDS
_BUCKET_BY_MS: Final = BUCKET_BY_MS
_CLOSED_INDEX: Final = CLOSED_INDEX
_RELEASED_INDEX: Final = RELEASED_INDEX

__all__ = [
    "CONNECT",
    "EOF",
    "HOLD",
    "HOLD_AT",
    "HOLD_SUM",
    "LIFETIME",
    "WAIT",
    "WAIT_AT",
    "WAIT_SUM",
    "Bookkeeping",
    "bucket_by_table",
]


class Bookkeeping(PoolView[K, C, G]):
    """The state :class:`~aioconnpool._core.pool.PoolCore` builds, and the
    steps its events share."""

    _group: Callable[[K], G]
    _clock: Callable[[], float]
    _ready: ReadyQueue
    _seqs: itertools.count[int]
    _events: list[ev.PoolEvent] | None

    # ------------------------------------------------------ events

    def observe(self, sink: list[ev.PoolEvent] | None) -> None:
        """Append an event for every step to ``sink`` from now on (``None``:
        stop). The caller empties it; events carry ``group(key)`` as key."""
        self._events = sink

    # ---------------------------------------------------- key life

    def _open_key(self, key: K) -> KeyState:
        frozen = self._history.revive(key)
        ks = KeyState(key, self._limit_for(key), frozen)
        self._keys[key] = ks
        return ks

    def _retire_if_empty(self, ks: KeyState) -> None:
        # KeyState.is_empty, inlined: every new connection's key passes here.
        if ks.acquired or ks.connecting or ks.idle or ks.waiting:
            return
        if self._keys.get(ks.key) is not ks:
            return
        del self._keys[ks.key]
        self._history.retire(ks.key, counts_of(ks))

    # ---------------------------------------------------- idle put

    def _keep(
        self, ks: KeyState, rec: ConnRecord, closes: list[Closing], now: float
    ) -> None:
        """``rec`` comes back keep-alive: idle it, unless the idle policy
        closes it (or others) instead."""
        dropped = self._idle.put(ks, rec, now)
        if dropped is not None:
            self._settle_closings(dropped, closes, now)

    def _settle_closings(
        self, dropped: list[tuple[ConnRecord, str]], closes: list[Closing], now: float
    ) -> None:
        """Forget and count connections the idle store closed; keys left
        with nothing retire."""
        for rec, reason in dropped:
            ks = rec.key
            del self._conns[rec.handle]
            rec.state = GONE
            self._count_close(ks, reason, now, rec.created_at, rec.served)
            closes.append(Closing(rec.handle, reason, ks.key))
        # Only once every closing is counted: a retired key's counters are
        # folded into the history and must not change afterwards.
        for rec, _reason in dropped:
            self._retire_if_empty(rec.key)

    # ---------------------------------------------------- counting

    def _count_release(self, ks: KeyState, how: str, now: float, since: float) -> None:
        """An acquisition (held since ``since``) ended ``how``.

        ``Releases.release`` counts the same inline (the hot path): change
        both together."""
        counts, totals = ks.counts, self._totals
        i = _RELEASED_INDEX[how]
        if i != EOF:  # the totals work "eof" out when read (read_totals)
            counts[i] += 1
            totals[i] += 1
        else:
            ks.released_eof += 1
        held = now - since
        i = HOLD_AT + bucket_by_table(held)
        counts[i] += 1
        totals[i] += 1
        ks.hold_sum += held
        totals[SUMS_AT + HOLD] += held
        if self._events is not None:
            self._events.append(ev.Released(self._ekey(ks.key), now, how, now - since))

    def _count_close(
        self, ks: KeyState, reason: str, now: float, born: float, served: int
    ) -> None:
        """A connection (created at ``born``) was closed for ``reason``."""
        i = _CLOSED_INDEX[reason]
        ks.counts[i] += 1
        self._totals[i] += 1
        self._observe(ks, LIFETIME, now - born)
        if self._events is not None:
            self._events.append(
                ev.Closed(self._ekey(ks.key), now, reason, now - born, served)
            )

    def _ekey(self, key: Hashable) -> Any:
        """An event's key: the group (``PoolKey`` in the connector)."""
        return self._group(key)  # type: ignore[arg-type]

    def _observe(self, ks: KeyState, which: int, seconds: float) -> None:
        # For the key and the totals.
        i = HISTOGRAMS_AT + which * N_BUCKETS + bucket_by_table(seconds)
        ks.counts[i] += 1
        if which == CONNECT:
            ks.connect_sum += seconds
        elif which == LIFETIME:
            ks.lifetime_sum += seconds
        elif which == WAIT:
            ks.wait_sum += seconds
        else:
            ks.hold_sum += seconds
        totals = self._totals
        totals[i] += 1
        totals[SUMS_AT + which] += seconds


def bucket_by_table(seconds: float) -> int:
    """``_histogram.bucket_of(seconds)``, by the table (``BUCKET_BY_MS``): a
    multiplication and two comparisons for anything under 10 s, where a scan
    compares once per bucket passed (a connection's lifetime passes many).

    ``Releases.release`` and ``Grants._grant`` inline the same (the hot
    paths): change all three together (``tests/test_core.py`` checks this
    one against ``bisect_left`` at every millisecond). Compiled, this is a
    direct C call.
    """
    ms = int(seconds * 1000.0)
    if 0 <= ms < BY_MS_END:
        b = _BUCKET_BY_MS[ms]
        if b and seconds <= _BOUNDS[b - 1]:
            b -= 1
        return b
    b = BY_MS_LAST if ms > 0 else 0  # 10 s or more (or a clock gone back)
    while seconds > _BOUNDS[b]:
        b += 1
    return b
