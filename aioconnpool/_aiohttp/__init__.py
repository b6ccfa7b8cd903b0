"""The aiohttp glue: ``PoolConnector``, a ``TCPConnector`` subclass that
translates aiohttp's calls into core events and carries out the core's
decisions (waking waiters, closing sockets). It keeps no pool state of its
own. Every access to aiohttp's private internals is in ``compat``."""
