"""A deliberately broken reference gateway, for the suite's own tests (never shipped as a
gateway): ``python -m tests.conformance.broken_gateway MODE``, run by the ``command`` adapter
in the lab's gateway namespace; the config comes from ``$FASTPATH_POLICY``.

Modes, each a bug class the suite exists to catch:

* ``corrupt``: the fast path flips one byte of the first response segment it relays, with
  the checksum made valid again (a translation bug that no checksum can reveal);
* ``truncate``: it drops the last data segment of every response that ends with a FIN and
  still relays the FIN (the splice-truncation bug class);
* ``early-ack``: it acknowledges the client's request to the client before the server has
  (breaks ACK safety: a fast path has no buffer to retransmit from).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from reference.gateway import codec
from reference.gateway.actions import Emit
from reference.gateway.fastpath import FastPath
from spec.segment import ACK, FIN

MODES = ("corrupt", "truncate", "early-ack")


def _corrupt() -> None:
    real = FastPath._relay_to_client
    done: set[int] = set()

    def relay(self: FastPath, s: Any, pkt: codec.Packet, buf: bytearray) -> list[Any]:
        out = real(self, s, pkt, buf)
        if id(s) in done or not pkt.payload:
            return out
        done.add(id(s))
        fixed = []
        for a in out:
            if isinstance(a, Emit) and a.leg == "client":
                p = codec.parse(a.packet, verify_checksum=False)
                data = bytearray(p.payload)
                data[len(data) // 2] ^= 0x20
                a = Emit("client", codec.build(
                    version=p.version, src=p.src, dst=p.dst, sport=p.sport, dport=p.dport,
                    seq=p.seq, ack=p.ack, flags=p.flags, window=p.window, payload=bytes(data),
                    tsval=p.tsval, tsecr=p.tsecr, sack=p.sack), a.segment_size)
            fixed.append(a)
        return fixed

    FastPath._relay_to_client = relay  # type: ignore[method-assign]


def _truncate() -> None:
    real = FastPath._relay_to_client

    def relay(self: FastPath, s: Any, pkt: codec.Packet, buf: bytearray) -> list[Any]:
        if pkt.payload and pkt.flags & FIN:
            # Drop the segment's data, relay its FIN where the data began: the client's
            # stream ends early and cleanly, as in the splice-truncation bug class.
            raw = bytearray(codec.build(
                version=pkt.version, src=pkt.src, dst=pkt.dst, sport=pkt.sport,
                dport=pkt.dport, seq=pkt.seq, ack=pkt.ack, flags=pkt.flags,
                window=pkt.window, tsval=pkt.tsval, tsecr=pkt.tsecr))
            return real(self, s, codec.parse(raw), raw)
        return real(self, s, pkt, buf)

    FastPath._relay_to_client = relay  # type: ignore[method-assign]


def _early_ack() -> None:
    real = FastPath._hold_and_open

    def hold(self: FastPath, s: Any, pkt: codec.Packet, now: float) -> list[Any]:
        out = real(self, s, pkt, now)
        c = s.proxy.client
        ack = codec.build(
            version=s.version, src=s.vip[0], dst=s.client[0], sport=s.vip[1],
            dport=s.client[1], seq=(c.snd_isn + 1) & 0xFFFFFFFF,
            ack=(pkt.seq + len(pkt.payload)) & 0xFFFFFFFF, flags=ACK, window=1024,
            tsval=c.ts_sent if pkt.tsval is not None else None,
            tsecr=pkt.tsval)
        return [*out, self.gw.emit("client", ack)]

    FastPath._hold_and_open = hold  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in MODES:
        print(f"usage: python -m tests.conformance.broken_gateway {{{','.join(MODES)}}}",
              file=sys.stderr)
        return 2
    {"corrupt": _corrupt, "truncate": _truncate, "early-ack": _early_ack}[argv[1]]()
    from fastpath.cli import main as cli

    args = ["gateway", "--client-if", os.environ.get("FASTPATH_CLIENT_IF", "gc"),
            "--server-if", os.environ.get("FASTPATH_SERVER_IF", "gs")]
    if os.environ.get("FASTPATH_POLICY"):
        args += ["--config", os.environ["FASTPATH_POLICY"]]
    return cli(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
