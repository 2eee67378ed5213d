"""The splice: every rewrite the fast path applies to a relayed segment.

Rule 1: every seq/ack/SACK/timestamp/window/MSS rewrite of a spliced session is defined here.
Rule 2: nothing here reads payload bytes; a splice is a handful of constants fixed when the
server side is established, and they never change for the life of the session.

Directions: ``*_to_server`` rewrites a client segment for the server leg, ``*_to_client`` a
server segment for the client leg. An ACK or SACK edge acknowledges the *other* direction's
data, so it is shifted by the other direction's offset, backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spec.bv import MASK32, ite, lshr, ule, ult, umin
from spec.records import ClientSessionRecord, ServerSessionRecord
from spec.seq import seq_add, seq_sub

MAX_WINDOW_FIELD = 0xFFFF
RFC9293_DEFAULT_MSS = 536


@dataclass(frozen=True, slots=True)
class Splice:
    """Translation constants of one spliced session."""

    c2s_seq: Any
    """Added to a client seq to get the server-leg seq: ISN(gw->server) - ISN(client)."""
    s2c_seq: Any
    """Added to a server seq to get the client-leg seq: ISN(gw->client) - ISN(server)."""
    c2s_ts: Any = 0
    """Added to a client TSval to get the server-leg TSval."""
    s2c_ts: Any = 0
    """Added to a server TSval to get the client-leg TSval."""
    client_snd_wscale: Any = 0
    """The client's shift: applies to windows the client sends."""
    client_rcv_wscale: Any = 0
    """The shift the gateway announced to the client: applies to windows sent to the client."""
    server_snd_wscale: Any = 0
    """The server's shift: applies to windows the server sends."""
    server_rcv_wscale: Any = 0
    """The shift the gateway announced to the server: applies to windows sent to the server."""
    client_mss: Any = RFC9293_DEFAULT_MSS
    """Largest segment the client accepts (its MSS)."""
    server_mss: Any = RFC9293_DEFAULT_MSS
    """Largest segment the server accepts (its MSS)."""
    sack: bool = False
    timestamps: bool = False


# --- sequence space ---------------------------------------------------------------------


def seq_to_server(sp: Splice, seq: Any) -> Any:
    return seq_add(seq, sp.c2s_seq)


def seq_to_client(sp: Splice, seq: Any) -> Any:
    return seq_add(seq, sp.s2c_seq)


def ack_to_server(sp: Splice, ack: Any) -> Any:
    """A client ACK acknowledges server data, which the client sees shifted by s2c_seq."""
    return seq_sub(ack, sp.s2c_seq)


def ack_to_client(sp: Splice, ack: Any) -> Any:
    """A server ACK acknowledges client data, which the server sees shifted by c2s_seq."""
    return seq_sub(ack, sp.c2s_seq)


def sack_to_server(sp: Splice, blocks: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """SACK blocks are ACK-space edges (RFC 2018): shifted like ACKs."""
    return [(ack_to_server(sp, left), ack_to_server(sp, right)) for left, right in blocks]


def sack_to_client(sp: Splice, blocks: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return [(ack_to_client(sp, left), ack_to_client(sp, right)) for left, right in blocks]


# --- timestamps (RFC 7323) ----------------------------------------------------------------


def tsval_to_server(sp: Splice, tsval: Any) -> Any:
    return (tsval + sp.c2s_ts) & MASK32


def tsval_to_client(sp: Splice, tsval: Any) -> Any:
    return (tsval + sp.s2c_ts) & MASK32


def tsecr_to_server(sp: Splice, tsecr: Any) -> Any:
    """The client echoes (translated) server TSvals: undo the server->client offset."""
    return (tsecr - sp.s2c_ts) & MASK32


def tsecr_to_client(sp: Splice, tsecr: Any) -> Any:
    return (tsecr - sp.c2s_ts) & MASK32


def ts_offset(last_sent_on_leg: Any, first_relayed_tsval: Any) -> Any:
    """Offset that maps the first relayed TSval onto the last TSval the gateway itself sent
    on that leg, so the receiver's TS.Recent never runs ahead of what is relayed (PAWS)."""
    return (last_sent_on_leg - first_relayed_tsval) & MASK32


# --- windows (RFC 7323 §2) and MSS (RFC 9293 §3.7.1) -------------------------------------


def rescale_window(field: Any, from_shift: Any, to_shift: Any) -> Any:
    """Re-express a window field sent with ``from_shift`` for a receiver using ``to_shift``.

    Rounds down and saturates at 0xFFFF, so the advertised window never exceeds the real one.
    """
    real = (field << from_shift) & MASK32
    out = lshr(real, to_shift)
    return ite(ult(MAX_WINDOW_FIELD, out), MAX_WINDOW_FIELD, out)


def window_to_server(sp: Splice, field: Any) -> Any:
    return rescale_window(field, sp.client_snd_wscale, sp.server_rcv_wscale)


def window_to_client(sp: Splice, field: Any) -> Any:
    return rescale_window(field, sp.server_snd_wscale, sp.client_rcv_wscale)


def mss_clamp(client_mss: Any, local_mss: Any) -> Any:
    """MSS for the gateway's SYN to the server: never above what the client accepts, so no
    server segment relayed unsplit can exceed the client's MSS."""
    return umin(client_mss, local_mss)


def split_point(length: Any, mss: Any) -> Any:
    """Length of the first piece when a relayed segment must be cut to the receiver's MSS.

    The fast path cuts a too-large client segment into MSS-sized pieces as it relays it (no
    buffer: each piece is emitted at once). ``mss`` must be > 0.
    """
    return umin(length, mss)


def piece_ok(length: Any, mss: Any) -> Any:
    """A relayed piece fits the receiver's MSS."""
    return ule(length, mss)


# --- construction -------------------------------------------------------------------------


def make_splice(client: ClientSessionRecord, server: ServerSessionRecord,
                client_tsval_now: Any = None, server_tsval_now: Any = None) -> Splice:
    """Fix the translation constants once the server's SYN/ACK has arrived.

    ``client_tsval_now`` is the TSval of the held request (the first client TSval to relay);
    ``server_tsval_now`` is the server's SYN/ACK TSval.
    """
    cn = client.negotiated
    sn = server.negotiated
    if sn is None or server.rcv_isn is None:
        raise ValueError("make_splice needs the server's SYN/ACK (negotiated options, ISN)")
    ts = bool(cn.timestamps and sn.timestamps)
    c2s_ts = s2c_ts = 0
    if ts:
        if client_tsval_now is None or server_tsval_now is None:
            raise ValueError("make_splice: both legs use timestamps, so it needs the held "
                             "request's TSval (client_tsval_now) and the server's SYN/ACK "
                             "TSval (server_tsval_now)")
        c2s_ts = ts_offset(server.ts_sent, client_tsval_now)
        s2c_ts = ts_offset(client.ts_sent, server_tsval_now)
    return Splice(
        c2s_seq=seq_sub(server.snd_isn, client.rcv_isn),
        s2c_seq=seq_sub(client.snd_isn, server.rcv_isn),
        c2s_ts=c2s_ts,
        s2c_ts=s2c_ts,
        client_snd_wscale=cn.snd_wscale,
        client_rcv_wscale=cn.rcv_wscale,
        server_snd_wscale=sn.snd_wscale,
        server_rcv_wscale=sn.rcv_wscale,
        client_mss=cn.peer_mss,
        server_mss=sn.peer_mss,
        sack=bool(cn.sack and sn.sack),
        timestamps=ts,
    )
