"""``fastpath gateway``: the reference gateway on two real interfaces (root; see the driver).

Runs :class:`reference.gateway.driver.Driver` in this network namespace, or in ``--netns NS``,
until SIGINT/SIGTERM or ``--duration``. Once both sockets are bound it prints one line
starting ``ready`` on stdout, so a script can wait for it. SIGUSR1 writes the stats (driver
counters and the core's ``stats_json()``) to ``--stats-json`` if given, else to stderr; the
file is written again on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastpath.cli import CliError
from reference.gateway.config import ConfigError, GatewayConfig, default_config, load
from reference.gateway.driver import Driver, DriverError, enter_netns, mac_str
from reference.gateway.gateway import CoreSettings, Gateway


def add(sub: Any) -> None:
    p = sub.add_parser("gateway", help="run the reference gateway on two interfaces (root)",
                       description=__doc__)
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="gateway config (TOML); default: the embedded default config")
    p.add_argument("--client-if", default="gc", metavar="IF",
                   help="interface towards the clients (default gc)")
    p.add_argument("--server-if", default="gs", metavar="IF",
                   help="interface towards the servers (default gs)")
    p.add_argument("--netns", metavar="NS", help="enter this network namespace first")
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (default: run until SIGINT/SIGTERM)")
    p.add_argument("--stats-json", type=Path, metavar="FILE",
                   help="write the stats here on SIGUSR1 and on exit")
    p.add_argument("--no-vnet-hdr", dest="vnet_hdr", action="store_false",
                   help="plain frames without PACKET_VNET_HDR; needs the veth offloads off "
                        "(`fastpath lab up --offload off`) and is ~30x slower in bulk")
    p.add_argument("--compact-after", default="1", metavar="S",
                   help="compact a spliced session idle for S seconds into a ~250-byte row "
                        "(restored by its next packet); 'never' keeps every session an "
                        "object (default 1)")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="run under cProfile and write its stats here on exit (read them "
                        "with `python -m pstats FILE`); the gateway runs ~2x slower meanwhile")
    p.set_defaults(handler=run)


def _compact_after(text: str) -> float | None:
    if text == "never":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise CliError(f"--compact-after takes seconds >= 0 or 'never', not {text!r}")
    return value


def _config(path: Path | None) -> GatewayConfig:
    if path is None:
        return default_config()
    try:
        return load(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read {path} ({exc.strerror or exc}); pass a readable "
                       f"--config") from None


def _writer(path: Path | None) -> Callable[[dict[str, Any]], None]:
    """Stats go to ``path`` atomically (a reader polling it never sees half a file)."""
    def write(stats: dict[str, Any]) -> None:
        text = json.dumps(stats, indent=2, sort_keys=True)
        if path is None:
            print(text, file=sys.stderr, flush=True)
            return
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(text + "\n")
            os.replace(tmp, path)
        except OSError as exc:  # losing the stats must not stop the gateway
            print(f"fastpath: cannot write {path}: {exc.strerror or exc}", file=sys.stderr,
                  flush=True)
    return write


def _profiled(body: Callable[[], None], path: Path) -> None:
    """Where the gateway's CPU goes, per function, for the benchmarks (``bench_lab.py
    --profile-gateway``): the stats are written even when the run ends on an error."""
    import cProfile

    prof = cProfile.Profile()
    try:
        prof.runcall(body)
    finally:
        try:
            prof.dump_stats(str(path))
        except OSError as exc:
            print(f"fastpath: cannot write the profile {path}: {exc.strerror or exc}",
                  file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Report CliError here, not in ``cli.main``: under ``python -m fastpath.cli`` that module
    is ``__main__`` and its CliError is another class than the one this module imports."""
    try:
        return _run(args)
    except CliError as exc:
        print(f"fastpath: error: {exc}", file=sys.stderr, flush=True)
        return 2


def _run(args: argparse.Namespace) -> int:
    config = _config(args.config)
    if args.duration is not None and not args.duration > 0:
        raise CliError(f"--duration must be greater than 0, not {args.duration:g}")
    compact_after = _compact_after(args.compact_after)
    write = _writer(args.stats_json)
    try:
        if args.netns:
            enter_netns(args.netns)
        core = CoreSettings(gso_output=args.vnet_hdr, compact_after=compact_after)
        driver = Driver(Gateway(config, core=core),
                        args.client_if, args.server_if,
                        vnet_hdr=args.vnet_hdr)
        driver.open()
    except DriverError as exc:
        raise CliError(str(exc)) from None
    try:
        ports = " ".join(f"{p.leg}={p.ifname}/{mac_str(p.mac)}" for p in driver.ports.values())
        print(f"ready {ports} vnet_hdr={'on' if args.vnet_hdr else 'off'}", flush=True)
        try:
            if args.profile is not None:
                _profiled(lambda: driver.run(duration=args.duration, on_stats=write),
                          args.profile)
            else:
                driver.run(duration=args.duration, on_stats=write)
        except DriverError as exc:
            raise CliError(str(exc)) from None
    finally:
        try:
            write(driver.stats_json())
        finally:
            driver.close()
    return 0
