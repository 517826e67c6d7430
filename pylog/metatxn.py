"""A metadata transaction: :meth:`pylog.metadata.Metadata._txn`'s context
manager, which takes the writer lock (writes), counts the call in flight
(pylog.metacalls) and begins the LMDB transaction, and gives each back in
reverse whatever interrupts it (Ctrl-C included: see :class:`MetaTxn`).

Thread safety: one per ``with``, used by the thread that made it.
Durability: as the Metadata's (the commit follows its sync mode).
"""

from __future__ import annotations

import threading
from typing import Any

import lmdb

from .errors import PylogError


class MetaTxn:
    """:meth:`Metadata._txn`'s context manager: the writer lock (writes)
    and an LMDB transaction, committed when the block ends without an
    exception, else aborted.

    Class-based, not a generator, for Ctrl-C: Python handles a pending
    KeyboardInterrupt at the return of any call made from Python and at
    the entry of any Python function, so a generator's ``__enter__`` can
    return its lock into an interrupt (the generator, suspended holding
    it, gives it back only when collected, perhaps in another thread).
    Here ``__enter__`` gives back what it took when anything interrupts it,
    and ``__exit__`` releases in a ``finally``. The point Python leaves
    open is ``__exit__``'s entry: an interrupt handled there never runs
    it; :meth:`__del__` then aborts and releases once the interrupt's
    traceback lets go of this object (in the thread holding the lock,
    which is the only one Ctrl-C interrupts), and a read's count in
    flight is given back (in the thread that made it).

    Thread safety: one per ``with``, used by the thread that made it.
    Durability: as the Metadata's (the commit follows its sync mode)."""

    __slots__ = ("_meta", "_what", "_write", "_wait", "_after", "_held", "_lmdb", "_in_after",
                 "_gated", "_thread")

    def __init__(self, meta: Any, what: str, write: bool, wait: bool,
                 after: list | None):
        self._meta = meta          # (a pylog.metadata.Metadata: a layer up)
        self._what = what
        self._write = write
        self._wait = wait
        self._after = after
        self._held = False
        self._in_after = False
        self._lmdb: Any = None
        self._gated = False         # counted in Metadata._calls
        self._thread = threading.get_ident()    # (whose count that is)

    def __enter__(self) -> Any:
        meta, what = self._meta, self._what
        if self._write:
            if meta._vanished is not None:
                raise meta._vanished
            wlock = meta._wlock
            if wlock is None:
                raise PylogError(f"{what}: the metadata was opened read-only")
            wlock._acquire(what, wlock.timeout_s if self._wait else 0, self)
            # (a Python function returns with no point where an interrupt
            # is handled: from here on `_held` says the lock is ours)
            self._held = True
        try:
            meta._calls.enter(what)     # (LogClosed once its close began)
            self._gated = True
            if self._write:
                meta._reaper.reap(now=False)
            # (interrupted at begin()'s return, the transaction object is
            # dropped with the frame's stack, which aborts it)
            try:
                txn = self._lmdb = meta.env.begin(write=self._write)
            except lmdb.ReadersFullError:
                if not meta._reaper.reap():     # (dead processes' slots)
                    raise
                txn = self._lmdb = meta.env.begin(write=self._write)
        except BaseException as exc:
            self._ungate()
            self._release()
            if isinstance(exc, lmdb.Error):
                raise meta._lmdb_error(what, self._write, exc) from exc
            raise
        return txn

    def __exit__(self, typ, exc, tb) -> None:
        meta, what = self._meta, self._what
        try:
            txn, self._lmdb = self._lmdb, None
            try:
                if txn is not None:
                    if typ is None:
                        txn.commit()
                    else:
                        txn.abort()
            except lmdb.Error as err:
                raise meta._lmdb_error(what, self._write, err) from err
            finally:
                self._ungate()
            if typ is not None and issubclass(typ, lmdb.Error):
                raise meta._lmdb_error(what, self._write, exc) from exc
            if typ is None and self._write:
                if meta._flush_each:
                    meta.sync()     # (the change is made; LogFailedError: maybe not durable)
                meta.check_identity(what)
                if self._after:
                    self._in_after = True   # (a nested write here is refused)
                    try:
                        for fn in self._after:
                            fn()
                    finally:
                        self._in_after = False
        finally:
            self._release()

    def _ungate(self) -> None:
        if self._gated:
            self._gated = False
            self._meta._calls.leave()

    def _release(self) -> None:
        """Give the writer lock back if this holds it; idempotent. `_held`
        is cleared after the release, so an interrupt before it leaves the
        release to :meth:`abandon` (the thread's next write) or __del__."""
        if self._held:
            wlock = self._meta._wlock
            assert wlock is not None
            wlock._release_if_mine()
            self._held = False

    def abandoned(self) -> bool:
        """MetaLock._acquire found this holding the lock in its thread:
        left by an interrupt at ``__exit__``'s entry, unless it is running
        its ``after`` callbacks (a write nested in a block's body never
        worked: LMDB refuses a second write transaction in a thread)."""
        return not self._in_after

    def abandon(self) -> None:
        """Abort the transaction, then release the lock (in this order: the
        next writer begins at once)."""
        txn, self._lmdb = self._lmdb, None
        if txn is not None:
            txn.abort()
        self._ungate()
        self._release()

    def __del__(self) -> None:
        if getattr(self, "_gated", False) and not getattr(self, "_held", False) and \
                self._thread == threading.get_ident():
            # a read interrupted at __exit__'s entry: its count in flight
            # (a thread's own) would delay forks and closes of other threads
            self._ungate()
        if not getattr(self, "_held", False):   # (unset: __init__ was interrupted)
            return
        wlock = self._meta._wlock
        if wlock is not None and wlock.mine():
            self.abandon()
        # (else: py-lmdb aborts a transaction object when it is freed)
