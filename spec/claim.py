"""The elements of claim 1 of US 9,386,088 B2, paraphrased, with stable IDs.

Everything that serves a claim element (a model definition, a proof, a conformance case, the
gateway code) cites one of these IDs; the docs' traceability matrix is built from them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClaimElement:
    id: str
    summary: str


CLAIM1: tuple[ClaimElement, ...] = (
    ClaimElement("C1.fp", "A fast path module processes data packets without packet buffers."),
    ClaimElement("C1.a", "The fast path receives a service request packet from the client "
                         "side session."),
    ClaimElement("C1.b", "The fast path determines that it cannot process that packet."),
    ClaimElement("C1.c", "In response, it sends that packet to the normal path, which "
                         "processes packets using packet buffers."),
    ClaimElement("C1.d", "The normal path retrieves the first proxy session record, created by "
                         "the fast path and associated with the client session record."),
    ClaimElement("C1.e", "The normal path creates a second proxy session record and a second "
                         "client session record from the packet and that client session "
                         "record."),
    ClaimElement("C1.f", "It associates the second client session record with the second "
                         "proxy session record."),
    ClaimElement("C1.g", "It obtains the client session receiving ISN and sending ISN from the "
                         "fast path's client session record."),
    ClaimElement("C1.h", "It creates TCP session state variables and packet buffers for the "
                         "client side session."),
    ClaimElement("C1.i", "It stores both ISNs and the state variables in the second client "
                         "session record."),
    ClaimElement("C1.j", "It processes the service request packet according to the second "
                         "proxy session record."),
)

CLAIM1_IDS = tuple(e.id for e in CLAIM1)


def element(id_: str) -> ClaimElement:
    for e in CLAIM1:
        if e.id == id_:
            return e
    raise KeyError(f"no claim-1 element {id_!r}; known: {', '.join(CLAIM1_IDS)}")
