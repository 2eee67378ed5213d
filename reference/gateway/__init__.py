"""The reference gateway implementation, built on the definitions in spec/, will live here."""
