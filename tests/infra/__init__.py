"""Target tests under Pulumi mocks; ``conformance`` and ``storage_roundtrip`` hold shared assertions.

Registered for pytest's assertion rewriting (it rewrites only ``test_*.py`` and conftest files
itself), so a failing shared assert shows its values instead of a bare ``AssertionError``.
"""

import pytest

pytest.register_assert_rewrite("tests.infra.conformance", "tests.infra.storage_roundtrip")
