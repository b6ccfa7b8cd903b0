"""A live web page of the pool: ``dashboard_app()`` to mount in your own
``aiohttp.web`` app, ``serve_dashboard()`` to serve it from a thread of its
own, which answers even while the pool's event loop is stuck::

    from aioconnpool.web import serve_dashboard

    server = serve_dashboard(connector)      # inside a coroutine
    print("dashboard:", server.url)          # http://127.0.0.1:PORT/
    ...
    server.close()

Totals, a per-host table (sorted, filtered and paginated on the server),
the wait/connect/hold/lifetime histograms as charts, how acquisitions ended
and why connections closed, a live events tail, leak suspects, and the
fleet's figures. JSON at ``status.json``, ``stats.json`` (the ``to_dict()``
schema), ``hosts.json?sort=&order=&q=&page=&per_page=`` and
``events.json?after=``. Read-only, loopback by default, an optional token,
no credentials anywhere. Assets ship in the package: no CDN, no build step.
See ``docs/dashboard.md``.
"""

from ._app import DashboardServer, dashboard_app, serve_dashboard
from ._hosts import COLUMNS

__all__ = ["COLUMNS", "DashboardServer", "dashboard_app", "serve_dashboard"]
