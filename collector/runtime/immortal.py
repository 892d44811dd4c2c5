"""Marks the forkserver's preloaded objects immortal, so that the children's reference counting leaves them shared.

Why: every worker and the writer is a fork of the forkserver (collector.runtime.preload) and shares its heap
copy-on-write. `gc.freeze()` keeps the children's garbage collections off those pages, but CPython also writes
into an object each time code takes a reference to it (its reference count): calling a function, loading a
constant, making an instance of a class, looking up a method. Each such write copies the whole 4 kB page into
the child. CPython 3.12+ skips those writes for immortal objects (None, small ints, interned strings: PEP 683);
giving the preloaded objects the same mark keeps their pages shared. bench/README ("The shipped
configuration") has the measured effect on the workers' PSS.

The mark is CPython 3.13's own representation (a reference count of exactly `_Py_IMMORTAL_REFCNT`, UINT_MAX on
a 64-bit build, Include/object.h), which Py_INCREF and Py_DECREF test before they write. On any other version,
a free-threaded or a Py_TRACE_REFS build this module marks nothing and the children just copy more pages.

An immortal object is never freed. That is right for what is marked: everything alive once the preload has
imported its modules, i.e. the modules, their classes, functions, constants and module-level state, which
live as long as any process does. collector.runtime.preload runs it where little else exists yet: in the
supervisor just before it forks the forkserver (collector.runtime.forkserver), where the only other objects
are the parsed arguments and the first configuration (kept for the process's life even after a SIGHUP
replaces it: a few kB), or in a forkserver that multiprocessing started itself. Never in a process that has made its working objects (the tests import
neither module but in a fresh interpreter).
"""

from __future__ import annotations

import ctypes
import gc
import sys
import sysconfig
import types
from collections.abc import Iterable

IMMORTAL_REFCNT = 0xFFFF_FFFF  # _Py_IMMORTAL_REFCNT of CPython 3.13 on a 64-bit build
# Objects the garbage collector does not track (so gc.get_objects() does not list them) that tracked ones refer
# to: a function's code, a class's or module's strings and numbers, tuples of such.
_UNTRACKED = (str, bytes, int, float, complex, tuple, frozenset, types.CodeType)


def supported() -> bool:
    """True where the immortal mark is known: CPython 3.13, 64-bit, with the GIL and the usual object header
    (a Py_TRACE_REFS build, which has sys.getobjects, puts two pointers before the count)."""
    return (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 13) and sys.maxsize > 2**32
            and not sysconfig.get_config_var("Py_GIL_DISABLED") and not hasattr(sys, "getobjects"))


def is_immortal(obj: object) -> bool:
    """True if `obj` carries the immortal mark (sys.getrefcount reports the mark itself for such objects)."""
    return supported() and ctypes.c_ssize_t.from_address(id(obj)).value == IMMORTAL_REFCNT


def immortalize(objects: Iterable[object]) -> int:
    """Marks each object immortal, with the untracked objects (strings, numbers, tuples, code and its constants)
    it refers to; returns how many objects were newly marked, 0 where not supported()."""
    if not supported():
        return 0
    marked = 0
    for obj in objects:
        marked += _mark(obj)
        for ref in gc.get_referents(obj):
            if type(ref) in _UNTRACKED:
                marked += _mark(ref)
    return marked


def immortalize_heap() -> int:
    """Marks every object the garbage collector tracks now (after a collection) immortal, then freezes them
    (gc.freeze: the collections of this process and its forks never walk them); returns how many were marked."""
    gc.collect()
    marked = immortalize(gc.get_objects())
    gc.freeze()
    return marked


def _mark(obj: object) -> int:
    count = ctypes.c_ssize_t.from_address(id(obj))
    if count.value == IMMORTAL_REFCNT:
        return 0
    count.value = IMMORTAL_REFCNT
    marked = 1
    if type(obj) is types.CodeType:  # not tracked, so not listed: its constants only through it
        for const in obj.co_consts:
            if type(const) in _UNTRACKED:
                marked += _mark(const)
    elif isinstance(obj, (tuple, frozenset)):  # an untracked tuple's items are untracked too
        for item in obj:
            if type(item) in _UNTRACKED:
                marked += _mark(item)
    return marked
