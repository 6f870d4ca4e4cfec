"""How a map's workers claim items (``toolkit.runner.claim_items``), on a store in memory whose claims
are exclusive creates, as in object storage: each worker its own stripe first, then what others left
(from the end), and, while told to wait, items released for a retry until the client says all are done."""

from __future__ import annotations

import itertools
import threading

import pytest

from toolkit.runner import claim_items, main


class MemoryStore:
    """Claims and a client's word (``waiting``) in memory; ``script`` answers successive ``waiting`` calls."""

    def __init__(self, count: int, script: list[list[int] | None] | None = None) -> None:
        self.count = count
        self.claims: dict[int, str] = {}
        self.lock = threading.Lock()
        self.script = list(script or [])

    def claim(self, index: int, worker: str) -> bool:
        with self.lock:
            if index in self.claims:
                return False
            self.claims[index] = worker
            return True

    def waiting(self, count: int) -> list[int] | None:
        if self.script:
            return self.script.pop(0)
        pending = [index for index in range(count) if index not in self.claims]
        return pending or None


def test_a_striped_worker_takes_its_own_items_first_then_the_rest_from_the_end() -> None:
    store = MemoryStore(10)
    first = claim_items(store, 10, "w0", wait=False, stripe=(0, 3))
    assert list(itertools.islice(first, 4)) == [0, 3, 6, 9]  # its stripe
    assert next(first) == 8  # then the end of what nobody holds
    assert store.claims[8] == "w0"


def test_striped_workers_running_at_once_claim_every_item_exactly_once() -> None:
    store = MemoryStore(200)
    ran: list[tuple[str, int]] = []

    def work(number: int) -> None:
        for index in claim_items(store, 200, f"w{number}", wait=False, stripe=(number, 4)):
            ran.append((f"w{number}", index))

    threads = [threading.Thread(target=work, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(index for _, index in ran) == list(range(200))
    assert all(store.claims[index] == worker for worker, index in ran)


def test_a_waiting_worker_takes_a_released_item_and_leaves_when_all_are_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("toolkit.runner.AWAIT_SECONDS", 0.01)
    store = MemoryStore(2, script=[[], [5], None])  # nothing yet; item 5 released; all done
    store.claims.update({0: "w0", 1: "w1"})
    assert list(claim_items(store, 2, "w2", wait=True, stripe=(0, 2))) == [5]
    assert store.claims[5] == "w2" and not store.script


def test_an_unworkable_stripe_is_refused_at_the_start(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--storage", "/nonexistent", "--items", "3", "--stripe", "3/3"])
    assert "'3/3' is not K/P" in capsys.readouterr().err


def test_the_client_tells_signed_workers_what_waits_and_when_all_is_done(tmp_path) -> None:  # noqa: ANN001
    """``ItemResults(control=True)``: each poll that changes something rewrites ``control.json`` (the
    workers' only view of the map, since a signed URL cannot list the store)."""
    import json

    from toolkit.bundles import Outcome, seal_outcome
    from toolkit.fanout.results import ItemResults
    from toolkit.storage_urls import CONTROL_NAME

    for directory in ("claims", "results"):
        (tmp_path / "run" / directory).mkdir(parents=True)
    items = ItemResults(str(tmp_path / "run"), {}, 3, "k" * 64, tmp_path / "spool", control=True)
    control = tmp_path / "run" / CONTROL_NAME
    items.poll()
    assert json.loads(control.read_text()) == {"pending": [0, 1, 2], "done": False}
    (tmp_path / "run" / "claims" / "1").write_text("w0")
    items.poll()
    assert json.loads(control.read_text()) == {"pending": [0, 2], "done": False}
    items.release(1)  # its worker died: the item waits again
    items.poll()
    assert json.loads(control.read_text())["pending"] == [0, 1, 2]
    for index in range(3):
        result = seal_outcome(Outcome("value", b"\x80\x04K\x01."), "k" * 64, index=index)
        (tmp_path / "run" / "results" / f"{index}.tkb").write_bytes(result)
    assert items.poll()
    assert json.loads(control.read_text()) == {"pending": [], "done": True}
