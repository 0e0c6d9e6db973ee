"""The JPush v3 emulator: a local server that answers as the JPush API does, over reach.

``Emulator`` is the API (request in, answer out), ``Store`` its durable state, ``serve`` the HTTP
server around them; ``reach serve`` on the command line.
"""

from .app import AppConfig, Emulator, GroupConfig, Reply
from .server import serve
from .store import Store

__all__ = ["AppConfig", "Emulator", "GroupConfig", "Reply", "Store", "serve"]
