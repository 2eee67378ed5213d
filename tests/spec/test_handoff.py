"""Claim 1's handoff, step by step, on concrete records whose ISNs sit near the 2^32 wrap;
and the normal path's segment arrival (`receive`) reassembles any delivery order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec.handoff import (
    DEFAULT_BUFFER,
    HANDOFF_FROM,
    HandoffError,
    create_tcb,
    handoff,
    obtain_isns,
    receive,
    reply_is_continuous,
)
from spec.records import (
    TCB,
    ClientSessionRecord,
    Negotiated,
    Owner,
    PacketBuffers,
    ProxySessionRecord,
    SecondClientSessionRecord,
    SecondProxySessionRecord,
    SynOptions,
)
from spec.segment import ACK, FIN, PSH, RST, SYN, Segment
from spec.seq import seq_add
from spec.states import FastPathState, TcpState
from tests.spec.strategies import CLIENT_TUPLE, MOD, client_records, seq32

PARTIAL_REQUEST = b"GET /index.html HTTP/1.1\r\nHost: www.exa"
STEPS = ["C1.d", "C1.e", "C1.f", "C1.g", "C1.h", "C1.i", "C1.j"]


def plain_client(rcv_isn: int, snd_isn: int) -> ClientSessionRecord:
    """A client session record without window scaling, SACK or timestamps."""
    return ClientSessionRecord(tuple=CLIENT_TUPLE, rcv_isn=rcv_isn, snd_isn=snd_isn,
                               syn_options=SynOptions(mss=1460),
                               negotiated=Negotiated(peer_mss=1460, local_mss=1460),
                               rcv_wnd_field=65535)


def first_record(client: ClientSessionRecord,
                 state: FastPathState = FastPathState.ESTABLISHED) -> ProxySessionRecord:
    return ProxySessionRecord(client=client, service="web", state=state)


def in_order_trigger(client: ClientSessionRecord, payload: bytes = PARTIAL_REQUEST) -> Segment:
    return Segment(seq=seq_add(client.rcv_isn, 1), ack=seq_add(client.snd_isn, 1),
                   flags=ACK | PSH, window=client.rcv_wnd_field, payload=payload)


handoff_states = st.sampled_from([FastPathState.ESTABLISHED, FastPathState.SYN_RCVD])


# --- the claim-1 steps, visible in the records ------------------------------------------------


@given(client_records(), handoff_states)
@settings(max_examples=50)
def test_handoff_carries_out_every_claim1_step_in_order(client: ClientSessionRecord,
                                                        state: FastPathState) -> None:
    first = first_record(client, state)
    isn_c, isn_g = client.rcv_isn, client.snd_isn
    trigger = in_order_trigger(client)
    seen: dict[str, object] = {}

    def obtain(c: ClientSessionRecord) -> tuple[int, int]:
        seen["obtained_from"] = c
        seen["isns"] = obtain_isns(c)
        return seen["isns"]

    def make_tcb(*args: object) -> TCB:
        tcb = create_tcb(*args)
        seen["at_c1h"] = (tcb.irs, tcb.iss, tcb.snd_una, tcb.snd_nxt, tcb.rcv_nxt)
        return tcb

    res = handoff(first, trigger, obtain=obtain, make_tcb=make_tcb)

    assert res.steps == STEPS
    # C1.g: the ISNs come from the first client session record.
    assert seen["obtained_from"] is client
    assert seen["isns"] == (isn_c, isn_g)
    # C1.h: as created, before the trigger is processed, the TCB sits just after both SYNs.
    assert seen["at_c1h"] == (isn_c, isn_g, (isn_g + 1) % MOD, (isn_g + 1) % MOD,
                              (isn_c + 1) % MOD)

    # C1.e: new records, derived from the trigger.
    proxy2, client2 = res.proxy, res.client
    assert isinstance(proxy2, SecondProxySessionRecord)
    assert isinstance(client2, SecondClientSessionRecord)
    assert client2 is not client
    assert proxy2.service == "web"
    assert proxy2.trigger_seq == trigger.seq
    assert proxy2.trigger_len == len(PARTIAL_REQUEST)
    assert client2.tuple == client.tuple

    # C1.d / C1.f: the second proxy record points at the first and at the second client
    # record, which points back.
    assert proxy2.first is first
    assert proxy2.client is client2
    assert client2.proxy is proxy2

    # C1.g / C1.i: both ISNs copied into the second client session record.
    assert client2.rcv_isn == isn_c
    assert client2.snd_isn == isn_g

    # C1.h: the TCB continues the client's sequence space.
    tcb = client2.tcb
    assert tcb is not None
    assert tcb.irs == isn_c
    assert tcb.iss == isn_g
    assert tcb.snd_una == (isn_g + 1) % MOD
    assert tcb.snd_nxt == (isn_g + 1) % MOD
    assert tcb.state is TcpState.ESTABLISHED
    assert tcb.mss == client.negotiated.peer_mss
    assert tcb.snd_wscale == client.negotiated.snd_wscale
    assert tcb.rcv_wscale == client.negotiated.rcv_wscale
    assert tcb.sack_permitted == client.negotiated.sack
    assert tcb.ts_enabled == client.negotiated.timestamps
    assert tcb.snd_wnd == client.rcv_wnd_field << client.negotiated.snd_wscale

    # C1.h / C1.i: buffers created and stored; C1.j: the trigger's bytes are in them.
    buffers = client2.buffers
    assert isinstance(buffers, PacketBuffers)
    assert buffers.capacity == DEFAULT_BUFFER
    assert bytes(buffers.receive) == PARTIAL_REQUEST
    assert buffers.out_of_order == {}
    assert buffers.send == bytearray()
    assert res.accepted is True
    assert res.completes_handshake is True
    assert tcb.rcv_nxt == (isn_c + 1 + len(PARTIAL_REQUEST)) % MOD

    # The first proxy session record now belongs to the normal path.
    assert first.owner is Owner.NORMAL_PATH
    assert first.state is FastPathState.HANDED_OFF
    assert first.client is client

    # The reply ACKs the trigger and continues the gateway's sequence space.
    r = res.reply
    assert r.flags == ACK
    assert not r.flags & (SYN | RST | FIN)
    assert r.seq == (isn_g + 1) % MOD
    assert r.ack == tcb.rcv_nxt
    assert r.length == 0
    assert r.window == 65535 >> client.negotiated.rcv_wscale
    assert reply_is_continuous(res, isn_c, isn_g) is True


@given(client_records(), handoff_states)
@settings(max_examples=30)
def test_create_tcb_starts_at_the_first_octet_after_each_syn(client: ClientSessionRecord,
                                                            state: FastPathState) -> None:
    done = state is FastPathState.ESTABLISHED
    tcb = create_tcb(client, client.rcv_isn, client.snd_isn, done, 4096)
    assert tcb.rcv_nxt == (client.rcv_isn + 1) % MOD
    assert tcb.snd_nxt == tcb.snd_una == (client.snd_isn + 1) % MOD
    assert tcb.rcv_wnd == 4096
    assert tcb.state is (TcpState.ESTABLISHED if done else TcpState.SYN_RECEIVED)


@given(client_records())
@settings(max_examples=30)
def test_handoff_from_syn_rcvd_completes_handshake_only_on_ack_of_iss(
        client: ClientSessionRecord) -> None:
    good = handoff(first_record(client, FastPathState.SYN_RCVD), in_order_trigger(client))
    assert good.completes_handshake is True
    assert good.client.tcb.state is TcpState.ESTABLISHED

    wrong_ack = in_order_trigger(client).with_(ack=client.snd_isn)  # does not cover the SYN
    bad = handoff(first_record(client, FastPathState.SYN_RCVD), wrong_ack)
    assert bad.completes_handshake is False
    assert bad.client.tcb.state is TcpState.SYN_RECEIVED
    # The data is still received: it is acceptable, and the reply still continues ISS + 1.
    assert bytes(bad.client.buffers.receive) == PARTIAL_REQUEST
    assert bad.reply.seq == (client.snd_isn + 1) % MOD


@given(client_records())
@settings(max_examples=20)
def test_handoff_without_buffers_still_advances_rcv_nxt(client: ClientSessionRecord) -> None:
    res = handoff(first_record(client), in_order_trigger(client), with_buffers=False)
    assert res.client.buffers is None
    assert res.client.tcb.rcv_nxt == (client.rcv_isn + 1 + len(PARTIAL_REQUEST)) % MOD
    assert res.reply.ack == res.client.tcb.rcv_nxt


@pytest.mark.parametrize("state", sorted(set(FastPathState) - HANDOFF_FROM),
                         ids=lambda s: s.name)
def test_handoff_from_other_states_raises_naming_the_state(state: FastPathState) -> None:
    first = ProxySessionRecord(client=plain_client(1, 2), state=state)
    with pytest.raises(HandoffError, match=state.name):
        handoff(first, Segment(seq=1, payload=b"x"))
    assert first.state is state
    assert first.owner is Owner.FAST_PATH


@given(client_records())
@settings(max_examples=10)
def test_handoff_from_spliced_raises_and_leaves_records_alone(client: ClientSessionRecord
                                                              ) -> None:
    first = first_record(client, FastPathState.SPLICED)
    with pytest.raises(HandoffError, match="SPLICED"):
        handoff(first, in_order_trigger(client))
    assert first.state is FastPathState.SPLICED
    assert first.owner is Owner.FAST_PATH


# --- out-of-order trigger and reassembly ------------------------------------------------------


@given(client_records(), handoff_states, st.integers(1, 4000),
       st.binary(min_size=1, max_size=300))
@settings(max_examples=50)
def test_out_of_order_trigger_is_buffered_until_the_hole_fills(
        client: ClientSessionRecord, state: FastPathState, gap: int, tail: bytes) -> None:
    isn_c, isn_g = client.rcv_isn, client.snd_isn
    origin = (isn_c + 1) % MOD
    trigger = in_order_trigger(client, tail).with_(seq=(origin + gap) % MOD)
    res = handoff(first_record(client, state), trigger)
    tcb, buffers = res.client.tcb, res.client.buffers

    assert res.accepted is True
    assert buffers.out_of_order == {gap: tail}
    assert buffers.receive == bytearray()
    assert tcb.rcv_nxt == origin
    assert res.reply.flags == ACK
    assert res.reply.ack == origin          # a duplicate ACK asking for the hole
    assert res.reply.seq == (isn_g + 1) % MOD

    hole = bytes(range(256)) * (gap // 256 + 1)
    hole = hole[:gap]
    accepted, reply = receive(tcb, Segment(seq=origin, ack=(isn_g + 1) % MOD, payload=hole),
                              buffers)
    assert accepted is True
    assert bytes(buffers.receive) == hole + tail
    assert buffers.out_of_order == {}
    assert tcb.rcv_nxt == (origin + gap + len(tail)) % MOD
    assert reply.ack == tcb.rcv_nxt


@st.composite
def split_deliveries(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A byte string, cut into pieces, delivered in a random order with duplicates."""
    data = draw(st.binary(min_size=1, max_size=3000))
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=12))
                  if len(data) > 1 else set())
    edges = [0, *cuts, len(data)]
    pieces = [(a, data[a:b]) for a, b in itertools.pairwise(edges)]
    order = draw(st.permutations(range(len(pieces))))
    dups = draw(st.lists(st.tuples(st.integers(0, len(pieces) - 1),
                                   st.integers(0, len(pieces))), max_size=6))
    schedule = list(order)
    for piece, where in dups:
        schedule.insert(min(where, len(schedule)), piece)
    return data, [pieces[i] for i in schedule]


@given(seq32, seq32, split_deliveries())
@settings(max_examples=150)
def test_receive_reassembles_any_order_with_duplicates(
        irs: int, iss: int, case: tuple[bytes, list[tuple[int, bytes]]]) -> None:
    data, deliveries = case
    tcb = create_tcb(plain_client(irs, iss), irs, iss, True, 65535)
    buffers = PacketBuffers(capacity=DEFAULT_BUFFER)
    origin = (irs + 1) % MOD
    for off, piece in deliveries:
        before = bytes(buffers.receive)
        accepted, reply = receive(tcb, Segment(seq=(origin + off) % MOD, ack=(iss + 1) % MOD,
                                               payload=piece), buffers)
        # A piece wholly before RCV.NXT is an old duplicate (unacceptable, answered by an
        # ACK); anything else is in the window. In-order bytes are always a prefix of the
        # stream, RCV.NXT counts exactly them, and the reply ACKs RCV.NXT from ISS + 1.
        assert accepted is (off + len(piece) > len(before))
        assert bytes(buffers.receive) == data[:len(buffers.receive)]
        assert bytes(buffers.receive).startswith(before)
        assert tcb.rcv_nxt == (origin + len(buffers.receive)) % MOD
        assert reply.ack == tcb.rcv_nxt
        assert reply.seq == (iss + 1) % MOD
    assert bytes(buffers.receive) == data
    assert tcb.rcv_nxt == (irs + 1 + len(data)) % MOD
    assert buffers.out_of_order == {}


@st.composite
def repacketized_deliveries(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A byte string sent as arbitrary, overlapping slices (retransmissions that cut the
    stream at other boundaries), in any order."""
    data = draw(st.binary(min_size=1, max_size=600))
    slices = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 250)),
                           min_size=1, max_size=15))
    return data, [(a, data[a:a + n]) for a, n in slices]


@given(seq32, repacketized_deliveries())
@settings(max_examples=150)
def test_receive_keeps_a_prefix_of_the_stream_under_overlapping_retransmissions(
        irs: int, case: tuple[bytes, list[tuple[int, bytes]]]) -> None:
    data, deliveries = case
    tcb = create_tcb(plain_client(irs, 9), irs, 9, True, 65535)
    buffers = PacketBuffers(capacity=DEFAULT_BUFFER)
    origin = (irs + 1) % MOD
    # A final retransmission of the whole stream stands for the sender's timeout recovery.
    for off, piece in [*deliveries, (0, data)]:
        receive(tcb, Segment(seq=(origin + off) % MOD, payload=piece), buffers)
        assert bytes(buffers.receive) == data[:len(buffers.receive)]
        assert tcb.rcv_nxt == (origin + len(buffers.receive)) % MOD
    assert bytes(buffers.receive) == data


@given(seq32)
@settings(max_examples=20)
def test_draining_trims_a_buffered_piece_that_overlaps_new_data(irs: int) -> None:
    data = bytes(range(20))
    tcb = create_tcb(plain_client(irs, 9), irs, 9, True, 65535)
    buffers = PacketBuffers(capacity=DEFAULT_BUFFER)
    origin = (irs + 1) % MOD
    receive(tcb, Segment(seq=(origin + 5) % MOD, payload=data[5:15]), buffers)
    assert buffers.out_of_order == {5: data[5:15]}
    receive(tcb, Segment(seq=origin, payload=data[:8]), buffers)
    assert bytes(buffers.receive) == data[:15]
    assert tcb.rcv_nxt == (origin + 15) % MOD
    assert buffers.out_of_order == {}


@given(seq32, st.binary(min_size=1, max_size=200), st.binary(min_size=1, max_size=200))
@settings(max_examples=50)
def test_in_order_fin_advances_rcv_nxt_past_the_fin(irs: int, head: bytes, last: bytes) -> None:
    tcb = create_tcb(plain_client(irs, 7), irs, 7, True, 65535)
    buffers = PacketBuffers(capacity=DEFAULT_BUFFER)
    origin = (irs + 1) % MOD
    receive(tcb, Segment(seq=origin, payload=head), buffers)
    receive(tcb, Segment(seq=(origin + len(head)) % MOD, flags=ACK | FIN, payload=last),
            buffers)
    assert bytes(buffers.receive) == head + last
    assert tcb.rcv_nxt == (origin + len(head) + len(last) + 1) % MOD


@given(seq32, st.binary(min_size=1, max_size=100), st.integers(1, 50))
@settings(max_examples=50)
def test_unacceptable_segment_is_answered_with_ack_and_changes_nothing(
        irs: int, payload: bytes, beyond: int) -> None:
    wnd = 1000
    tcb = create_tcb(plain_client(irs, 7), irs, 7, True, wnd)
    buffers = PacketBuffers(capacity=DEFAULT_BUFFER)
    origin = (irs + 1) % MOD
    accepted, reply = receive(tcb, Segment(seq=(origin + wnd + beyond - 1) % MOD,
                                           payload=payload), buffers)
    assert accepted is False
    assert reply.flags == ACK
    assert reply.ack == origin
    assert tcb.rcv_nxt == origin
    assert buffers.receive == bytearray()
    assert buffers.out_of_order == {}
