"""The render server for native plugins and editors (``facecomp serve``).

``connect()`` reaches the user's server (starting it when absent); the wire format, which native
clients speak too, is in :mod:`.protocol` and docs/hosts-contract.md.
"""

from .client import Client, connect
from .protocol import PROTOCOL, NotRunningError, ProtocolError, ServerError, SessionNotFoundError

__all__ = ["PROTOCOL", "Client", "NotRunningError", "ProtocolError", "ServerError", "SessionNotFoundError",
           "connect"]
