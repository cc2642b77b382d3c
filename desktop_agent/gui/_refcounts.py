"""A guard against the Qt binding's reference counting of ``None``, ``True`` and ``False`` on
CPython 3.11.

PySide6 6.12 returns ``None`` (from void methods, and to Qt when it calls a Python slot or timer)
and ``True``/``False`` (from ``Signal.emit``) without a new reference. From CPython 3.12 these
objects are immortal (PEP 683) and that is harmless; on 3.11 every such call takes one reference
away. The tray app makes hundreds of thousands of them during a backup (a progress event is a signal
emitted from the worker thread, then a slot, a label update, a timer...). When the count reaches
zero, CPython aborts with "Fatal Python error: none_dealloc" (or ``bool_dealloc``), in whatever
thread drops the last one: typically while quitting mid-backup, when the interpreter lets go of
everything that held ``None`` at once while the compress and upload threads are still unwinding.

``guard()`` measures the binding once. When it drops references, it gives the three objects a
reserve of ``RESERVE`` references: what CPython 3.12 does for them by design. Nothing is freed
wrongly because of it: these objects live as long as the interpreter anyway.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["RESERVE", "binding_drops_references", "guard"]

RESERVE = 1 << 40
"""References added to each singleton: at a million dropped references a second, 12 days' worth;
far from the counter's limit (2**63)."""

_PROBES = 64
_guarded = False


def binding_drops_references() -> bool:
    """Whether calls into Qt (a void method, a signal emitted) take references to ``None`` or
    ``True`` away, measured over ``_PROBES`` calls of each."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(_PROBES):
        probe.setObjectName("probe")
        probe.ping.emit()
    none_lost = none_before - sys.getrefcount(None)
    true_lost = true_before - sys.getrefcount(True)
    # Other threads may take or release a few references meanwhile: a bug loses one per call.
    return none_lost >= _PROBES // 2 or true_lost >= _PROBES // 2


def guard() -> bool:
    """Make ``None``, ``True`` and ``False`` safe from the binding's missing references (once per
    process; only on CPython before 3.12, and only when the binding has the bug). ``True`` when
    the reserve was added."""
    global _guarded
    if _guarded or sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    _guarded = True
    if not binding_drops_references():
        return False
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every CPython 3.11 object.
        ctypes.c_ssize_t.from_address(id(singleton)).value += RESERVE
    return True
