"""Shared Hypothesis strategies for the spec property tests.

Sequence numbers favour the places where serial arithmetic goes wrong: values near the 2^32
wrap, values near 0, and values (and distances) near 2^31, where RFC 1982 order is undefined.
"""

from __future__ import annotations

from hypothesis import strategies as st

from spec.records import (
    ClientSessionRecord,
    FourTuple,
    Negotiated,
    ServerSessionRecord,
    SynOptions,
)

MOD = 1 << 32
HALF = 1 << 31

seq32 = st.one_of(
    st.integers(0, MOD - 1),
    st.integers(MOD - 64, MOD - 1),
    st.integers(0, 64),
    st.integers(HALF - 64, HALF + 64),
)
"""A 32-bit sequence number (or timestamp), biased to the wrap and to 2^31."""

distance = st.one_of(
    st.integers(0, MOD - 1),
    st.integers(0, 64),
    st.integers(MOD - 64, MOD - 1),
    st.integers(HALF - 64, HALF + 64),
)
"""A forward distance mod 2^32, biased to 0, to -1.. and to the 2^31 boundary."""


@st.composite
def seq_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """(a, b) with b - a (mod 2^32) often near 0, near 2^31 or near 2^32."""
    a = draw(seq32)
    return a, (a + draw(distance)) % MOD


wscale = st.integers(0, 14)
mss = st.integers(88, 65495)
window_field = st.integers(0, 0xFFFF)

CLIENT_TUPLE = FourTuple("192.0.2.10", 40000, "198.51.100.1", 80)
SERVER_TUPLE = FourTuple("10.0.0.1", 50000, "10.0.0.20", 8080)


@st.composite
def negotiated(draw: st.DrawFn, *, timestamps: bool | None = None) -> Negotiated:
    both_ws = draw(st.booleans())
    ts = draw(st.booleans()) if timestamps is None else timestamps
    return Negotiated(
        peer_mss=draw(mss),
        local_mss=draw(mss),
        snd_wscale=draw(wscale) if both_ws else 0,
        rcv_wscale=draw(wscale) if both_ws else 0,
        sack=draw(st.booleans()),
        timestamps=ts,
    )


@st.composite
def client_records(draw: st.DrawFn, *, timestamps: bool | None = None) -> ClientSessionRecord:
    n = draw(negotiated(timestamps=timestamps))
    return ClientSessionRecord(
        tuple=CLIENT_TUPLE,
        rcv_isn=draw(seq32),
        snd_isn=draw(seq32),
        syn_options=SynOptions(mss=n.peer_mss, wscale=n.snd_wscale,
                               sack_permitted=n.sack,
                               tsval=draw(seq32) if n.timestamps else None),
        negotiated=n,
        ts_sent=draw(seq32) if n.timestamps else None,
        ts_recent=draw(seq32) if n.timestamps else None,
        rcv_wnd_field=draw(window_field),
    )


@st.composite
def server_records(draw: st.DrawFn, *, timestamps: bool | None = None) -> ServerSessionRecord:
    """A server session record after the server's SYN/ACK has arrived."""
    n = draw(negotiated(timestamps=timestamps))
    return ServerSessionRecord(
        tuple=SERVER_TUPLE,
        snd_isn=draw(seq32),
        rcv_isn=draw(seq32),
        syn_options=SynOptions(mss=n.local_mss, wscale=n.rcv_wscale, sack_permitted=True,
                               tsval=draw(seq32) if n.timestamps else None),
        peer_options=SynOptions(mss=n.peer_mss, wscale=n.snd_wscale, sack_permitted=n.sack),
        negotiated=n,
        ts_sent=draw(seq32) if n.timestamps else None,
    )
