"""A short run of the randomised soak (``bench/soak.py``) in every ``make test``.

Same scenario code as ``make soak``, a few seconds long: random faults,
cancellations and timeouts over many host names, with the pool invariants
checked during the run, at quiet checkpoints and after close. No timing is
asserted; the figures only need to show that every kind of trouble happened.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.bench_scripts import load_bench_script


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    return load_bench_script("soak")


def test_plan_is_a_function_of_the_seed(soak: ModuleType) -> None:
    plan = soak.make_plan(7, 500, 50)
    assert soak.plan_digest(plan) == soak.plan_digest(soak.make_plan(7, 500, 50))
    assert soak.plan_digest(plan) != soak.plan_digest(soak.make_plan(8, 500, 50))


async def test_short_soak_breaks_no_invariant(soak: ModuleType) -> None:
    report = await soak.soak(duration=3.0, requests=1600, seed=20240611, hosts=60)
    assert report.violations == []
    assert report.leaks == 0
    assert report.requests >= soak.ROUND  # at least one quiet checkpoint
    assert report.checkpoints >= 1
    assert report.samples > 0
    assert report.cancellations > 0
    assert report.timeouts > 0
    # Every server fault and every connection-level fault was injected.
    assert set(report.faults) == set(soak.PATH_FAULTS) | set(soak.SERVERS) - {"by-path"}
    assert "open=0 os_sockets=0" in report.final
