"""The adaptive limit's algorithm alone: pure, synchronous, with a simulated
clock and simulated servers (no sockets)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioconnpool import AdaptiveLimit, LimitAdjusted, PoolConnector, PoolEvent
from aioconnpool._core.adaptive import AdaptiveController

Latency = Callable[[int], float]


def knee_at_4(in_flight: int) -> float:
    """A server that answers in 20 ms up to 4 requests at once, and slows
    down steeply past that (each request beyond 4 adds 40 ms)."""
    return 0.02 if in_flight <= 4 else 0.02 * (1 + 2 * (in_flight - 4))


def flat(in_flight: int) -> float:
    return 0.02


def simulate(
    controller: AdaptiveController[str],
    latency: Latency,
    *,
    clients: int = 24,
    start: float = 0.0,
    until: float = 5.0,
    overload: Callable[[int], bool] = lambda n: False,
) -> tuple[float, list[tuple[float, int]]]:
    """``clients`` closed-loop clients against one host: each request's
    latency is ``latency(requests in flight when it started)``. Returns the
    simulated time reached and the (time, limit) of every change."""
    now = start
    in_flight: list[tuple[float, float]] = []  # (end, start)
    idle_clients = clients
    changes: list[tuple[float, int]] = []
    while now < until:
        limit = controller.limit_of("h")
        while len(in_flight) < limit and idle_clients:
            idle_clients -= 1
            n = len(in_flight) + 1
            heapq.heappush(in_flight, (now + latency(n), now))
        end, began = heapq.heappop(in_flight)
        now = end
        idle_clients += 1
        demand = len(in_flight) + 1 + idle_clients
        changed = controller.sample(
            "h",
            now,
            end - began,
            overload=overload(len(in_flight) + 1),
            demand=demand,
        )
        if changed is not None:
            changes.append((now, changed))
    return now, changes


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"min": 0}, ValueError, ["min", "0"]),
        ({"max": 0}, ValueError, ["max", "0"]),
        ({"min": 8, "max": 4}, ValueError, ["min=8", "max=4"]),
        ({"min": "1"}, TypeError, ["min", "'1'"]),
        ({"max": 2.5}, TypeError, ["max", "2.5"]),
        ({"initial": 32}, ValueError, ["initial", "32"]),
        ({"window": 0}, ValueError, ["window", "0"]),
        ({"tolerance": 0.5}, ValueError, ["tolerance", "0.5"]),
        ({"smoothing": 0}, ValueError, ["smoothing", "0"]),
        ({"utilization": 2}, ValueError, ["utilization", "2"]),
        ({"overload_rate": float("nan")}, ValueError, ["overload_rate", "nan"]),
        ({"backoff": 1}, ValueError, ["backoff", "1"]),
        ({"drift": -0.1}, ValueError, ["drift", "-0.1"]),
        ({"min": True}, TypeError, ["min", "True"]),
    ],
)
def test_bad_adaptive_limits_raise_naming_the_value(
    kwargs: dict[str, object], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        AdaptiveLimit(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def test_bad_limit_per_host_raises_naming_the_value() -> None:
    with pytest.raises(ValueError, match=r"limit_per_host.*'fast'"):
        PoolConnector(limit_per_host="fast")
    with pytest.raises(TypeError, match="AdaptiveLimit instance"):
        PoolConnector(limit_per_host=AdaptiveLimit)
    with pytest.raises(ValueError, match="limit_per_host must be >= 0, got -1"):
        PoolConnector(limit_per_host=-1)


def test_defaults() -> None:
    config = AdaptiveLimit()
    assert (config.min, config.max, config.start) == (1, 16, 4)
    assert AdaptiveLimit(min=6, max=8).start == 6
    assert AdaptiveLimit(max=2).start == 2
    assert AdaptiveLimit(initial=10).start == 10
    assert AdaptiveController[str](config).limit_of("never seen") == 4


def test_the_controller_takes_only_an_adaptive_limit() -> None:
    with pytest.raises(TypeError, match="AdaptiveLimit, not int"):
        AdaptiveController(16)  # type: ignore[arg-type]


# -------------------------------------------------------------- the algorithm


def test_the_limit_settles_near_the_knee_and_comes_back_up() -> None:
    controller: AdaptiveController[str] = AdaptiveController(AdaptiveLimit())
    now, changes = simulate(controller, knee_at_4, until=5.0)
    late = [limit for at, limit in changes if at > 1.0]
    assert late, "the limit kept moving around the knee"
    assert set(late) <= {4, 5}
    figures = controller.figures("h")
    assert figures is not None
    # The baseline is the no-load latency, learned under load.
    assert figures.min_rtt == pytest.approx(0.02)
    # The server recovers: the limit climbs to the maximum.
    _, changes = simulate(controller, flat, start=now, until=now + 3.0)
    assert changes[-1][1] == 16
    assert controller.limit_of("h") == 16


def test_the_baseline_is_never_probed_by_pinning_the_limit_low() -> None:
    controller: AdaptiveController[str] = AdaptiveController(AdaptiveLimit())
    _, changes = simulate(controller, knee_at_4, until=10.0)
    # Envoy drops to a handful of requests on a timer to measure the
    # no-load latency; here the limit never leaves the knee's neighbourhood.
    assert min(limit for _, limit in changes) >= 4


def test_fast_errors_never_raise_the_limit() -> None:
    controller: AdaptiveController[str] = AdaptiveController(AdaptiveLimit())
    # 500s in a millisecond: faster than any real answer.
    _, changes = simulate(
        controller, lambda n: 0.001, overload=lambda n: True, until=2.0
    )
    limits = [4] + [limit for _, limit in changes]
    assert all(b < a for a, b in itertools.pairwise(limits))
    assert controller.limit_of("h") == 1
    figures = controller.figures("h")
    assert figures is not None
    assert figures.min_rtt is None  # errors are not speed
    assert figures.overloads == figures.samples > 0


def test_a_few_errors_stop_growth_without_cutting() -> None:
    config = AdaptiveLimit(window=10)
    controller: AdaptiveController[str] = AdaptiveController(config)
    now = 0.0
    for i in range(200):
        now += 0.01
        # One error per window of 10: under overload_rate (10 %).
        controller.sample("h", now, 0.01, overload=i % 10 == 0, demand=16)
    assert controller.limit_of("h") == 4


def test_an_idle_host_does_not_grow() -> None:
    controller: AdaptiveController[str] = AdaptiveController(AdaptiveLimit())
    now = 0.0
    for _ in range(1000):
        now += 0.01
        # Fast answers, but only one request at a time of the 4 allowed.
        assert controller.sample("h", now, 0.01, overload=False, demand=1) is None
    assert controller.limit_of("h") == 4
    # The same host under load grows.
    for _ in range(200):
        now += 0.01
        controller.sample("h", now, 0.01, overload=False, demand=20)
    assert controller.limit_of("h") > 4


def test_an_idle_host_moves_only_on_overload() -> None:
    controller: AdaptiveController[str] = AdaptiveController(
        AdaptiveLimit(window=5, initial=8)
    )
    now = 0.0
    for rtt in [0.01] * 5 + [0.1] * 20:  # slower, at 1 of 8 slots in use
        now += 0.2
        controller.sample("h", now, rtt, overload=False, demand=1)
    assert controller.limit_of("h") == 8  # not the limit's doing
    for _ in range(5):
        now += 0.2
        controller.sample("h", now, 0.01, overload=True, demand=1)
    assert controller.limit_of("h") == 6


def test_samples_from_before_a_change_are_stale() -> None:
    controller: AdaptiveController[str] = AdaptiveController(
        AdaptiveLimit(window=1, initial=8)
    )
    assert controller.sample("h", 1.0, 0.5, overload=True, demand=8) == 6
    # Started at 0.9, before the change at 1.0: the old limit's.
    assert controller.sample("h", 1.1, 0.2, overload=True, demand=8) is None
    assert controller.limit_of("h") == 6
    figures = controller.figures("h")
    assert figures is not None
    assert (figures.samples, figures.adjustments) == (1, 1)
    assert controller.sample("h", 1.2, 0.1, overload=True, demand=8) == 4


def test_the_limit_stays_within_min_and_max() -> None:
    controller: AdaptiveController[str] = AdaptiveController(
        AdaptiveLimit(min=3, max=6)
    )
    simulate(controller, flat, until=3.0)
    assert controller.limit_of("h") == 6
    simulate(controller, lambda n: 0.001, overload=lambda n: True, until=6.0)
    assert controller.limit_of("h") == 3


def test_events_and_figures() -> None:
    controller: AdaptiveController[str] = AdaptiveController(
        AdaptiveLimit(window=2, smoothing=1)
    )
    events: list[PoolEvent] = []
    controller.observe(events)
    controller.sample("h", 1.0, 0.1, overload=False, demand=10)
    controller.sample("h", 1.1, 0.1, overload=False, demand=10)  # grows to 5
    controller.sample("h", 2.0, 0.5, overload=False, demand=10)
    controller.sample("h", 2.1, 0.5, overload=False, demand=10)  # shrinks
    assert [(e.previous, e.limit, e.reason) for e in events] == [  # type: ignore[attr-defined]
        (4, 5, "growth"),
        (5, 3, "latency"),  # 5 * 0.5 + sqrt(5) / 2
    ]
    last = events[-1]
    assert isinstance(last, LimitAdjusted)
    assert (last.at, last.gradient) == (2.1, 0.5)
    assert str(last.key) == "h"  # the controller's own key type
    assert last.min_rtt == pytest.approx(0.1)
    assert last.rtt == pytest.approx(0.5)
    assert controller.adjustments == 2
    assert dict(controller.all_figures())["h"].adjustments == 2
    controller.observe(None)
    controller.forget("h")
    assert controller.figures("h") is None
    assert len(controller) == 0


def test_hosts_beyond_the_history_are_forgotten_oldest_first() -> None:
    controller: AdaptiveController[str] = AdaptiveController(
        AdaptiveLimit(window=1), history=2
    )
    for i, host in enumerate(["a", "b", "a", "c"]):
        controller.sample(host, float(i + 1), 0.0, overload=True, demand=1)
    assert {key for key, _ in controller.all_figures()} == {"a", "c"}


@given(
    st.lists(
        st.tuples(
            st.floats(0, 1, allow_nan=False),
            st.booleans(),
            st.integers(0, 40),
            st.floats(0, 0.5, allow_nan=False),
        ),
        max_size=300,
    ),
    st.integers(1, 8),
    st.integers(0, 12),
)
def test_any_samples_keep_the_limit_whole_and_in_bounds(
    samples: list[tuple[float, bool, int, float]], low: int, extra: int
) -> None:
    config = AdaptiveLimit(min=low, max=low + extra, window=3)
    controller: AdaptiveController[str] = AdaptiveController(config)
    now = 0.0
    for rtt, overload, demand, step in samples:
        now += step
        before = controller.limit_of("h")
        changed = controller.sample("h", now, rtt, overload=overload, demand=demand)
        limit = controller.limit_of("h")
        assert config.min <= limit <= config.max
        assert changed in (None, limit)
        assert (changed is None) == (limit == before)
        if overload and changed is not None:
            # A window with an overload sample never grows the limit.
            assert changed < before


def test_the_core_reports_a_keys_demand() -> None:
    from aioconnpool._core import PoolCore

    core: PoolCore[str, object, str] = PoolCore(
        limit=None, limit_for=lambda key: 1, group=str, keepalive_timeout=None
    )
    assert core.demand("k") == 0
    core.acquire("k")  # a permit to connect
    core.acquire("k")  # queued behind it
    assert core.demand("k") == 2
    assert core.demand("other") == 0
