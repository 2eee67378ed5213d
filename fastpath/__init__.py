"""The ``fastpath`` command line and its helpers: one entry point for every job in the project."""
