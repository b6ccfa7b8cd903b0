"""aioconnpool.testing: the loopback resolver never sends traffic elsewhere."""

from __future__ import annotations

import pytest

from aioconnpool.testing import LoopbackResolver


async def test_maps_names_to_loopback() -> None:
    resolver = LoopbackResolver(suffix=".test")
    [result] = await resolver.resolve("a.test", 8080)
    assert (result["host"], result["port"], result["hostname"]) == (
        "127.0.0.1",
        8080,
        "a.test",
    )
    assert resolver.calls == 1


async def test_refuses_names_outside_its_suffix() -> None:
    resolver = LoopbackResolver(suffix=".test")
    with pytest.raises(
        OSError, match=r"only resolves \*\.test names, not 'example\.com'"
    ):
        await resolver.resolve("example.com", 80)
