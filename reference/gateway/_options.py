"""TCP option parsing and Linux-style layout (RFC 9293, 7323, 2018).

Parsing records, next to each value, the buffer offset of that value, so the fast path can
patch timestamps, SACK blocks and MSS in place. It is stricter than Linux on purpose: a known
option with a wrong length or a second copy of one is rejected, because the fast path would
translate one copy and leak the other untranslated.
"""

from __future__ import annotations

import struct

from reference.gateway._checksum import Buffer

EOL, NOP, MSS, WSCALE, SACK_PERMITTED, SACK, TIMESTAMP = 0, 1, 2, 3, 4, 5, 8
MAX_OPTION_BYTES = 40
_FIXED_LEN = {MSS: 4, WSCALE: 3, SACK_PERMITTED: 2, TIMESTAMP: 10}
_NAMES = {MSS: "MSS", WSCALE: "window scale", SACK_PERMITTED: "SACK-permitted",
          TIMESTAMP: "timestamp", SACK: "SACK"}

_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")
_NOP_NOP_TS = b"\x01\x01\x08\x0a"
"""The layout of nearly every Linux data segment: worth a shortcut."""


class OptionError(ValueError):
    """A malformed option list; the codec turns it into ``DropReason.BAD_OPTION``."""


ParsedOptions = tuple[int | None, int | None, bool, int | None, int | None,
                      tuple[tuple[int, int], ...], tuple[int, ...],
                      int | None, int | None, int | None, int | None]
"""(mss, wscale, sack_permitted, tsval, tsecr, sack, unknown kinds, mss_offset, wscale_offset,
ts_offset, sack_offset): the order of ``Packet``'s option fields, so the codec can splat it.
A plain tuple, not a NamedTuple: it is built once per packet on the fast path."""

NO_OPTIONS: ParsedOptions = (None, None, False, None, None, (), (), None, None, None, None)


def parse_options(data: Buffer, start: int, end: int) -> ParsedOptions:
    """Parse the options in ``data[start:end]``; offsets returned are absolute in ``data``."""
    if end - start == 12 and data[start:start + 4] == _NOP_NOP_TS:
        tsval, tsecr = _U32X2.unpack_from(data, start + 4)
        return (None, None, False, tsval, tsecr, (), (), None, None, start + 4, None)
    mss = wscale = tsval = tsecr = None
    mss_off = ws_off = ts_off = sack_off = None
    sack_ok = False
    sack: tuple[tuple[int, int], ...] = ()
    unknown: list[int] = []
    seen: set[int] = set()
    i = start
    while i < end:
        kind = data[i]
        if kind == EOL:
            break
        if kind == NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise OptionError(f"option kind {kind} at offset {i} has no length byte "
                              f"(options end at {end})")
        length = data[i + 1]
        if length < 2:
            raise OptionError(f"option kind {kind} at offset {i} has length {length} < 2")
        if i + length > end:
            raise OptionError(f"option kind {kind} at offset {i} with length {length} runs "
                              f"past the end of the options at {end}")
        if kind in _NAMES:
            if kind in seen:
                raise OptionError(f"second {_NAMES[kind]} option at offset {i}")
            seen.add(kind)
            want = _FIXED_LEN.get(kind)
            if want is not None and length != want:
                raise OptionError(f"{_NAMES[kind]} option at offset {i} has length {length}, "
                                  f"not {want}")
        if kind == TIMESTAMP:
            ts_off = i + 2
            tsval, tsecr = _U32X2.unpack_from(data, ts_off)
        elif kind == SACK:
            if length < 10 or (length - 2) % 8:
                raise OptionError(f"SACK option at offset {i} has length {length}, "
                                  "not 2 + 8 * blocks (blocks >= 1)")
            sack_off = i + 2
            n = (length - 2) // 4
            edges = struct.unpack_from(f"!{n}I", data, sack_off)
            sack = tuple(zip(edges[::2], edges[1::2], strict=True))
        elif kind == MSS:
            mss_off = i + 2
            mss = _U16.unpack_from(data, mss_off)[0]
        elif kind == WSCALE:
            ws_off = i + 2
            wscale = data[ws_off]
        elif kind == SACK_PERMITTED:
            sack_ok = True
        else:
            unknown.append(kind)
        i += length
    return (mss, wscale, sack_ok, tsval, tsecr, sack, tuple(unknown),
            mss_off, ws_off, ts_off, sack_off)


def build_options(*, mss: int | None = None, wscale: int | None = None,
                  sack_permitted: bool = False, tsval: int | None = None,
                  tsecr: int | None = None, sack: tuple[tuple[int, int], ...] = ()) -> bytes:
    """Options laid out as Linux ``tcp_options_write`` does, at most 40 bytes.

    MSS; SACKOK+TS (or NOP NOP TS, or NOP NOP SACKOK); NOP WS; NOP NOP SACK. Timestamps are
    present when either value is given (the other is 0). SACK blocks are kept first-come (the
    most recent block first, RFC 2018) as far as they fit; none are sent if none fits.
    """
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", MSS, 4, mss)
    if tsval is not None or tsecr is not None:
        head = (SACK_PERMITTED, 2) if sack_permitted else (NOP, NOP)
        out += struct.pack("!BBBBII", *head, TIMESTAMP, 10, tsval or 0, tsecr or 0)
    elif sack_permitted:
        out += bytes((NOP, NOP, SACK_PERMITTED, 2))
    if wscale is not None:
        out += bytes((NOP, WSCALE, 3, wscale))
    room = (MAX_OPTION_BYTES - len(out) - 4) // 8
    if sack and room > 0:
        blocks = sack[:room]
        out += bytes((NOP, NOP, SACK, 2 + 8 * len(blocks)))
        out += struct.pack(f"!{2 * len(blocks)}I", *(e for b in blocks for e in b))
    return bytes(out)
