"""Read pcap and pcapng captures fast, and write classic pcaps.

The checker reads captures of a million packets, so this is plain ``struct`` over the whole
file in memory rather than a per-packet object library (dpkt stays a test oracle). Readers
never decode above the link layer: ``records()`` yields offsets into ``Capture.data`` and the
link type, and ``conformance.flows`` decodes from there.

Bad input is reported, not guessed around: a file that is neither pcap nor pcapng, or whose
link type we cannot decode, raises ``PcapError`` naming the file and the packet; a truncated
last record (a capture cut short) keeps every packet before it and leaves a note, because
what was captured can still be judged.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

LINKTYPES: dict[int, str] = {
    1: "Ethernet",
    12: "raw IP (OpenBSD DLT 12)",
    14: "raw IP (DLT 14)",
    101: "raw IP",
    113: "Linux cooked capture (SLL)",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked capture v2 (SLL2)",
}
"""Link types the checker decodes (pcap LINKTYPE_* values)."""

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

_PCAP_MAGIC = {  # magic as read little-endian -> (byte order, ticks per second)
    0xA1B2C3D4: ("<", 1_000_000),
    0xD4C3B2A1: (">", 1_000_000),
    0xA1B23C4D: ("<", 1_000_000_000),
    0x4D3CB2A1: (">", 1_000_000_000),
}
_SHB = 0x0A0D0D0A
_BOM = 0x1A2B3C4D


def supported_linktypes() -> str:
    """The supported link types as text, for error messages."""
    return ", ".join(f"{k} ({v})" for k, v in sorted(LINKTYPES.items()))


class PcapError(Exception):
    """A capture we cannot read (any further); names the file and, if known, the packet."""

    def __init__(self, path: str | Path, packet_index: int | None, message: str) -> None:
        where = f"{path}" + (f": packet {packet_index}" if packet_index is not None else "")
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.packet_index = packet_index
        self.message = message

    def __reduce__(self) -> tuple[type[PcapError], tuple[str, int | None, str]]:
        """Pickle by the constructor's arguments: the checker's second process raises it in
        the first."""
        return (PcapError, (self.path, self.packet_index, self.message))


Record = tuple[int, float, int, int, int, int]
"""(frame number from 1, time in seconds, link type, offset in data, captured length,
original length)."""


@dataclass
class Capture:
    """A capture file held in memory; iterate ``records()`` for its packets."""

    path: Path
    data: bytes | mmap.mmap
    """The file's bytes; a plain capture file is memory-mapped (read-only) rather than
    copied, so slices of it are ``bytes`` and ``struct`` reads it in place."""
    format: str
    linktype: int | None = None
    """The link type of a classic pcap (pcapng has one per interface)."""
    notes: list[str] = field(default_factory=list)
    """Problems met while reading (filled as records are iterated)."""
    packets: int = 0
    """Packet records read so far (after iteration: all that could be read)."""

    def records(self) -> Iterator[Record]:
        """Every packet record, in file order; notes a truncated tail instead of raising."""
        if self.format == "pcap":
            return self._pcap_records()
        return self._pcapng_records()

    def pcap_layout(self) -> tuple[struct.Struct, float]:
        """A classic pcap's record header ``Struct`` (seconds, fraction, captured length,
        original length) and seconds per fraction tick, for readers that walk the records
        themselves (``conformance.flows``); those report a bad tail with ``cut_record``."""
        order, ticks = _PCAP_MAGIC[struct.unpack_from("<I", self.data)[0]]
        return struct.Struct(order + "IIII"), 1.0 / ticks

    def cut_record(self, index: int, start: int, incl: int) -> None:
        """Note classic pcap record ``index`` whose ``incl`` captured bytes from ``start``
        run past the end of the file (corrupt or truncated)."""
        if incl > 0x4000000:
            self.notes.append(f"{self.path}: packet {index}: corrupt record (captured "
                              f"length {incl}); {index - 1} packet(s) before it read")
        else:
            self._truncated(index, f"{len(self.data) - start} of {incl} captured bytes "
                            "present")

    def close(self) -> None:
        """Release a memory-mapped file (its records can no longer be read)."""
        if isinstance(self.data, mmap.mmap):
            self.data.close()

    def _pcap_records(self) -> Iterator[Record]:
        data = self.data
        rec, scale = self.pcap_layout()
        unpack = rec.unpack_from
        linktype = self.linktype
        off, end, index = 24, len(data), 0
        while off < end:
            index += 1
            if off + 16 > end:
                self._truncated(index, f"record header has {end - off} of 16 bytes")
                return
            sec, frac, incl, orig = unpack(data, off)
            start = off + 16
            off = start + incl
            if off > end:
                self.cut_record(index, start, incl)
                return
            self.packets = index
            yield index, sec + frac * scale, linktype, start, incl, orig  # type: ignore[misc]

    def _pcapng_records(self) -> Iterator[Record]:
        data, path = self.data, self.path
        end = len(data)
        off, index = 0, 0
        order = "<"
        ifaces: list[tuple[int, float, int]] = []  # (linktype, seconds per tick, snaplen)
        while off < end:
            if off + 12 > end:
                self._truncated(index + 1, f"block header has {end - off} of 12 bytes")
                return
            btype = struct.unpack_from(order + "I", data, off)[0]
            if btype == _SHB:
                bom = struct.unpack_from("<I", data, off + 8)[0]
                if bom == _BOM:
                    order = "<"
                elif bom == 0x4D3C2B1A:
                    order = ">"
                else:
                    raise PcapError(path, index + 1 if index else None,
                                    f"pcapng section header at byte {off} has byte-order "
                                    f"magic 0x{bom:08x}")
                ifaces = []
            blen = struct.unpack_from(order + "I", data, off + 4)[0]
            if blen < 12 or blen % 4:
                self.notes.append(f"{path}: packet {index + 1}: corrupt pcapng block at byte "
                                  f"{off} (length {blen}); {index} packet(s) before it read")
                return
            if off + blen > end:
                self._truncated(index + 1, f"pcapng block at byte {off} has {end - off} of "
                                f"{blen} bytes")
                return
            body = off + 8
            if btype == 1:  # interface description
                lt, _, snap = struct.unpack_from(order + "HHI", data, body)
                ifaces.append((lt, _tsresol(data, order, body + 8, off + blen - 4), snap))
            elif btype in (6, 2):  # enhanced / obsolete packet block
                index += 1
                if btype == 6:
                    iface, hi, lo, incl, orig = struct.unpack_from(order + "IIIII", data, body)
                else:
                    iface, _, hi, lo, incl, orig = struct.unpack_from(order + "HHIIII", data,
                                                                      body)
                start = body + 20
                if start + incl > off + blen - 4:
                    self.notes.append(f"{path}: packet {index}: corrupt packet block (captured "
                                      f"length {incl} exceeds the block); "
                                      f"{index - 1} packet(s) before it read")
                    return
                lt, tick = self._iface(ifaces, iface, index)
                self.packets = index
                yield index, ((hi << 32) | lo) * tick, lt, start, incl, orig
            elif btype == 3:  # simple packet block
                index += 1
                orig = struct.unpack_from(order + "I", data, body)[0]
                lt, _ = self._iface(ifaces, 0, index)
                incl = min(orig, ifaces[0][2] or orig, blen - 16)
                self.packets = index
                yield index, 0.0, lt, body + 4, incl, orig
            off += blen

    def _iface(self, ifaces: list[tuple[int, float, int]], iface: int,
               index: int) -> tuple[int, float]:
        if iface >= len(ifaces):
            raise PcapError(self.path, index, f"packet on interface {iface}, but the section "
                            f"describes {len(ifaces)} interface(s)")
        lt, tick, _ = ifaces[iface]
        if lt not in LINKTYPES:
            raise PcapError(self.path, index, f"unknown link type {lt} on interface {iface}; "
                            f"supported: {supported_linktypes()}")
        return lt, tick

    def _truncated(self, index: int, what: str) -> None:
        self.notes.append(f"{self.path}: packet {index}: truncated record ({what}); the "
                          f"{index - 1} packet(s) before it are judged")


def _tsresol(data: bytes, order: str, off: int, end: int) -> float:
    """Seconds per timestamp tick from an IDB's if_tsresol option (default microseconds)."""
    while off + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, off)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = data[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        off += 4 + length + (-length % 4)
    return 1e-6


_MAP_FLAGS = getattr(mmap, "MAP_SHARED", 0) | getattr(mmap, "MAP_POPULATE", 0)


def _load(path: Path) -> bytes | mmap.mmap:
    """The file's contents: a read-only map of a plain regular file (prefaulted where the
    system can: a 300 MB capture maps in milliseconds where a read copies for a third of a
    second), else its bytes (gzip, pipes, empty files, systems without ``mmap``)."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_size >= 24 and hasattr(mmap, "PROT_READ") \
                and f.read(2) != b"\x1f\x8b":
            try:
                return mmap.mmap(f.fileno(), st.st_size, flags=_MAP_FLAGS,
                                 prot=mmap.PROT_READ)
            except (OSError, ValueError, OverflowError):
                pass
        f.seek(0)
        return f.read()


def open_capture(path: str | Path) -> Capture:
    """Load a pcap or pcapng file, plain or gzipped; raise ``PcapError`` if it is neither or
    cannot be decoded."""
    path = Path(path)
    try:
        data = _load(path)
    except OSError as e:
        raise PcapError(path, None, f"cannot read: {e.strerror or e}") from None
    if data[:2] == b"\x1f\x8b":  # gzip, as Wireshark also reads (the golden pcaps are)
        import gzip
        import zlib

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise PcapError(path, None, f"a gzip file that does not decompress ({e}); "
                            f"recompress it or pass the plain capture") from None
    if len(data) < 4:
        raise PcapError(path, None, f"{len(data)} bytes: too short for a pcap or pcapng "
                        "header")
    magic = struct.unpack_from("<I", data)[0]
    if magic in _PCAP_MAGIC:
        if len(data) < 24:
            raise PcapError(path, None, f"pcap file header has {len(data)} of 24 bytes")
        order = _PCAP_MAGIC[magic][0]
        linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
        if linktype not in LINKTYPES:
            raise PcapError(path, None, f"unknown link type {linktype}; supported: "
                            f"{supported_linktypes()}")
        return Capture(path, data, "pcap", linktype)
    if magic == _SHB:
        if len(data) < 12:
            raise PcapError(path, None, "pcapng section header is truncated")
        return Capture(path, data, "pcapng")
    raise PcapError(path, None, f"not a pcap or pcapng file (first bytes "
                    f"{data[:8].hex(' ')})")


class PcapWriter:
    """A classic pcap writer (microsecond timestamps), for tests, benches and crafted traces."""

    def __init__(self, path: str | Path, linktype: int = LINKTYPE_ETHERNET,
                 snaplen: int = 262144) -> None:
        self.path = Path(path)
        self._f = self.path.open("wb")
        self._f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        self._rec = struct.Struct("<IIII")
        self.count = 0

    def write(self, t: float, frame: bytes, orig_len: int | None = None) -> None:
        """Append one frame captured at ``t`` seconds (``orig_len`` for snapped frames)."""
        sec = int(t)
        usec = round((t - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        n = len(frame)
        self._f.write(self._rec.pack(sec, usec, n, n if orig_len is None else orig_len))
        self._f.write(frame)
        self.count += 1

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_pcap(path: str | Path, frames: Iterable[tuple[float, bytes]],
               linktype: int = LINKTYPE_ETHERNET) -> Path:
    """Write ``(time, frame)`` pairs as a classic pcap; returns the path."""
    with PcapWriter(path, linktype) as w:
        for t, frame in frames:
            w.write(t, frame)
    return Path(path)


def write_pcapng(path: str | Path, frames: Iterable[tuple[float, bytes]],
                 linktype: int = LINKTYPE_ETHERNET, nanoseconds: bool = False) -> Path:
    """Write a minimal pcapng (one section, one interface, enhanced packet blocks)."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    opts = b""
    if nanoseconds:
        opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    out = [block(_SHB, struct.pack("<IHHq", _BOM, 1, 0, -1)),
           block(1, struct.pack("<HHI", linktype, 0, 262144) + opts)]
    tick = 1e9 if nanoseconds else 1e6
    for t, frame in frames:
        ts = round(t * tick)
        out.append(block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame),
                                        len(frame)) + frame))
    Path(path).write_bytes(b"".join(out))
    return Path(path)


__all__ = ["LINKTYPES", "Capture", "PcapError", "PcapWriter", "Record", "open_capture",
           "supported_linktypes", "write_pcap", "write_pcapng"]
