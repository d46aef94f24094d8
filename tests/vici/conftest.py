"""Fixtures of the VICI tests: the end-to-end tests' namespaces, work directory and pair
of daemons (tests/e2e)."""

from tests.e2e.conftest import lab, workdir  # noqa: F401 (fixtures used by name)
from tests.e2e.test_aioipsec_pair import pair  # noqa: F401
