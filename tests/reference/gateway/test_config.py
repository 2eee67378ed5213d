"""The config file format: the default round-trips, every bad entry is reported at its line
with what to do, and selection routes every request to a server of the service's pools."""

from __future__ import annotations

import pickle
import textwrap
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.gateway import config as config_module
from reference.gateway.config import (
    DEFAULT_CONFIG_TOML,
    ConfigError,
    ConfigProblem,
    GatewayConfig,
    Pool,
    Rule,
    Server,
    VirtualService,
    default_config,
    load,
    loads,
)
from reference.gateway.selection import (
    Counters,
    Selector,
    normalize_host,
    pool_for,
    request_path,
    select,
    service_for,
)
from spec.eligibility import RequestHead, parse_request_head


def toml(text: str) -> str:
    """Inline TOML written indented in the test; line 1 is the line after the quotes."""
    return textwrap.dedent(text)


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads(text)
    return info.value


def assert_problem(text: str, line: int, on_line: str, *fragments: str) -> None:
    """``on_line`` is on ``line`` of the text (so the expected number is right), and a problem
    containing every fragment is reported there, in the documented message format."""
    assert on_line in text.splitlines()[line - 1], "the test's own line number is wrong"
    err = error_of(text)
    here = [str(p) for p in err.errors if p.line == line]
    assert any(all(f in m for f in fragments) for m in here), str(err)
    assert all(m.startswith(f"<string>:{line}: ") and "; " in m for m in here)
    assert f"<string>:{line}: " in str(err)


# --------------------------------------------------------------------------- valid configs

def doc_example() -> str:
    """The TOML block of the config module's docstring."""
    block = (config_module.__doc__ or "").split(".. code-block:: toml\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_default_config_round_trips() -> None:
    assert loads(DEFAULT_CONFIG_TOML) == default_config()


def test_default_config_is_the_topology() -> None:
    cfg = default_config()
    web, web6 = cfg.services
    assert (web.vip, web.port, web.default_pool) == ("192.0.2.10", 80, "static")
    assert web.rules == (Rule(pool="api", path_prefix="/api/"),)
    assert (web6.vip, web6.port, web6.default_pool) == ("2001:db8::10", 80, "static6")
    assert web6.rules == (Rule(pool="api6", path_prefix="/api/"),)
    servers = {name: [str(s) for s in p.servers] for name, p in cfg.pools.items()}
    assert servers == {"static": ["203.0.113.11:80", "203.0.113.12:80"],
                       "api": ["203.0.113.13:80"],
                       "static6": ["[2001:db8:2::11]:80", "[2001:db8:2::12]:80"],
                       "api6": ["[2001:db8:2::13]:80"]}
    assert {p.method for p in cfg.pools.values()} == {"round_robin"}
    assert cfg.server_address == "203.0.113.1"
    assert cfg.server_address6 == "2001:db8:2::1"
    assert cfg.isn_secret is None


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(DEFAULT_CONFIG_TOML, encoding="utf-8")
    assert load(path) == default_config()
    assert load(str(path)) == default_config()


def test_the_docstring_example_is_a_full_valid_config() -> None:
    cfg = loads(doc_example())
    assert cfg == GatewayConfig(
        services=(VirtualService(
            name="web", vip="192.0.2.10", port=80, default_pool="static",
            rules=(Rule(pool="api", host="api.example", path_prefix="/api/"),),
            rewrite="none"),),
        pools={"static": Pool("static", (Server("203.0.113.11", 80), Server("203.0.113.12", 80)),
                              "round_robin"),
               "api": Pool("api", (Server("203.0.113.13", 80), Server("2001:db8::13", 80)))},
        client_address="192.0.2.1", server_address="203.0.113.1",
        server_address6="2001:db8::1", mss=1460, window_scale=7, isn_secret="change-me",
        idle_timeout=300.0, open_timeout=3.0, buffer_bytes=262144)


FULL = toml("""\
    [gateway]
    client_address = "192.0.2.1"
    server_address = "198.18.0.1"
    server_address6 = "2001:DB8:0::1"
    mss = 88
    window_scale = 14
    isn_secret = "s3cret"
    idle_timeout = 60
    open_timeout = 0.25
    buffer_bytes = 65536

    [[service]]
    name = "web"
    vip = "10.1.2.3"
    default_pool = "static"
    rewrite = "x-forwarded-for"

      [[service.rule]]
      host = "API.Example."
      pool = "api"

      [[service.rule]]
      path_prefix = "/img/"
      pool = "static"

    [[service]]
    name = "web6"
    vip = "2001:db8::10"
    port = 8080
    default_pool = "api"

    [pool.static]
    servers = [
      "203.0.113.11:80",
      "[2001:db8::12]:8080",   # IPv6 in brackets
    ]
    method = "hash"

    [pool."api"]
    servers = ["192.168.1.5:65535"]
    """)


def test_a_full_config_with_every_key() -> None:
    cfg = loads(FULL)
    assert (cfg.client_address, cfg.server_address, cfg.server_address6) == \
        ("192.0.2.1", "198.18.0.1", "2001:db8::1")
    assert (cfg.mss, cfg.window_scale, cfg.isn_secret) == (88, 14, "s3cret")
    assert (cfg.idle_timeout, cfg.open_timeout, cfg.buffer_bytes) == (60.0, 0.25, 65536)
    assert isinstance(cfg.idle_timeout, float)
    web, web6 = cfg.services
    assert web == VirtualService("web", "10.1.2.3", 80, "static",
                                 (Rule("api", host="api.example"),
                                  Rule("static", path_prefix="/img/")),
                                 "x-forwarded-for")
    assert web.needs_length_changing_rewrite
    assert (web6.vip, web6.port, web6.rules, web6.rewrite) == ("2001:db8::10", 8080, (), "none")
    assert not web6.needs_length_changing_rewrite
    assert web.pool_names == ("static", "api")
    assert cfg.pools["static"] == Pool("static", (Server("203.0.113.11", 80),
                                                  Server("2001:db8::12", 8080)), "hash")
    assert cfg.pools["api"].servers == (Server("192.168.1.5", 65535),)


def test_the_secret_stays_out_of_repr() -> None:
    assert "s3cret" not in repr(loads(FULL))


@pytest.mark.parametrize(("text", "server"), [
    ("[2001:db8::1]:80", Server("2001:db8::1", 80)),
    ("[2001:DB8:0:0::1]:443", Server("2001:db8::1", 443)),
    ("[::ffff:192.0.2.1]:80", Server("::ffff:c000:201", 80)),
    ("203.0.113.11:1", Server("203.0.113.11", 1)),
])
def test_server_parsing(text: str, server: Server) -> None:
    assert Server.parse(text) == server
    assert Server.parse(str(server)) == server


def test_ipv6_servers_print_in_brackets() -> None:
    assert str(Server("2001:db8::1", 80)) == "[2001:db8::1]:80"
    assert str(Server("203.0.113.11", 80)) == "203.0.113.11:80"


def test_config_error_is_a_value_error_and_pickles() -> None:
    err = error_of('[gateway]\nmss = 1\n')
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.errors == err.errors and str(again) == str(err)


# --------------------------------------------------------------------------- one error each

MINIMAL_TAIL = """
[[service]]
name = "web"
vip = "192.0.2.10"
default_pool = "static"

[pool.static]
servers = ["203.0.113.11:80"]
"""
"""Appended after a [gateway] table so that only the gateway entry under test is wrong."""



GATEWAY_CASES = [
    pytest.param("mss = 87", ("mss = 87 is out of range 88..65495",), id="mss-low"),
    pytest.param("mss = 65496", ("out of range 88..65495",), id="mss-high"),
    pytest.param('mss = "1460"', ("mss must be an integer, got a string",), id="mss-type"),
    pytest.param("window_scale = 15", ("window_scale = 15 is out of range 0..14",),
                 id="ws-high"),
    pytest.param("window_scale = -1", ("out of range 0..14",), id="ws-low"),
    pytest.param("window_scale = true", ("must be an integer, got a boolean",), id="ws-bool"),
    pytest.param("idle_timeout = -1.0", ("idle_timeout = -1.0 is not a positive number",),
                 id="idle-negative"),
    pytest.param("open_timeout = -3", ("open_timeout = -3 is not a positive",),
                 id="open-negative"),
    pytest.param("open_timeout = 0", ("is not a positive",), id="open-zero"),
    pytest.param("idle_timeout = nan", ("is not a positive",), id="idle-nan"),
    pytest.param('idle_timeout = "5s"', ("must be a number of seconds, got a string",),
                 id="idle-type"),
    pytest.param("buffer_bytes = 0", ("buffer_bytes = 0 is out of range",), id="buffer-zero"),
    pytest.param('server_address = "203.0.113.256"', ("is not an IPv4 or IPv6 address",),
                 id="server-address"),
    pytest.param('server_address = "2001:db8::1"', ("is not an IPv4 address",),
                 id="server-address-family"),
    pytest.param('server_address6 = "203.0.113.1"', ("is not an IPv6 address",),
                 id="server-address6-family"),
    pytest.param('client_address = "ff02::1"', ("is a multicast address",),
                 id="client-multicast"),
    pytest.param('isn_secret = ""', ("isn_secret is empty",), id="empty-secret"),
    pytest.param("isn_secret = 42", ("isn_secret must be a string, got an integer",),
                 id="secret-type"),
    pytest.param("windows_scale = 7", ("unknown key 'windows_scale' in [gateway]",
                                       "did you mean 'window_scale'?",
                                       "known keys: client_address, server_address"),
                 id="unknown-key"),
]


@pytest.mark.parametrize(("entry", "fragments"), GATEWAY_CASES)
def test_each_bad_gateway_entry_names_its_line(entry: str, fragments: tuple[str, ...]) -> None:
    text = f"[gateway]\n# the entry under test:\n{entry}\n# ends here\n" + MINIMAL_TAIL
    assert_problem(text, 3, entry, *fragments)
    assert len(error_of(text).errors) == 1


CASES = [
    pytest.param(toml("""\
        [gateway]
        mss = 1460
        window_scale = = 7
        """), 3, "window_scale", ("TOML syntax error at column 16: Invalid value",
                                   "fix the syntax there"), id="toml-syntax"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        name = "again"
        """), 3, "again", ("TOML syntax error", "Cannot overwrite a value"),
        id="toml-duplicate-key"),
    pytest.param(toml("""\
        [pool.static]
        servers = ["203.0.113.11:80",
        """), 2, "servers", ("TOML syntax error", "close the string, array or table"),
        id="toml-end-of-document"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        prot = 80
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 4, "prot", ("unknown key 'prot' in [[service]] #1", "did you mean 'port'?",
                          "known keys: name, vip, port, default_pool, rewrite, rule"),
        id="unknown-service-key"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

          [[service.rule]]
          path_prefix = "/api/"
          pool = "static"
          weight = 3

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 9, "weight", ("unknown key 'weight' in [[service.rule]] #1 of [[service]] #1",
                            "remove it or fix its name", "known keys: host, path_prefix, pool"),
        id="unknown-rule-key"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        mehtod = "hash"
        """), 8, "mehtod", ("unknown key 'mehtod' in [pool.static]", "did you mean 'method'?"),
        id="unknown-pool-key"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pools.static]
        servers = ["203.0.113.11:80"]
        """), 6, "[pools.static]", ("unknown key 'pools' in the top level",
                                     "did you mean 'pool'?"),
        id="unknown-top-level-key"),
    pytest.param(toml("""\
        [service]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"
        """), 1, "[service]", ("service must be an array of tables, got a table",
                               "[[service]] header (two brackets)"),
        id="service-not-array"),
    pytest.param(toml("""\
        [gateway]
        mss = 1460
        """), 1, "[gateway]", ("no virtual service is defined", "add a [[service]] table"),
        id="no-service"),
    pytest.param(toml("""\
        [[service]]
        name = 7
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 2, "name", ("name must be a string, got an integer", "write it in quotes"),
        id="name-type"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 1, "[[service]]", ("missing key 'vip'", 'e.g. vip = "192.0.2.10"'),
        id="missing-vip"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.300"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 3, "vip", ("vip '192.0.2.300' is not an IPv4 or IPv6 address",
                         "no host name, no port"), id="vip-bad"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "224.0.0.1"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 3, "vip", ("vip '224.0.0.1' is a multicast address", "use a unicast address"),
        id="vip-multicast"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "0.0.0.0"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 3, "vip", ("is the unspecified address",), id="vip-unspecified"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "255.255.255.255"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 3, "vip", ("is the limited broadcast address",), id="vip-broadcast"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        port = 0
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 4, "port", ("port = 0 is out of range 1..65535",), id="port-zero"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"
        rewrite = "xff"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 5, "rewrite", ("rewrite = 'xff' is not one of none, x-forwarded-for",),
        id="rewrite-bad"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "statik"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 4, "statik", ("unknown pool 'statik' (defined pools: static)",
                            "did you mean 'static'?", "[pool.statik]"),
        id="unknown-default-pool"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

          [[service.rule]]
          path_prefix = "/api/"
          pool = "api"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 8, "api", ("unknown pool 'api'", "define it with a [pool.api] table"),
        id="unknown-rule-pool"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

          [[service.rule]]
          path_prefix = "api/"
          pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 7, "api/", ("path_prefix 'api/' does not start with '/'",
                          'path_prefix = "/api/"'), id="path-prefix-slash"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

          [[service.rule]]
          host = "api.example:8080"
          pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 7, "host", ("host 'api.example:8080' includes a port",), id="host-port"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

          [[service.rule]]
          pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 6, "[[service.rule]]", ("[[service.rule]] #1 of [[service]] #1 has no condition",
                                      "add host and/or path_prefix"),
        id="rule-without-condition"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = []
        """), 7, "servers", ("pool 'static' is empty", "list at least one"), id="empty-pool"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        method = "hash"
        """), 6, "[pool.static]", ("pool 'static' has no servers key",),
        id="pool-without-servers"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = "203.0.113.11:80"
        """), 7, "servers", ("servers must be an array of strings, got a string",),
        id="servers-type"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        method = "least_conn"
        """), 8, "method", ("method = 'least_conn' is not one of round_robin, hash",
                            "use one of 'round_robin', 'hash'"), id="method-bad"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        method = "roundrobin"
        """), 8, "method", ("did you mean 'round_robin'?",), id="method-typo"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = [
          "203.0.113.11:80",
          "203.0.113.12:65536",
          "203.0.113.13:80",
        ]
        """), 9, "65536", ("server '203.0.113.12:65536' has port '65536', not 1..65535",),
        id="server-port-multiline"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11"]
        """), 7, "servers", ("server '203.0.113.11' has no port", '"203.0.113.11:80"'),
        id="server-no-port"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["2001:db8::1:80"]
        """), 7, "servers", ("is an IPv6 address without brackets", "[2001:db8::1]:80"),
        id="server-ipv6-no-brackets"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["backend.example:80"]
        """), 7, "servers", ("'backend.example' is not an IPv4 or IPv6 address",),
        id="server-host-name"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["[2001:db8::1]:80"]
        """), 7, "servers", ("is IPv6 but [gateway] has no server_address6",
                             'server_address6 = "2001:db8::1"'),
        id="ipv6-server-needs-source"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80", 80]
        """), 7, "servers", ("server #2 must be a string, got an integer",),
        id="server-type"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"

        [[service]]
        name = "web"
        vip = "192.0.2.11"
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 7, "web", ("service name 'web' is already used at line 1",
                         "give each service a unique name"), id="duplicate-name"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "2001:db8::10"
        default_pool = "static"

        [[service]]
        name = "web2"
        vip = "2001:DB8:0::10"
        port = 80
        default_pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 8, "vip", ("2001:db8::10 port 80 is already served by the service at line 1",
                         "give each service its own vip and port"),
        id="duplicate-vip-port"),
    pytest.param(toml("""\
        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"
        rule = [
          { path_prefix = "/a/", pool = "static" },
          { path_prefix = "b/", pool = "static" },
        ]

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 7, "b/", ("path_prefix 'b/' does not start with '/'",),
        id="inline-rule-array"),
    pytest.param(toml("""\
        [gateway]
        isn_secret = \"\"\"
        [[service]]
        name = "not a table"
        \"\"\"

        [[service]]
        name = "web"
        vip = "192.0.2.10"
        default_pool = "static"
        port = 70000

        [pool.static]
        servers = ["203.0.113.11:80"]
        """), 11, "70000", ("port = 70000 is out of range",),
        id="multiline-string-is-not-a-header"),
]


@pytest.mark.parametrize(("text", "line", "on_line", "fragments"), CASES)
def test_each_bad_entry_names_its_line(text: str, line: int, on_line: str,
                                       fragments: tuple[str, ...]) -> None:
    assert_problem(text, line, on_line, *fragments)


def test_rules_of_a_later_service_are_counted_within_it() -> None:
    text = toml("""\
        [[service]]
        name = "a"
        vip = "192.0.2.10"
        default_pool = "static"

          [[service.rule]]
          path_prefix = "/x/"
          pool = "static"

        [[service]]
        name = "b"
        vip = "192.0.2.11"
        default_pool = "static"

          [[service.rule]]
          path_prefix = "/y/"
          pool = "static"

          [[service.rule]]
          path_prefix = "/z/"
          pool = "nope"

        [pool.static]
        servers = ["203.0.113.11:80"]
        """)
    assert_problem(text, 21, "nope", "unknown pool 'nope'")


def test_several_errors_are_reported_together_sorted_by_line() -> None:
    text = toml("""\
        [gateway]
        mss = 70000
        window_scale = 7

        [[service]]
        name = "web"
        vip = "192.0.2.999"
        default_pool = "missing"

          [[service.rule]]
          path_prefix = "nope"
          pool = "static"

        [pool.static]
        servers = ["203.0.113.11:80", "203.0.113.12"]
        method = "random"
        """)
    err = error_of(text)
    assert [p.line for p in err.errors] == [2, 7, 8, 11, 15, 16]
    lines = str(err).splitlines()
    assert len(lines) == 6
    assert all(line.startswith(f"<string>:{p.line}: ") for line, p in zip(lines, err.errors,
                                                                          strict=True))
    assert err.errors[0] == ConfigProblem("<string>", 2, "mss = 70000 is out of range 88..65495",
                                          "use 88..65495 (88 is Linux's minimum MSS; 1460 "
                                          "suits Ethernet)")


def test_a_file_names_itself_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[gateway]\nmss = 1460\nmss2 = 1\n" + MINIMAL_TAIL, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}:3: unknown key 'mss2'"):
        load(path)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_bytes(b'[gateway]\nisn_secret = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=rf"^{path}:2: byte 0xe9 is not UTF-8; save the file"):
        load(path)


def test_non_test_net_addresses_and_range_edges_are_allowed() -> None:
    cfg = loads(toml("""\
        [gateway]
        mss = 65495
        window_scale = 0

        [[service]]
        name = "web"
        vip = "10.0.0.1"
        port = 65535
        default_pool = "p"

        [pool.p]
        servers = ["172.16.0.1:1"]
        """))
    assert (cfg.mss, cfg.window_scale, cfg.services[0].vip) == (65495, 0, "10.0.0.1")


# --------------------------------------------------------------------------- selection

ROUTES = loads(toml("""\
    [[service]]
    name = "web"
    vip = "192.0.2.10"
    default_pool = "static"

      [[service.rule]]
      host = "api.example"
      path_prefix = "/v2/"
      pool = "v2"

      [[service.rule]]
      host = "api.example"
      pool = "api"

      [[service.rule]]
      path_prefix = "/img/"
      pool = "img"

    [[service]]
    name = "sticky"
    vip = "192.0.2.10"
    port = 8080
    default_pool = "hashed"

    [pool.static]
    servers = ["203.0.113.11:80", "203.0.113.12:80"]

    [pool.api]
    servers = ["203.0.113.13:80"]

    [pool.v2]
    servers = ["203.0.113.14:80"]

    [pool.img]
    servers = ["203.0.113.15:80"]

    [pool.hashed]
    servers = ["203.0.113.11:80", "203.0.113.12:80", "203.0.113.13:80"]
    method = "hash"
    """))
WEB, STICKY = ROUTES.services
CLIENT = ("198.51.100.2", 40000)


def head(target: bytes, host: bytes | None = b"www.example") -> RequestHead:
    hdr = b"" if host is None else b"Host: " + host + b"\r\n"
    parsed = parse_request_head(b"GET " + target + b" HTTP/1.1\r\n" + hdr + b"\r\n")
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(("target", "host", "pool"), [
    (b"/v1/users", b"api.example", "api"),                  # by host
    (b"/v2/users", b"API.Example:80", "v2"),                # by host and path, any case, port
    (b"/v2", b"api.example.", "api"),                       # final dot; "/v2" is not "/v2/"
    (b"/img/a.png", b"www.example", "img"),                 # by path
    (b"/img/a.png", b"api.example", "api"),                 # first matching rule wins
    (b"/img/a.png", None, "img"),                           # no Host at all
    (b"/IMG/a.png", b"www.example", "static"),              # paths are case-sensitive
    (b"/img", b"www.example", "static"),                    # a prefix is a plain prefix
    (b"/x?next=/img/", b"www.example", "static"),           # the query is not the path
    (b"http://api.example/v2/x", b"ignored", "v2"),         # absolute form: authority is Host
    (b"HTTP://www.example/img/x?y", b"www.example", "img"),  # absolute form: path after it
    (b"http://www.example?/img/", b"www.example", "static"),
    (b"http://www.example", b"www.example", "static"),
    (b"*", b"www.example", "static"),                       # asterisk form has no path
    (b"/", b"www.example", "static"),                       # fallback to the default pool
])
def test_rules_pick_the_pool(target: bytes, host: bytes | None, pool: str) -> None:
    assert pool_for(WEB, head(target, host)) == pool
    name, server = Selector(ROUTES).pick(WEB, head(target, host), CLIENT)
    assert name == pool and server in ROUTES.pools[pool].servers


@pytest.mark.parametrize(("target", "path"), [
    (b"/a/b?c", "/a/b"), (b"/a#f", "/a"), (b"http://h", "/"), (b"https://h:443/p", "/p"),
    (b"http://h?q", "/"), (b"http://u@h/p/q", "/p/q"), (b"*", "*"), (b"h:443", "h:443"),
    (b"/\xff", "/\xff"),
])
def test_request_path(target: bytes, path: str) -> None:
    assert request_path(target) == path


@pytest.mark.parametrize(("host", "key"), [
    ("API.Example", "api.example"), ("api.example:8080", "api.example"),
    ("api.example.", "api.example"), ("[2001:DB8::1]:80", "[2001:db8::1]"), ("", ""),
    (" a ", "a"),
])
def test_normalize_host(host: str, key: str) -> None:
    assert normalize_host(host) == key


def test_service_for_matches_vip_and_port() -> None:
    assert service_for(ROUTES, "192.0.2.10", 80) is WEB
    assert service_for(ROUTES, "192.0.2.10", 8080) is STICKY
    assert service_for(ROUTES, "192.0.2.10", 443) is None
    assert service_for(ROUTES, "192.0.2.11", 80) is None
    assert service_for(ROUTES, "not an address", 80) is None
    six = loads(toml("""\
        [[service]]
        name = "six"
        vip = "2001:db8::10"
        default_pool = "p"

        [pool.p]
        servers = ["203.0.113.11:80"]
        """))
    assert service_for(six, "2001:DB8:0:0::10", 80) is six.services[0]
    assert Selector(six).service_for("2001:db8::10", 80) is six.services[0]


def test_round_robin_takes_turns_per_pool() -> None:
    selector = Selector(ROUTES)
    picks = []
    for i in range(6):
        picks.append(str(selector.pick(WEB, head(b"/"), CLIENT)[1]))
        selector.pick(WEB, head(b"/img/x"), CLIENT)  # another pool's turn: no effect
        if i == 2:
            selector.pick(WEB, head(b"/", b"api.example"), CLIENT)
    assert picks == ["203.0.113.11:80", "203.0.113.12:80"] * 3
    # A fresh selector starts over; select() with its own counters agrees.
    counters = Counters()
    again = [str(select(WEB, head(b"/"), CLIENT, ROUTES.pools, counter=counters))
             for _ in range(6)]
    assert again == picks


def test_hash_is_stable_per_client() -> None:
    servers = ROUTES.pools["hashed"].servers
    client = ("198.51.100.7", 51234)
    expected = servers[zlib.crc32(b"198.51.100.7:51234") % 3]
    a, b = Selector(ROUTES), Selector(ROUTES)
    for _ in range(5):
        assert a.pick(STICKY, head(b"/"), client) == ("hashed", expected)
        assert b.pick(STICKY, head(b"/other"), client) == ("hashed", expected)


def test_hash_spreads_clients_over_servers() -> None:
    selector = Selector(ROUTES)
    counts = Counter(selector.pick(STICKY, head(b"/"), (f"198.51.100.{i % 250 + 1}", 40000 + i))
                     for i in range(3000))
    assert len(counts) == 3
    assert min(counts.values()) > 750, counts


def test_rewrite_decides_the_length_changing_flag() -> None:
    assert not WEB.needs_length_changing_rewrite
    assert loads(FULL).services[0].needs_length_changing_rewrite


HOSTS = st.one_of(st.binary(max_size=30),
                  st.sampled_from([b"api.example", b"API.EXAMPLE:8080", b"api.example.",
                                   b"[2001:db8::1]:80", b"", b":", b"["]))
PATHS = st.one_of(st.binary(max_size=40),
                  st.builds(lambda p: b"/" + p, st.binary(max_size=20)),
                  st.sampled_from([b"/v2/", b"/img/", b"/img", b"*", b"/v2/x?y"]),
                  st.builds(lambda h, p: b"http://" + h + b"/" + p,
                            st.binary(max_size=15), st.binary(max_size=15)))
CLIENTS = st.tuples(st.one_of(st.ip_addresses().map(str), st.text(max_size=10)),
                    st.integers(0, 65535))


@given(host=HOSTS, target=PATHS, client=CLIENTS, sticky=st.booleans())
def test_any_request_routes_to_a_server_of_the_service(host: bytes, target: bytes,
                                                       client: tuple[str, int],
                                                       sticky: bool) -> None:
    service = STICKY if sticky else WEB
    request = RequestHead(b"GET", target, b"HTTP/1.1", host, 0)
    name, server = Selector(ROUTES).pick(service, request, client)
    assert name in service.pool_names
    assert server in ROUTES.pools[name].servers
