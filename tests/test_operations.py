"""A run stack's outputs come from the engine's own events: no ``stack output`` call after ``up``."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
from pulumi import automation as auto

from toolkit.engine import RunStack, list_run_stacks
from toolkit.errors import ProvisionError
from toolkit.progress import Progress

pytestmark = pytest.mark.engine


def _stack(tmp_path: Path, run_id: str, program) -> RunStack:
    return RunStack(run_id, f"file://{tmp_path / 'state'}", program, Progress(run_id, show=False))


def test_outputs_keep_their_json_types(tmp_path: Path) -> None:
    def program() -> None:
        pulumi.export("pid", 4242)
        pulumi.export("run_dir", "/tmp/run")
        pulumi.export("nested", {"names": ["a", "b"], "ok": True})

    stack = _stack(tmp_path, "0a0a0a0a0a0a", program)
    try:
        assert stack.up() == {"pid": 4242, "run_dir": "/tmp/run", "nested": {"names": ["a", "b"], "ok": True}}
    finally:
        stack.destroy_and_remove()
    assert list_run_stacks(stack.backend_url) == []


def test_a_secret_export_is_refused_with_its_name(tmp_path: Path) -> None:
    def program() -> None:
        pulumi.export("container_id", "abc")
        pulumi.export("token", pulumi.Output.secret("hidden"))

    stack = _stack(tmp_path, "0b0b0b0b0b0b", program)
    try:
        with pytest.raises(ProvisionError, match="exports token as secrets.*Export plain values"):
            stack.up()
    finally:
        stack.destroy_and_remove()


def test_a_stack_removed_between_listing_and_reading_its_tags_is_left_out(tmp_path: Path, monkeypatch) -> None:
    """A run that finishes while another process lists stacks must not fail the listing (gc, guardrails)."""
    stack = _stack(tmp_path, "0c0c0c0c0c0c", lambda: pulumi.export("pid", 1))
    try:
        stack.up()
        listed = auto.LocalWorkspace.list_stacks

        def listing_with_a_stack_already_gone(workspace):  # noqa: ANN001, ANN202 - patched method
            gone = auto.StackSummary(name="run-0d0d0d0d0d0d", current=False)
            return [gone, *listed(workspace)]

        monkeypatch.setattr(auto.LocalWorkspace, "list_stacks", listing_with_a_stack_already_gone)
        assert [name for name, _tags in list_run_stacks(stack.backend_url)] == ["run-0c0c0c0c0c0c"]
    finally:
        stack.destroy_and_remove()
