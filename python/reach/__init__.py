"""reach: who a push reaches, and on which channel.

The JPush v3 audience of a push is resolved over a registry of devices kept as roaring bitmaps
in a compiled core, and split into delivery batches per platform and vendor channel.
"""

from ._core import PLATFORMS, VENDORS, Batch, Resolution, __version__
from .errors import LoadError, PushError, SnapshotError
from .jpush import Audience, PushRequest, parse_audience, parse_push
from .registry import Registry

__all__ = [
    "PLATFORMS",
    "VENDORS",
    "Audience",
    "Batch",
    "LoadError",
    "PushError",
    "PushRequest",
    "Registry",
    "Resolution",
    "SnapshotError",
    "__version__",
    "parse_audience",
    "parse_push",
]
