"""Two-Phase Commit: participants and clients over TCP, a runner that checks them.

See README.md for how to run it and docs/protocol.md for the wire protocol.
"""

__version__ = "0.1.0"
