"""The Prefect harness's pieces that depend on the Docker daemon's state, fed that state as recorded.

The bridge's address is where the tests' Prefect server listens so that job containers reach it.
A Docker 20.10 daemon (Debian's) that has never been restarted reports the default bridge's
IPAM config without a ``Gateway``; only a restart fills it in. The document below is what
``docker network inspect bridge`` printed on such a daemon (ids shortened).
"""

from __future__ import annotations

import json

import pytest

from tests.prefect.harness import StepFailed, gateway_of, interface_ipv4

FRESH_DAEMON_BRIDGE = json.loads("""
{
  "Name": "bridge",
  "Id": "5b1c0f6e9d0b",
  "Created": "2026-12-07T03:20:11.310744106Z",
  "Scope": "local",
  "Driver": "bridge",
  "EnableIPv6": false,
  "IPAM": {"Driver": "default", "Options": null, "Config": [{"Subnet": "172.17.0.0/16"}]},
  "Internal": false,
  "Attachable": false,
  "Ingress": false,
  "ConfigFrom": {"Network": ""},
  "ConfigOnly": false,
  "Containers": {},
  "Options": {
    "com.docker.network.bridge.default_bridge": "true",
    "com.docker.network.bridge.enable_icc": "true",
    "com.docker.network.bridge.enable_ip_masquerade": "true",
    "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
    "com.docker.network.bridge.name": "docker0",
    "com.docker.network.driver.mtu": "1500"
  },
  "Labels": {}
}
""")


def _restarted(document: dict, gateway: str) -> dict:
    restarted = json.loads(json.dumps(document))
    restarted["IPAM"]["Config"][0]["Gateway"] = gateway
    return restarted


def test_a_fresh_daemons_bridge_without_gateway_gives_the_bridge_interfaces_address():
    asked = []

    def docker0(name: str) -> str | None:
        asked.append(name)
        return "172.17.0.1"

    assert gateway_of(FRESH_DAEMON_BRIDGE, docker0) == "172.17.0.1"
    assert asked == ["docker0"]


def test_without_the_interface_the_subnets_first_host_is_the_bridges_address():
    assert gateway_of(FRESH_DAEMON_BRIDGE, lambda name: None) == "172.17.0.1"


def test_a_reported_gateway_is_taken_as_it_is():
    assert gateway_of(_restarted(FRESH_DAEMON_BRIDGE, "10.9.0.1"), lambda name: None) == "10.9.0.1"


def test_a_bridge_with_no_address_at_all_is_an_error_naming_it():
    document = {**FRESH_DAEMON_BRIDGE, "IPAM": {"Config": []}}
    with pytest.raises(StepFailed, match="no address for bridge 'bridge'"):
        gateway_of(document, lambda name: None)


def test_the_interface_lookup_reads_a_real_interface_and_refuses_a_missing_one():
    assert interface_ipv4("lo") == "127.0.0.1"
    assert interface_ipv4("tk-no-such-if") is None
