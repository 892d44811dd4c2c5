"""The collector package. Importing it decides, once per process, whether the hot pipeline modules run compiled
(collector.native says when and why)."""

from collector import native as _native

__path__ = _native.search_path(__name__, __path__)
