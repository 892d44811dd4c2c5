"""The pipeline: decoded events in, encoded COPY batches out. Its hot modules may run compiled (collector.native)."""

from collector import native as _native

__path__ = _native.search_path(__name__, __path__)
