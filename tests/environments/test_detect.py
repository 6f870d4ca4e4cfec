"""Auto-detection: the distributions a pickled call uses, and only those."""

from __future__ import annotations

import functools
import json
import sys
import textwrap
from pathlib import Path

import humanize
import pytest

from toolkit.environments import detect


def used(fn, *args, **kwargs) -> dict[str, set[str]]:
    return detect.distributions_of(detect.referenced_modules(fn, args, kwargs))


def test_an_import_inside_the_function_is_found():
    def f():
        import humanize.time  # noqa: F401

        return json.dumps(1)

    assert used(f) == {"humanize": {"humanize.time"}}


def test_a_global_module_a_closure_and_a_default_are_found():
    def global_module():
        return humanize.naturalsize(1)

    size = humanize.naturalsize

    def closure():
        return size(1)

    def default(fmt=humanize.intcomma):
        return fmt(1)

    assert set(used(global_module)) == {"humanize"}
    assert set(used(closure)) == {"humanize"}
    assert set(used(default)) == {"humanize"}
    assert set(used(functools.partial(print, humanize.intword))) == {"humanize"}


def test_arguments_count_too():
    assert set(used(print, humanize.naturalsize)) == {"humanize"}
    assert set(used(print, [{"f": humanize.naturaldelta}])) == {"humanize"}


def test_the_standard_library_and_the_runners_own_dependencies_are_left_out():
    import cloudpickle
    import fsspec

    def f():
        import collections  # noqa: F401
        import os  # noqa: F401

        return cloudpickle, fsspec, json

    assert used(f) == {}


def test_a_local_module_is_walked_into_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    package = tmp_path / "teamlib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fmt.py").write_text(textwrap.dedent("""
        import humanize

        class Report:
            def render(self, n):
                return humanize.intcomma(n)

        def helper(n):
            import six  # a second distribution, used only here
            return six.text_type(n)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from teamlib import fmt

    try:
        # The module object travels whole (cloudpickle ships a by-value module's namespace) ...
        assert set(used(lambda: fmt.Report().render(1))) == {"humanize", "six"}
        # ... a class or function of it only with what its own code references.
        assert set(used(print, fmt.Report())) == {"humanize"}
        assert set(used(fmt.helper)) == {"six"}
    finally:
        for name in [m for m in sys.modules if m.startswith("teamlib")]:
            del sys.modules[name]


def test_the_distribution_map_is_cached_on_disk():
    detect.module_distributions()
    assert list((detect.settings.cache_dir() / "environments").glob(f"distributions-{detect.site_fingerprint()}.json"))
