"""Initial sequence numbers per RFC 6528: ISN = M + F(4-tuple, secret).

M is a 4-microsecond clock (RFC 9293 §3.4.1) taken from the ``now`` the caller passes, F a
keyed hash (BLAKE2b with the secret as key) of the connection's addresses and ports, so ISNs
are unpredictable to off-path attackers yet deterministic for a given secret and time, which
is what tests and replays need.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

IsnSource = Callable[[bytes, int, bytes, int, float], int]
"""(local address, local port, remote address, remote port, now) -> 32-bit ISN."""


def rfc6528(secret: bytes | None = None) -> IsnSource:
    """An ISN generator; a random secret when none is given (the only randomness, at start)."""
    key = secret if secret is not None else os.urandom(16)

    def isn(laddr: bytes, lport: int, raddr: bytes, rport: int, now: float) -> int:
        h = hashlib.blake2b(laddr + lport.to_bytes(2, "big") + raddr + rport.to_bytes(2, "big"),
                            key=key[:64], digest_size=4)
        m = int(now * 250_000)  # 4 us ticks
        return (m + int.from_bytes(h.digest(), "big")) & 0xFFFFFFFF

    return isn
