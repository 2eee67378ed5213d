"""The reference gateway: fast path, normal path and the claim-1 handoff will live here."""
