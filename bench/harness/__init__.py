"""The plumbing the benchmark scripts of ``bench/`` share.

One concern a module; the scripts keep their workloads and their reports:

* :mod:`harness.cli` -- the mode flags, the run's JSON record and how it is
  written (atomically);
* :mod:`harness.machine` -- what the run ran on: interpreter, platform, CPU
  count, load average, package versions, sockets in TIME_WAIT;
* :mod:`harness.timing` -- the garbage collector kept out of (or timed in) a
  window, timed batches, calls per operation, percentiles;
* :mod:`harness.report` -- plain-text tables, ratios, spreads and sizes;
* :mod:`harness.clients` -- the clients under test (aiohttp's connector,
  aioconnpool's, httpx) behind one ``fetch(url)``, every ``*.test`` host
  name resolving to the loopback address;
* :mod:`harness.server` -- the loopback HTTP server, in a process of its own.

The scripts run as ``python bench/<script>.py``, so ``bench/`` is on
``sys.path`` and they import ``harness.<module>``.
"""
