"""The two-sided conformance suite (client-side and server-side checks) will live here."""
