"""A pytest plugin that writes one outcome per test id to a JSON file.

Loaded with ``-p record_plugin`` in both runs of the peer suite (baseline and
swapped), so that ``peer/run.py`` compares the same ids the same way. The
file named by ``PEER_RECORD`` receives ``{"outcomes": {nodeid: outcome},
"durations": {nodeid: seconds}}``, where outcome is ``passed``, ``failed``
(any phase failed: setup, call or teardown), ``skipped``, ``xfailed`` or
``xpassed``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_outcomes: dict[str, str] = {}
_durations: dict[str, float] = {}

_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 1, "failed": 2}


def _outcome_of(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    return str(report.outcome)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = _outcome_of(report)
    if report.when != "call" and outcome == "passed":
        _outcomes.setdefault(report.nodeid, "passed")
    else:
        # The worst phase wins: a test whose teardown fails has failed.
        current = _outcomes.get(report.nodeid, "passed")
        if _RANK[outcome] >= _RANK[current]:
            _outcomes[report.nodeid] = outcome
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:  # a file that cannot be imported counts as one failure
        _outcomes[report.nodeid] = "failed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("PEER_RECORD")
    if not target:
        return
    Path(target).write_text(
        json.dumps({"outcomes": _outcomes, "durations": _durations}, indent=0),
        encoding="utf-8",
    )
