"""The plumbing the benchmark scripts of ``bench/`` share (``harness.cli``:
mode flags and the JSON write; ``harness.server``: the loopback server)."""
