"""collector.runtime.immortal: the preloaded objects a worker inherits carry CPython's immortal mark.

Why: a worker's reference counting would otherwise write into (and so copy, page by page) the forkserver's
heap it shares; the mark makes Py_INCREF/Py_DECREF leave those objects alone. These tests check the mark
where CPython reads it (the object's reference count) and that taking references no longer changes it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collector.runtime.immortal import IMMORTAL_REFCNT, immortalize, is_immortal, supported

pytestmark = pytest.mark.skipif(not supported(), reason="the immortal mark is CPython 3.13's (64-bit, GIL)")


class _Holder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.parts = (name, len(name))


def test_a_marked_object_keeps_its_count_whatever_references_are_taken() -> None:
    obj = _Holder("".join(["marked-", str(id(object()))]))  # built at run time: not interned, not immortal
    assert not is_immortal(obj)
    assert immortalize([obj]) >= 1
    assert is_immortal(obj) and sys.getrefcount(obj) == IMMORTAL_REFCNT
    refs = [obj] * 1000
    assert sys.getrefcount(obj) == IMMORTAL_REFCNT
    del refs
    assert sys.getrefcount(obj) == IMMORTAL_REFCNT


def test_the_untracked_objects_it_refers_to_are_marked_too() -> None:
    name = "".join(["referent-", str(id(object()))])
    obj, other = _Holder(name), _Holder(name + "-other")
    immortalize([obj])  # its attributes: the string and the (untracked) tuple
    assert is_immortal(name) and is_immortal(obj.parts)
    assert not is_immortal(other) and not is_immortal(other.name)  # only what was given and what it refers to


def test_a_function_s_code_and_constants_are_marked() -> None:
    namespace: dict[str, object] = {}
    exec("def f():\n    return ('a constant tuple', 12345678901234567890)\n", namespace)
    f = namespace["f"]
    code = f.__code__  # type: ignore[attr-defined]
    const = code.co_consts[-1]
    assert not is_immortal(code) and not is_immortal(const)
    immortalize([f])
    assert is_immortal(code) and is_immortal(const) and all(is_immortal(c) for c in const)
    assert immortalize([f]) == 0  # marked once


CHILD = textwrap.dedent("""
    import multiprocessing as mp, sys

    def probe(q):
        from collector.pipeline.trade_filter import TradeFilter
        from collector.runtime.immortal import is_immortal
        from collector.runtime.worker import run_worker
        import collector.pipeline.router as router
        fresh = object()
        q.put([is_immortal(TradeFilter), is_immortal(run_worker), is_immortal(run_worker.__code__),
               is_immortal(router.__dict__), is_immortal(fresh)])

    if __name__ == "__main__":
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["collector.runtime.preload"])
        q = ctx.Queue()
        p = ctx.Process(target=probe, args=(q,))
        p.start()
        print(q.get(timeout=60))
        p.join(60)
        sys.exit(p.exitcode)
""")


def test_a_forkserver_child_inherits_the_preloaded_objects_immortal(tmp_path: Path) -> None:
    """The arbiter's set-up (forkserver, collector.runtime.preload) in a fresh interpreter: in the child, the
    preloaded classes, functions, their code and module dicts are immortal; what the child makes is not."""
    script = tmp_path / "probe.py"
    script.write_text(CHILD)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[True, True, True, True, False]"
