"""Suite-wide pytest hooks: the ``needs`` marker for real components (see tests/components.py).

``@pytest.mark.needs("root", "charon")`` on a test, a class or a module's ``pytestmark``
skips it, naming what is missing and how to install it, or fails it under ``CI=true``.
"""

from __future__ import annotations

import pytest

from tests.components import COMPONENTS, require_component


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*components): the test drives these real components ("
        + ", ".join(COMPONENTS)
        + "); skipped when one is missing, a failure under CI=true",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    names = [name for mark in item.iter_markers("needs") for name in mark.args]
    if names:
        require_component(*dict.fromkeys(names))
