"""A pytest plugin for the device check: run the test modules named in ``GPUDP_TESTS_FIRST`` (comma-separated
paths such as ``tests/test_mac.py``) before all others, each module's tests in their usual order.

``bash benchmarks/device_check.sh`` loads it with ``-p benchmarks.pytest_first`` so that, when its time limit
ends the GPU test run early, the newest operators' tests have already run.
"""
from __future__ import annotations

import os


def _first_modules():
    return [p.strip().replace(os.sep, "/") for p in os.environ.get("GPUDP_TESTS_FIRST", "").split(",") if p.strip()]


def pytest_collection_modifyitems(config, items):
    first = _first_modules()
    if not first:
        return

    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, m in enumerate(first) if path == m or path.endswith("/" + m)), len(first))

    items[:] = sorted(items, key=rank)   # stable: the order within each group is kept
