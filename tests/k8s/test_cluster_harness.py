"""The harness's failure reporting: a component that does not come up is named, with its log's end."""

from __future__ import annotations

import pytest

from tests.k8s.cluster import ClusterError, _start, _stop_processes, _wait_ready
from tests.k8s.components import Component
from tests.k8s.layout import Layout


@pytest.fixture
def where(tmp_path) -> Layout:
    layout = Layout(cache=tmp_path / "cache", run=tmp_path / "run")
    layout.state.mkdir(parents=True)
    return layout


def test_a_component_that_exits_is_named_with_its_exit_code_and_log(where):
    component = Component(name="kube-apiserver", argv=["sh", "-c", "echo 'bind: address already in use'; exit 3"],
                          probe=lambda: "not listening", timeout=30)
    with pytest.raises(ClusterError, match=r"(?s)kube-apiserver exited with code 3 while starting\. "
                                           r"Its log .*kube-apiserver\.log ends:\nbind: address already in use"):
        _wait_ready(where, component, _start(where, component))


def test_a_component_that_never_gets_ready_is_named_with_what_it_waited_for(where):
    component = Component(name="kubelet", argv=["sleep", "60"], probe=lambda: "node 'toolkit-node' not Ready",
                          timeout=1)
    try:
        with pytest.raises(ClusterError, match=r"kubelet did not come up within 1 s \(node 'toolkit-node' not Ready\)"):
            _wait_ready(where, component, _start(where, component))
    finally:
        _stop_processes(where, lambda line: None, {"kubelet"})
