"""Share-partition state: which records of a partition a share group
(pylog.shareconsumer) has handed out, to whom, until when (FORMAT.rst Q-*).

One file per share-partition (group, topic, partition) in ``meta/share/``,
mapped shared by every process of the log (Q-1): the share-partition start
offset (SPSO: every record below it is done), the end of the in-flight
window (SPEO), and a ring of entries for the offsets in between, each with
its state, delivery count, owner and deadline (Q-2). Every change happens
under the file's lock (an OFD write lock on byte 0 — the kernel drops it
when its holder dies — plus a per-process mutex, as OFD locks do not
separate threads sharing a descriptor: pylog.sharelock, which a caught
KeyboardInterrupt leaves free and whose waits are bounded). A batch of acknowledgements is
written to a journal first and applied from it, so a holder killed midway
leaves a batch the next holder finishes: acknowledgements apply all or
nothing per partition (Q-2).

Owners are Logs (their liveness token, the one partition append locks use,
P-3) and a member number per consumer: a record acquired by a Log whose
process died is Available again at the next acquisition by anyone, not at
its lock deadline (Q-2).

Durability: a change is a store into the shared map, so it survives the
SIGKILL of the process making it as soon as it is made. LMDB holds the
durable copy in Kafka's shape (``info`` key, Q-3): SPSO plus runs {first,
last, state, delivery count}; Acquired is stored as Available. Checkpoints
copy changed files into it (the Log's interval checkpoints, flush, close,
and a ``sync="always"`` commit before it returns). After a reboot the file
is not trusted (boot id, Q-1): the state comes from LMDB.

Thread safety: thread-safe (see above). Not fork-safe: the Log reopens its
metadata in a child, and share files with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import re
import struct
import sys
import time
from array import array
from collections.abc import Callable
from itertools import chain, repeat
from typing import Any

from .commitstore import okey
from .cursors import boot_id
from .errors import CorruptLogError, InvalidArgument, PylogError
from .files import allocate_or_full, open_regular
from .handles import FD_EXHAUSTED, too_many_open_files
from .metadata import SHARE_PREFIX
from .sharelock import Held, ShareLock

AVAILABLE, ACQUIRED, ACKNOWLEDGED, ARCHIVED = 0, 1, 2, 4      # Kafka's numbers
DELAYED = 5          # Available, not before its deadline
DEAD_LETTERING = 6   # Archived once its dead-letter copy is known to exist
EMPTY = 0xFF         # a ring entry outside [SPSO, SPEO)

_MAGIC = b"PLSHARE1"
_VERSION = 2
_HEAD = struct.Struct("=8sII16s")          # magic, version, capacity, boot id
HEADER_BYTES = 4096
_OWNERS_AT = 1024                          # 256 x (uint32 token, uint32 member)
MAX_OWNERS = 255                           # owner byte 0 = none
_KEY_AT = 3072
_KEY_MAX = 1000
# int64 fields of the header, by index in 8-byte words
(SPSO, SPEO, SEQ, CKPT, MIN_DEADLINE, MIN_DELAY, LOST, JOURNAL, ARCHIVED_N,
 DLQ_PENDING) = range(8, 18)
NEVER = 1 << 62
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_FLOCK = struct.Struct("hh4xqqi4x")
_LIVENESS_BASE = 1 << 32
_RUN = struct.Struct("<qqBHq")            # first, last, state, count, aux
_VAL = struct.Struct("<qq")                # seq, spso
KEY_PREFIX = SHARE_PREFIX
_NOT_DONE = re.compile(rb"[^\x02\x04\xff]")     # not Acknowledged, Archived, EMPTY
_EMPTIES = bytes([0xFF]) * 65536
_ACQUIRED_BYTES = bytes([1]) * 65536
# a persisted run: first, last, state, delivery count, aux
Run = tuple[int, int, int, int, int]


def share_key(group: str, topic: str, partition: int) -> bytes:
    """The ``info`` key of a share-partition's persisted state (Q-3)."""
    return KEY_PREFIX + okey(group, topic, partition)


def token_alive(live_fd: int, token: int) -> bool:
    """Is the Log with liveness ``token`` alive (P-3: its read lock on byte
    2**32 + token of pylog.lock)? Never ask it of the caller's own token:
    its own lock does not conflict with itself."""
    probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, _LIVENESS_BASE + token, 1, 0)
    try:
        got = fcntl.fcntl(live_fd, _F_OFD_GETLK, probe)
    except OSError:
        return True                 # cannot tell: keep the lock
    return _FLOCK.unpack(got)[0] != fcntl.F_UNLCK


def _align8(n: int) -> int:
    return (n + 7) & ~7


class ShareFile:
    """The mapped state of one share-partition (module docstring). Methods
    named ``*_locked`` must run inside :meth:`locked`."""

    def __init__(self, path: str, key: bytes, capacity: int, token: int, live_fd: int,
                 load: Callable[[], tuple[int, int, list[Run]]],
                 fresh: bool = False, lock_timeout_s: float = 10.0) -> None:
        if len(key) > _KEY_MAX:
            raise InvalidArgument("share group, topic and partition name a key longer "
                                  f"than {_KEY_MAX} bytes")
        self.path = path
        self.key = key
        # the topic incarnation (L-4) whose partition this state is of
        # (ShareFiles.get): a topic deleted and made again under its name
        # has the same key and path, and a new state
        self.topic_id: str | None = None
        self._token = token
        self._live_fd = live_fd
        # (fd and journal read when taken: close() makes fd -1)
        self._lock = ShareLock(path, lock_timeout_s, lambda: self.fd, self._taken)
        self.fd = open_regular(path, os.O_RDWR | os.O_CREAT, what="share state")
        try:
            self._open(capacity, load, fresh)
        except BaseException:
            os.close(self.fd)
            raise

    # -- open (Q-1) ------------------------------------------------------------------
    def _open(self, capacity: int, load: Callable[[], Any], fresh: bool) -> None:
        """Q-1: map the file, made from ``load()`` when it is new, of
        another boot, or (``fresh``: LMDB has no state for it) left over,
        and no other process uses it."""
        boot = boot_id() or b"\0" * 16
        for _ in range(50):
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                alone = False
            if alone:
                if fresh or not self._header_ok(boot):
                    self._reset(capacity, boot, load)
                fcntl.flock(self.fd, fcntl.LOCK_SH)
                break
            fcntl.flock(self.fd, fcntl.LOCK_SH)     # waits for an initializer
            if self._header_ok(boot):
                break
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            time.sleep(0.01)
        else:
            raise CorruptLogError("the share state's header is damaged while other "
                                  "processes use it; close every process of the log "
                                  "and open it again (the state comes back from LMDB)",
                                  self.path)
        self._map()

    def _header_ok(self, boot: bytes) -> bool:
        head = os.pread(self.fd, _HEAD.size, 0)
        if len(head) != _HEAD.size:
            return False
        magic, version, cap, fboot = _HEAD.unpack(head)
        if magic != _MAGIC or version != _VERSION or fboot != boot or cap <= 0:
            return False
        klen = int.from_bytes(os.pread(self.fd, 2, _KEY_AT), "little")
        return (os.pread(self.fd, klen, _KEY_AT + 2) == self.key
                and os.fstat(self.fd).st_size >= _layout(cap)[-1])

    def _reset(self, capacity: int, boot: bytes, load: Callable[[], Any]) -> None:
        """Q-1: a new file, or one of another boot: the state from LMDB
        (Q-3: delays end at their wall-clock deadline, an unfinished
        dead-letter copy is looked for and finished by the next holder).
        The ring holds every stored run: it is larger than ``capacity``
        when the state was written by a larger window (``max_in_flight``
        lowered since), as records past the ring would be delivered again."""
        seq, spso, runs = load()
        if runs:
            capacity = max(capacity, runs[-1][1] + 1 - spso)
        size = _layout(capacity)[-1]
        os.ftruncate(self.fd, 0)
        # blocks exist: a store never SIGBUSes
        allocate_or_full(self.fd, size, f"share state {self.path}")
        m = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._bind(m, capacity)
            self.states[:] = bytes([EMPTY]) * capacity
            h = self.head
            h[SPSO] = h[SPEO] = spso
            h[SEQ] = h[CKPT] = seq
            h[MIN_DEADLINE] = h[MIN_DELAY] = NEVER
            for first, last, state, count, aux in runs:
                for off in range(first, last + 1):
                    i = off % capacity
                    self.states[i] = state
                    self.counts[i] = count
                    self.deadlines[i] = aux
                    h[SPEO] = max(h[SPEO], off + 1)
                if state == DELAYED:
                    h[MIN_DELAY] = min(h[MIN_DELAY], aux)
                elif state == DEAD_LETTERING:
                    h[DLQ_PENDING] = 1
            # offsets of the window no run names are Available, never delivered
            for off in range(spso, h[SPEO]):
                if self.states[off % capacity] == EMPTY:
                    self.states[off % capacity] = AVAILABLE
            m[_KEY_AT:_KEY_AT + 2 + len(self.key)] = len(self.key).to_bytes(2, "little") \
                + self.key
            m[:_HEAD.size] = _HEAD.pack(_MAGIC, _VERSION, capacity, boot)   # last
        finally:
            self._release_views()
            try:
                m.close()
            except BufferError:
                # views of a _bind a Ctrl-C cut short (its frame kept by the
                # traceback): the map closes with them, and the interrupt,
                # not this, is what the caller must see
                pass

    def _map(self) -> None:
        cap = _HEAD.unpack(os.pread(self.fd, _HEAD.size, 0))[2]
        m = mmap.mmap(self.fd, _layout(cap)[-1], mmap.MAP_SHARED,
                      mmap.PROT_READ | mmap.PROT_WRITE)
        self._bind(m, cap)

    def _bind(self, m: mmap.mmap, cap: int) -> None:
        st, ct, ow, dl, jr, _ = _layout(cap)
        self.m = m
        self.capacity = cap
        mv = memoryview(m)
        self.head = mv[:HEADER_BYTES].cast("q")
        self.owners = mv[_OWNERS_AT:_OWNERS_AT + 8 * (MAX_OWNERS + 1)].cast("I")
        self.states = mv[st:st + cap]
        self.counts = mv[ct:ct + 2 * cap].cast("H")
        self.owner_of = mv[ow:ow + cap]
        self.deadlines = mv[dl:dl + 8 * cap].cast("q")
        self.journal = mv[jr:jr + 24 * cap].cast("q")
        self._st_at = st
        self._dl_at = dl

    def _release_views(self) -> None:
        for name in ("head", "owners", "states", "counts", "owner_of", "deadlines",
                     "journal"):
            v = self.__dict__.pop(name, None)
            if v is not None:
                v.release()

    def close(self) -> None:
        with self._lock.held(file=False):   # (not under a poll's feet)
            if self.fd < 0:
                return
            self._release_views()
            self.m.close()
            os.close(self.fd)
            self.fd = -1

    # -- the lock -----------------------------------------------------------------------
    def locked(self, wait: bool = True) -> Held:
        """A context manager holding the file's lock (Q-2) for its block:
        ``with f.locked(wait=False) as got:`` holds nothing when ``got`` is
        False (another thread or process holds it). Waiting for another
        thread of this process is bounded (MetadataBusyError naming the
        lock, pylog.sharelock). A batch a dead holder left in the journal
        is applied first."""
        return self._lock.held(wait)

    def _taken(self) -> None:
        if self.head[JOURNAL]:
            self._replay()          # a holder died (or was interrupted) mid-batch

    # -- entries ---------------------------------------------------------------------------
    def owner_slot_locked(self, member: int) -> int:
        """This Log's ``member``'s owner number (1..255), registered if new;
        slots of dead Logs are freed first (their records become Available)."""
        ow, free = self.owners, 0
        for n in range(1, MAX_OWNERS + 1):
            if ow[2 * n] == self._token and ow[2 * n + 1] == member:
                return n
            if ow[2 * n] == 0 and not free:
                free = n
        if not free:
            raise PylogError(f"share state {self.path}: more than {MAX_OWNERS} share "
                             "consumers hold records of this partition")
        ow[2 * free] = self._token
        ow[2 * free + 1] = member
        return free

    def free_owner_locked(self, slot: int) -> None:
        self.owners[2 * slot] = 0
        self.owners[2 * slot + 1] = 0

    def dead_owners_locked(self) -> list[int]:
        """Owner numbers whose Log is gone (Q-2)."""
        ow, dead = self.owners, []
        seen: dict[int, bool] = {}
        for n in range(1, MAX_OWNERS + 1):
            tok = ow[2 * n]
            if tok == 0 or tok == self._token:
                continue
            alive = seen.get(tok)
            if alive is None:
                alive = seen[tok] = token_alive(self._live_fd, tok)
            if not alive:
                dead.append(n)
        return dead

    def positions(self, state: int) -> list[int]:
        """Offsets of the window in ``state``, in offset order (C-speed find)."""
        h, cap, m, st = self.head, self.capacity, self.m, self._st_at
        spso, speo = h[SPSO], h[SPEO]
        out: list[int] = []
        if speo <= spso:
            return out
        b = bytes([state])
        a, z = spso % cap, speo % cap
        spans = [(a, z)] if a < z else [(a, cap), (0, z)]
        for lo, hi in spans:
            # offset of ring index r: spso + (r - a) in the first span,
            # spso + (cap - a) + r in the wrapped one
            base = spso - a if lo == a else spso + cap - a
            i = m.find(b, st + lo, st + hi)
            while i >= 0:
                out.append(base + i - st)
                i = m.find(b, i + 1, st + hi)
        return out

    def foreign_holders(self) -> bool:
        """Does an Acquired entry (may) belong to another Log than this one?
        Lock-free (a monitoring read: true when unsure)."""
        ow, mine = self.owners, self._token
        if not any(ow[2 * n] not in (0, mine) for n in range(1, MAX_OWNERS + 1)):
            return False
        return bool(self.positions(ACQUIRED))

    def count_in_flight(self) -> int:
        """Window entries that hold an in-flight slot: Available and Acquired
        (Delayed ones do not, by design)."""
        h, cap = self.head, self.capacity
        spso, speo = h[SPSO], h[SPEO]
        if speo <= spso:
            return 0
        a, z = spso % cap, speo % cap
        raw = bytes(self.states[a:z]) if a < z else \
            bytes(self.states[a:]) + bytes(self.states[:z])
        return raw.count(b"\x00") + raw.count(b"\x01")

    def advance_locked(self) -> None:
        """SPSO past the done prefix (Acknowledged / Archived), entries freed
        (found and freed a ring span at a time, in C)."""
        h, cap, st = self.head, self.capacity, self._st_at
        spso, speo = h[SPSO], h[SPEO]
        while spso < speo:
            a = spso % cap
            z = min(cap, a + speo - spso)
            # EMPTY inside the window: an advance whose holder died midway
            hit = _NOT_DONE.search(self.m, st + a, st + z)
            k = (hit.start() - st if hit else z) - a
            if k:
                self.states[a:a + k] = _EMPTIES[:k] if k <= len(_EMPTIES) else \
                    bytes([EMPTY]) * k
            spso += k
            if hit:
                break
        h[SPSO] = spso

    def bump(self) -> None:
        self.head[SEQ] += 1

    # -- runs of offsets, changed a ring span at a time ------------------------------
    def spans(self, first: int, n: int) -> list[tuple[int, int]]:
        """The ring index ranges [i, j) of offsets first .. first + n - 1."""
        cap = self.capacity
        a = first % cap
        return [(a, a + n)] if a + n <= cap else [(a, cap), (0, a + n - cap)]

    def acquire_new_locked(self, first: int, n: int, owner: int, deadline: int) -> None:
        """Offsets first .. first + n - 1 (from SPEO on, outside the
        window) Acquired for the first time by ``owner``; the caller moves
        SPEO past them after (Q-2: entries outside the window are ignored,
        so a holder dying midway leaves nothing half made)."""
        for i, j in self.spans(first, n):
            k = j - i
            self.deadlines[i:j] = array("q", [deadline]) * k
            self.owner_of[i:j] = bytes([owner]) * k
            self.counts[i:j] = array("H", [1]) * k
            self.states[i:j] = _ACQUIRED_BYTES[:k] if k <= len(_ACQUIRED_BYTES) else \
                bytes([ACQUIRED]) * k

    def accept_run_locked(self, first: int, n: int, owner: int) -> bool:
        """Accept offsets first .. first + n - 1 of the window, all Acquired
        by ``owner``, as one journaled batch (the same journal entries and
        outcome as :meth:`write_batch_locked`, the entries changed a ring
        span at a time). False, changing nothing, when one is not so held."""
        h = self.head
        if not (h[SPSO] <= first and first + n <= h[SPEO]):
            return False
        spans = self.spans(first, n)
        mine = bytes([owner])
        counts = b""
        for i, j in spans:
            if self.states[i:j] != bytes([ACQUIRED]) * (j - i) or \
                    self.owner_of[i:j] != mine * (j - i):
                return False
            counts += self.counts[i:j].tobytes()
        self.journal[:3 * n] = _accept_journal(first, n, counts)
        h[JOURNAL] = n
        for i, j in spans:
            self.m[self._dl_at + 8 * i:self._dl_at + 8 * j] = bytes(8 * (j - i))
            self.states[i:j] = bytes([ACKNOWLEDGED]) * (j - i)
        h[JOURNAL] = 0
        self.advance_locked()
        h[SEQ] += 1
        return True

    # -- journaled batches (Q-2) --------------------------------------------------------
    def write_batch_locked(self, changes: list[tuple[int, int, int, int]],
                           dead_lettering: bool = False) -> None:
        """Apply (offset, state, count, deadline) changes all or nothing: the
        journal first, then the entries, then the journal cleared.
        ``dead_lettering``: some change makes an entry Dead-lettering."""
        if not changes:
            return
        flat = array("q", [x for off, state, count, deadline in changes
                           for x in (off, state | (count << 8), deadline)])
        if dead_lettering:
            # raised before any entry can be in that state, lowered
            # only by a holder that found none left
            self.head[DLQ_PENDING] = 1
        self.journal[:len(flat)] = flat            # (one copy, not 3 stores each)
        self.head[JOURNAL] = len(changes)
        self._replay(flat)

    def _replay(self, flat: array | None = None) -> None:
        """Apply the journal (``flat``: its entries, when the caller has them)."""
        h, cap = self.head, self.capacity
        if flat is None:
            flat = array("q", self.journal[:3 * h[JOURNAL]])
        states, counts, deadlines = self.states, self.counts, self.deadlines
        spso, speo = h[SPSO], h[SPEO]
        it = iter(flat)
        for off, sc, deadline in zip(it, it, it):
            if not spso <= off < speo:
                continue
            i = off % cap
            state = sc & 0xFF
            if state == ARCHIVED and states[i] != ARCHIVED:
                h[ARCHIVED_N] += 1      # (a replay cut short may miss one)
            states[i] = state
            counts[i] = sc >> 8
            deadlines[i] = deadline
            if state == DELAYED:
                if deadline < h[MIN_DELAY]:
                    h[MIN_DELAY] = deadline
            elif state == ACQUIRED:
                if deadline < h[MIN_DEADLINE]:
                    h[MIN_DEADLINE] = deadline
        h[JOURNAL] = 0
        self.advance_locked()
        h[SEQ] += 1

    # -- persisted shape (Q-3) -----------------------------------------------------------
    def runs_locked(self) -> tuple[int, int, list[Run]]:
        """(seq, SPSO, runs (first, last, state, count, aux)): Acquired as
        Available; Delayed with its deadline and Dead-lettering with its
        mark as ``aux``; trailing never-delivered Available records are
        implicit (Q-3)."""
        h, cap = self.head, self.capacity
        runs: list[Run] = []
        for off in range(h[SPSO], h[SPEO]):
            i = off % cap
            state = self.states[i]
            aux = 0
            if state == ACQUIRED:
                state = AVAILABLE
            elif state in (DELAYED, DEAD_LETTERING):
                aux = self.deadlines[i]
            elif state == EMPTY:        # left by a holder that died (advance_locked)
                state = ACKNOWLEDGED
            count = self.counts[i]
            if runs and runs[-1][1] == off - 1 and runs[-1][2] == state \
                    and runs[-1][3] == count and runs[-1][4] == aux:
                runs[-1] = (runs[-1][0], off, state, count, aux)
            else:
                runs.append((off, off, state, count, aux))
        while runs and runs[-1][2] == AVAILABLE and runs[-1][3] == 0:
            runs.pop()
        return h[SEQ], h[SPSO], runs


def _accept_journal(first: int, n: int, counts: bytes) -> memoryview:
    """Q-2 journal entries (offset, ACKNOWLEDGED | count << 8, 0) accepting
    offsets first .. first + n - 1, ``counts`` their uint16 delivery counts
    (native order), as int64s. Little-endian: byte slices with a stride (C
    loops, a few per batch); elsewhere a generator."""
    if sys.byteorder != "little":
        cs = array("H", counts)
        return memoryview(array("q", chain.from_iterable(zip(
            range(first, first + n), map(ACKNOWLEDGED.__add__, map((256).__mul__, cs)),
            repeat(0)))))
    buf = bytearray(24 * n)                 # deadlines stay 0
    offsets = array("q", range(first, first + n)).tobytes()
    for b in range(8):
        buf[b::24] = offsets[b::8]
    buf[8::24] = bytes([ACKNOWLEDGED]) * n
    buf[9::24] = counts[0::2]               # count << 8: its bytes one further
    buf[10::24] = counts[1::2]
    return memoryview(buf).cast("q")


def _layout(cap: int) -> tuple[int, int, int, int, int, int]:
    """Byte offsets of states, counts, owners, deadlines, journal; file size."""
    st = HEADER_BYTES
    ct = _align8(st + cap)
    ow = _align8(ct + 2 * cap)
    dl = _align8(ow + cap)
    jr = dl + 8 * cap
    return st, ct, ow, dl, jr, jr + 24 * cap


def encode_state(seq: int, spso: int, runs: list[Run]) -> bytes:
    """Q-3: the LMDB value of a share-partition's state."""
    return _VAL.pack(seq, spso) + b"".join(_RUN.pack(*r) for r in runs)


def decode_state(raw: bytes, where: str) -> tuple[int, int, list[Run]]:
    if len(raw) < _VAL.size or (len(raw) - _VAL.size) % _RUN.size:
        raise CorruptLogError(f"share state {where} is damaged in LMDB")
    seq, spso = _VAL.unpack_from(raw, 0)
    runs = [_RUN.unpack_from(raw, at) for at in range(_VAL.size, len(raw), _RUN.size)]
    below = spso        # runs are in offset order (the ring is sized from the last)
    for first, last, state, _count, _aux in runs:
        if last < first or first < below or state not in (AVAILABLE, ACKNOWLEDGED, ARCHIVED,
                                                          DELAYED, DEAD_LETTERING):
            raise CorruptLogError(f"share state {where} has a damaged run in LMDB")
        below = last + 1
    return seq, spso, runs


def file_name(key: bytes) -> str:
    return hashlib.blake2b(key, digest_size=16).hexdigest() + ".share"


def snapshot(path: str, key: bytes, log_start: int | None = None) -> dict[str, Any] | None:
    """A lock-free read of a share file for monitoring (``pylog queues``):
    counts per state, owners and deadlines; None when the file is missing
    or not of this boot (Q-1: LMDB has the state then). Records of the
    window below ``log_start`` not yet done count as lost, as the next
    acquisition will count them (Q-4), not in their state. A snapshot
    taken while a process changes the file may mix old and new entries."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        if exc.errno in FD_EXHAUSTED:
            # not a missing file: the view would show LMDB's copy as the
            # state, and alter_share_group would find no live consumer
            raise too_many_open_files(exc, f"read the share state {path}") from None
        return None
    if len(raw) < HEADER_BYTES:
        return None
    magic, version, cap, fboot = _HEAD.unpack_from(raw, 0)
    klen = int.from_bytes(raw[_KEY_AT:_KEY_AT + 2], "little")
    if magic != _MAGIC or version != _VERSION or cap <= 0 or \
            fboot != (boot_id() or b"\0" * 16) or raw[_KEY_AT + 2:_KEY_AT + 2 + klen] != key \
            or len(raw) < _layout(cap)[-1]:
        return None
    st, ct, ow, dl, _jr, _ = _layout(cap)
    mv = memoryview(raw)
    head = mv[:HEADER_BYTES].cast("q")
    owners = mv[_OWNERS_AT:_OWNERS_AT + 8 * (MAX_OWNERS + 1)].cast("I")
    counts = mv[ct:ct + 2 * cap].cast("H")
    deadlines = mv[dl:dl + 8 * cap].cast("q")
    tokens = sorted({owners[2 * n] for n in range(1, MAX_OWNERS + 1) if owners[2 * n]})
    by_state = {AVAILABLE: 0, ACQUIRED: 0, ACKNOWLEDGED: 0, ARCHIVED: 0, DELAYED: 0,
                DEAD_LETTERING: 0}
    held: list[dict[str, int]] = []
    gone = 0
    for off in range(head[SPSO], head[SPEO]):
        i = off % cap
        s = raw[st + i]
        if log_start is not None and off < log_start:
            gone += s not in (ACKNOWLEDGED, ARCHIVED, EMPTY)      # (as trim_to_log)
            continue
        if s in by_state:
            by_state[s] += 1
        if s == ACQUIRED:
            o = raw[ow + i]
            held.append({"offset": off, "delivery_count": counts[i],
                         "owner_token": owners[2 * o], "lock_until_ms": deadlines[i]})
    first = None
    if head[SPSO] < head[SPEO]:
        i = head[SPSO] % cap
        first = {"offset": head[SPSO], "state": raw[st + i], "until_ms": deadlines[i]}
    return {"spso": head[SPSO], "speo": head[SPEO], "capacity": cap, "first": first,
            "available": by_state[AVAILABLE],
            "acquired": by_state[ACQUIRED], "delayed": by_state[DELAYED],
            "acknowledged_in_window": by_state[ACKNOWLEDGED],
            "dead_lettering": by_state[DEAD_LETTERING],
            "archived_total": head[ARCHIVED_N], "lost_to_retention": head[LOST] + gone,
            "held": held, "owner_tokens": tokens}
