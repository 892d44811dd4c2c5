"""The exchange side: connections, wire structs, REST. Its per-frame loop may run compiled (collector.native)."""

from collector import native as _native

__path__ = _native.search_path(__name__, __path__)
