"""Fleet-wide per-host limits: many processes, one budget per host, on Redis.

    from aioconnpool import PoolConnector
    from aioconnpool.fleet import RedisFleet

    fleet = RedisFleet("redis://127.0.0.1:6379/0", name="news-crawl",
                       limit_per_host=4, host_limits={"slow.example.org": 1})
    connector = PoolConnector(limit=100, limit_per_host=8, fleet=fleet)

Needs the ``[redis]`` extra (redis-py). See ``docs/fleet.md`` for the design
and its guarantees.
"""

from ._config import mask_url
from ._errors import FleetTimeoutError, FleetUnavailableError
from ._redis import RedisFleet
from ._status import FleetHostStatus, FleetSessionStatus, FleetStatus, fleet_status

__all__ = [
    "FleetHostStatus",
    "FleetSessionStatus",
    "FleetStatus",
    "FleetTimeoutError",
    "FleetUnavailableError",
    "RedisFleet",
    "fleet_status",
    "mask_url",
]
