"""The selection policy: gateway-config TOML read as "which servers may this request reach"."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.policy import ConfigError, default_policy, load_policy, loads_policy
from reference.gateway.selection import client_hash

CLIENT = ("198.51.100.2", 40000)
VIP = "192.0.2.10"


def get(path: str, host: str = "vip.example") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def test_round_robin_allows_any_server_of_the_chosen_pool() -> None:
    pol = default_policy()
    assert pol.allowed_servers(VIP, 80, get("/index.html"), CLIENT) == {
        ("203.0.113.11", 80), ("203.0.113.12", 80)}
    assert pol.allowed_servers(VIP, 80, get("/api/x"), CLIENT) == {("203.0.113.13", 80)}
    assert pol.pool_of(VIP, 80, get("/api/x")) == "api"


def test_no_service_allows_nothing() -> None:
    pol = default_policy()
    assert pol.allowed_servers("192.0.2.99", 80, get("/"), CLIENT) == set()
    assert pol.allowed_servers(VIP, 8080, get("/"), CLIENT) == set()
    assert not pol.serves(VIP, 8080)


def test_non_l7_allows_any_server_of_any_pool_of_the_service() -> None:
    every = {("203.0.113.11", 80), ("203.0.113.12", 80), ("203.0.113.13", 80)}
    assert default_policy(l7=False).allowed_servers(VIP, 80, get("/api/x"), CLIENT) == every
    assert default_policy().allowed_servers(VIP, 80, b"", CLIENT, l7=False) == every


def test_unparseable_head_falls_back_to_the_default_pool() -> None:
    pol = default_policy()
    assert pol.request_head(b"GET / HT") is None
    assert pol.allowed_servers(VIP, 80, b"GET / HT", CLIENT) == {
        ("203.0.113.11", 80), ("203.0.113.12", 80)}


HASHED = """
[gateway]
server_address6 = "2001:db8:2::1"

[[service]]
name = "web"
vip = "192.0.2.10"
default_pool = "h"

  [[service.rule]]
  host = "api.example"
  pool = "api"

[pool.h]
servers = ["203.0.113.11:80", "203.0.113.12:80", "203.0.113.13:80"]
method = "hash"

[pool.api]
servers = ["[2001:db8:2::13]:8080"]
"""


def test_hash_allows_exactly_the_server_the_hash_picks() -> None:
    pol = loads_policy(HASHED)
    servers = ["203.0.113.11", "203.0.113.12", "203.0.113.13"]
    seen = set()
    for port in range(40000, 40020):
        got = pol.allowed_servers(VIP, 80, get("/"), ("198.51.100.2", port))
        want = servers[client_hash(("198.51.100.2", port)) % 3]
        assert got == {(want, 80)}
        seen.add(want)
    assert len(seen) > 1  # the hash really depends on the client
    assert pol.allowed_servers(VIP, 80, get("/", host="API.example."), CLIENT) == {
        ("2001:db8:2::13", 8080)}


def test_config_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text('[[service]]\nname = "web"\nvip = "192.0.2.10"\ndefault_pool = "nope"\n')
    with pytest.raises(ConfigError) as err:
        load_policy(bad)
    assert f"{bad}:" in str(err.value)
    assert any(p.line >= 1 for p in err.value.errors)
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[[service]]\nname = \n")
    with pytest.raises(ConfigError, match=r"syntax\.toml:2"):
        load_policy(syntax)


def test_the_suites_policy_file_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "conformance" / "policy.toml"
    if not path.exists():
        pytest.skip("conformance/policy.toml not present")
    pol = load_policy(path)
    assert pol.allowed_servers(VIP, 80, get("/", host="api.example"), CLIENT) == {
        ("203.0.113.13", 80)}
    assert pol.allowed_servers("2001:db8::10", 80, get("/api/v1"), CLIENT) == {
        ("2001:db8:2::13", 80)}
