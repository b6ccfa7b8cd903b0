"""Stats snapshots as JSON-safe dicts (``aioconnpool crawl --json``, ``to_dict``).

Serialization is generic: every dataclass field, then every public property
(``open``), in declaration order, so a counter added to ``PoolStats`` later
appears in the output without a change here. Values are converted as follows:

* a ``PoolKey`` becomes its string, ``http://host:port`` (also as a mapping
  key); a ``PoolKey`` never carries credentials;
* a nested dataclass (``forgotten: HostStats``) becomes a dict;
* a mapping becomes a dict with string keys, a tuple or list a list;
* ``inf`` / ``-inf`` become ``"+Inf"`` / ``"-Inf"`` (Prometheus' spelling, for
  histogram bounds) and ``nan`` becomes ``None``: strict JSON has none of them.

Anything else raises ``TypeError`` naming the field path, so a new field of an
unforeseen type is caught by the tests rather than written out as a ``repr``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from ._keys import PoolKey

__all__ = ["stats_to_dict"]

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, ...]


def stats_to_dict(obj: object) -> dict[str, JSONValue]:
    """A ``PoolStats``, ``HostStats`` or ``ConnectionInfo`` as a JSON-safe dict.

    ``json.dumps(stats_to_dict(connector.stats()))`` always succeeds and
    ``json.loads`` gives back the same dict.
    """
    if not _is_dataclass_instance(obj):
        raise TypeError(
            "stats_to_dict() takes a PoolStats, HostStats or ConnectionInfo, "
            f"not {type(obj).__name__}"
        )
    return _dataclass_to_dict(obj, type(obj).__name__)


def _is_dataclass_instance(obj: object) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _dataclass_to_dict(obj: object, path: str) -> dict[str, JSONValue]:
    out: dict[str, JSONValue] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        out[f.name] = _value(getattr(obj, f.name), f"{path}.{f.name}")
    for name in _public_properties(type(obj)):
        if name not in out:
            out[name] = _value(getattr(obj, name), f"{path}.{name}")
    return out


def _public_properties(cls: type) -> list[str]:
    """Public property names of ``cls``, base classes first, each once."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if (
                isinstance(attr, property)
                and not name.startswith("_")
                and name not in names
            ):
                names.append(name)
    return names


def _value(value: object, path: str) -> JSONValue:
    # bool before int (bool is an int); PoolKey before tuple (it is one).
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return value
    if isinstance(value, PoolKey):
        return str(value)
    if _is_dataclass_instance(value):
        return _dataclass_to_dict(value, path)
    if isinstance(value, Mapping):
        return {_key(k, path): _value(v, f"{path}[{k!s}]") for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"stats_to_dict(): {path} is a {type(value).__name__}, "
        "which has no JSON form here"
    )


def _key(key: object, path: str) -> str:
    if isinstance(key, (PoolKey, str)):
        return str(key)
    if isinstance(key, (bool, int, float)):
        # JSON object keys are strings; json.dumps would convert these anyway.
        return str(key)
    raise TypeError(
        f"stats_to_dict(): {path} has a {type(key).__name__} key, "
        "which has no JSON form here"
    )
