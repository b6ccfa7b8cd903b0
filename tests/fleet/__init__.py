"""Fleet-wide limits across OS processes: a real Redis, worker subprocesses
(``worker.py``) and a loopback server that counts its own concurrent requests
per Host (``conftest.py``)."""
