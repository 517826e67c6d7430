"""Committed offsets: the commit table in front of LMDB (FORMAT.rst M-6, C-*).

The metadata store's part that owns committed offsets. A commit of a key
that has a slot in the commit table (:mod:`pylog.cursors`) is a store into
the shared map: no LMDB transaction, no fsync. A key's first commit (or one
the table refuses: another member owns the slot, the slot was cleared)
takes an LMDB write transaction that stores the offset, gives the key a
slot (C-3) and sets the slot's fence from the group's owners (C-4).
Checkpoints copy changed slots into LMDB (C-5); ``sync="always"`` commits
wait for one that started after they were stored, shared by concurrent
commits (group commit, :mod:`pylog.commitgroup`).

A commit from outside the group (``fence`` None: a consumer that
assign()ed its partitions) is refused, as Kafka's coordinator refuses a
non-member's commit, for a partition a live member of the group owns
(CommitFailedError); others are stored. A slot of a partition nobody owns
carries the fence :data:`NO_OWNER`, which is what such a commit passes to
the table, so the table stores it only while no member owns the
partition; a fenced slot sends it to the transaction, where the group
document decides, under the metadata writer lock that every change of
owners takes: however the two race, such a commit never lands in a
partition once a live member owns it.

Without a table (no boot id on this system, or a read-only Log of a log
whose table is not of this boot) every commit is an LMDB transaction, as
before the table existed.

Thread safety: thread-safe. Durability: a stored commit survives a crash
of its process at once; it is durable (survives a power loss) after the
next checkpoint, which ``sync="always"`` waits for and the other modes
run every ``sync_interval_ms``, at ``Log.flush()`` and at close.
"""

from __future__ import annotations

import functools
import struct
import time
from typing import Any, Callable, Iterable, Mapping

from . import cursors as cur
from . import groupstate as gs
from .commitgroup import CheckpointGroup
from .errors import CorruptLogError
from .liveness import process_alive

_OFFSET = struct.Struct(">qq")
_P = struct.Struct(">I")
_SLOT = struct.Struct(">I")
SLOT_PREFIX = b"slot\0"      # C-3: info keys of slot numbers
NEXT_SLOT = b"slots"         # C-3: info key of the next slot number
FREE_PREFIX = b"freeslot\0"  # C-6: info keys of freed slots, reused first
# C-4: the fence of a slot whose partition no member owns. Not 0, which the
# table takes as "store without looking at the fence": a non-member's
# commit passes this one, so a slot a member fenced refuses it.
NO_OWNER = cur.key_hash(b"\0no owner")


def owner_fence(owner: str | None) -> int:
    """The fence of a slot whose partition ``owner`` owns (None: nobody)."""
    return NO_OWNER if owner is None else cur.member_fence(owner)


def okey(group: str, topic: str, partition: int) -> bytes:
    """The M-6 key of a committed offset."""
    return group.encode() + b"\0" + topic.encode() + b"\0" + _P.pack(partition)


def split_okey(k: bytes) -> tuple[str, str, int] | None:
    """(group, topic, partition) of an M-6 key, or None if it is not one."""
    head, p = k[:-4], k[-4:]
    if len(p) != 4 or head.count(b"\0") < 2 or not head.endswith(b"\0"):
        return None
    group, _, topic = head[:-1].partition(b"\0")
    return group.decode(), topic.decode(), _P.unpack(p)[0]


class Commits:
    """Mixin of :class:`pylog.metadata.Metadata`: committed offsets. Uses
    its ``_txn``, ``_offsets``, ``_info``, ``_groups``, ``path``, ``_sync``."""

    cursors: cur.CursorTable | None
    _txn: Callable[..., Any]
    _group_in: Callable[[Any, str], Any]
    _offsets: Any
    _info: Any
    path: str
    sync_always: bool

    def _init_commits(self, lock_identity: tuple[int, int] | None) -> None:
        self.cursors = cur.open_table(self.path, lock_identity)
        # group commit of sync="always" commits (wait_checkpointed)
        self._group = CheckpointGroup(self.checkpoint_commits)
        self._by_slot: dict[int, bytes] = {}     # slot -> okey, for checkpoints
        # pure functions of their keys, cached for the per-record commit loop
        self._fences: dict[str | None, int] = {}
        self._okeys: dict[tuple[str, str, int], bytes] = {}

    # -- storing -----------------------------------------------------------------
    def commit(self, group: str, offsets: dict, *, fence: str | None = None,
               fence_check: Callable[[Any], None] | None = None,
               sync_records: Callable[[], None] | None = None) -> None:
        """Store committed offsets {(topic, partition): offset}.

        Unfenced (``fence`` None: not a member, see the module docstring:
        CommitFailedError for a partition a live member owns) or fenced by
        ``fence``, the committing member's id: then a slot another member
        owns refuses the store and the commit takes the transaction, where
        ``fence_check(state)`` (which raises CommitFailedError) decides.
        ``sync_records()`` runs before a transaction stores offsets in LMDB
        (M-10: the checkpoints do that for the table's). Atomic per partition (C-4). Durable per
        the module docstring."""
        now = int(time.time() * 1000)
        fv = self._fences.get(fence)
        if fv is None:
            fv = self._fences[fence] = owner_fence(fence)
        table = self.cursors
        slow: dict = {}
        stored: list[tuple[int, int, int]] = []
        if table is not None:
            by = table.by_okey
            keys = self._okeys
            for tp, offset in offsets.items():
                k = keys.get((group, tp[0], tp[1]))
                if k is None:
                    k = keys[(group, tp[0], tp[1])] = okey(group, tp[0], tp[1])
                ent = by.get(k)
                if ent is None:
                    slow[tp] = offset
                    continue
                seq = table.commit(ent[0], ent[1], fv, offset, now)
                if seq < 0:
                    slow[tp] = offset
                else:
                    stored.append((ent[0], ent[1], seq))
        else:
            slow = dict(offsets)
        if slow:
            if sync_records is not None:
                sync_records()
            self._commit_slow(group, slow, now, fence, fence_check)
        if stored and self.sync_always:
            self.wait_checkpointed(stored)

    def _commit_slow(self, group: str, offsets: dict, now: int, fence: str | None,
                     fence_check: Callable[[Any], None] | None) -> None:
        after: list[Callable[[], None]] = []
        with self._txn("commit", write=True, after=after) as txn:
            state = self._group_in(txn, group)
            if fence_check is not None:
                fence_check(state)
            elif fence is None:
                gs.fence_outsider(state, group, offsets, now, process_alive)
            self.store_offsets(txn, group, offsets, now, state.owners, after)

    def store_offsets(self, txn: Any, group: str, offsets: dict, now: int,
                      owners: Mapping[Any, str], after: list) -> None:
        """In a write transaction: store ``offsets`` in LMDB and, once it
        committed (``after``, still under the writer lock), in their slots,
        with fences from ``owners`` ({TopicPartition: member id})."""
        for (topic, partition), offset in offsets.items():
            k = okey(group, topic, partition)
            txn.put(k, _OFFSET.pack(offset, now), db=self._offsets)
            if self.cursors is None:
                continue
            slot = self._slot_in(txn, k, create=True)
            assert slot is not None
            fv = owner_fence(owners.get((topic, partition)))
            after.append(self._slot_store(k, slot, fv, offset, now))

    def sync_fences(self, txn: Any, group: str, owners: Mapping[Any, str],
                    before: Mapping[Any, str]) -> None:
        """C-4, in a group's write transaction before it commits: slots of
        partitions whose owner changed take the new owner's fence (a fence
        ahead of a transaction that then fails only sends that member's
        next commit through a transaction, which sets it right)."""
        table = self.cursors
        if table is None or owners == before:
            return
        for tp in set(owners) | set(before):
            if owners.get(tp) == before.get(tp):
                continue
            k = okey(group, tp.topic, tp.partition)
            slot = self._slot_in(txn, k, create=False)
            if slot is not None:
                table.set(slot, cur.key_hash(k), cur.CLAIM | cur.FENCE,
                          owner_fence(owners.get(tp)), *self._lmdb_value(txn, k))

    def clear_offsets(self, txn: Any, keys: Iterable[bytes], after: list) -> None:
        """In a write transaction: delete the M-6 keys and their slots (C-3)."""
        for k in keys:
            txn.delete(k, db=self._offsets)
            if self.cursors is None:
                continue
            slot = self._slot_in(txn, k, create=False)
            if slot is not None:
                txn.delete(SLOT_PREFIX + k, db=self._info)
                # C-6: free for the next new key; the clear below runs
                # before another transaction can give it out
                txn.put(FREE_PREFIX + _SLOT.pack(slot), b"", db=self._info)
                self.cursors.by_okey.pop(k, None)
                after.append(_slot_clear(self.cursors, slot))

    # -- slots -------------------------------------------------------------------------
    def _slot_store(self, k: bytes, slot: int, fence: int, offset: int,
                    ms: int) -> Callable[[], None]:
        """What stores a committed transaction's offset in its slot."""
        table = self.cursors
        assert table is not None
        key = cur.key_hash(k)

        def run() -> None:
            if table.set(slot, key, cur.CLAIM | cur.FENCE, fence, offset, ms) == 0:
                table.set(slot, key, cur.STORE, 0, offset, ms)
            table.by_okey[k] = (slot, key)
            self._by_slot[slot] = k
        return run

    def _slot_in(self, txn: Any, k: bytes, *, create: bool) -> int | None:
        """The slot of M-6 key ``k`` (C-3), given one when ``create``; the
        table is mapped far enough to reach it."""
        table = self.cursors
        assert table is not None
        raw = txn.get(SLOT_PREFIX + k, db=self._info)
        if raw is None:
            if not create:
                return None
            slot = self._free_slot(txn)
            if slot is None:
                nxt = txn.get(NEXT_SLOT, db=self._info)
                slot = 0 if nxt is None else _SLOT.unpack(nxt)[0]
                txn.put(NEXT_SLOT, _SLOT.pack(slot + 1), db=self._info)
            txn.put(SLOT_PREFIX + k, _SLOT.pack(slot), db=self._info)
        elif len(raw) != _SLOT.size:
            raise CorruptLogError(f"commit table slot number of {k!r} is damaged",
                                  self.path)
        else:
            slot = _SLOT.unpack(raw)[0]
        table.ensure(slot)
        return slot

    def _free_slot(self, txn: Any) -> int | None:
        """C-6: the lowest slot a deleted key freed, taken off the free
        list; None when there is none (the table grows then, C-3)."""
        c = txn.cursor(db=self._info)
        if not c.set_range(FREE_PREFIX):
            return None
        name = c.key()
        if not name.startswith(FREE_PREFIX):
            return None
        c.delete()
        raw = name[len(FREE_PREFIX):]
        if len(raw) != _SLOT.size:
            raise CorruptLogError(f"commit table free slot entry {name!r} is damaged",
                                  self.path)
        return int(_SLOT.unpack(raw)[0])

    def _lmdb_value(self, txn: Any, k: bytes) -> tuple[int, int]:
        raw = txn.get(k, db=self._offsets)
        if raw is None:
            return -1, 0
        if len(raw) != _OFFSET.size:
            raise CorruptLogError(f"committed offset {k!r} is damaged", self.path)
        off, ms = _OFFSET.unpack(raw)
        return off, ms

    def _cached_slot(self, k: bytes) -> tuple[int, int] | None:
        """(slot, hash) of ``k`` from the cache, or looked up in LMDB (C-3)."""
        table = self.cursors
        assert table is not None
        ent = table.by_okey.get(k)
        if ent is None:
            with self._txn("look up a commit slot") as txn:
                slot = self._slot_in(txn, k, create=False)
            if slot is None:
                return None
            ent = table.by_okey[k] = (slot, cur.key_hash(k))
            self._by_slot[slot] = k
        return ent

    # -- reading -------------------------------------------------------------------------
    def committed(self, group: str, topic: str, partition: int) -> int | None:
        k = okey(group, topic, partition)
        if self.cursors is not None:
            found = self._read_slot(k)
            if found is not None:
                return None if found < 0 else found
        with self._txn("committed") as txn:
            off, _ = self._lmdb_value(txn, k)
        return None if off < 0 else off

    def _read_slot(self, k: bytes) -> int | None:
        """The slot's offset (-1: none), or None when LMDB has the truth:
        no slot, or one not claimed since the boot (C-1: no commit of this
        boot went through it). A read never claims a slot: that would take
        LMDB's writer lock, and a reader must not wait behind writers; the
        key's next commit claims it (its first commit of the boot takes a
        transaction anyway)."""
        table = self.cursors
        assert table is not None
        ent = self._cached_slot(k)
        if ent is None:
            return None
        got = table.read(*ent)
        if got is not None:
            return got[0]
        table.by_okey.pop(k, None)      # cleared, reused or unclaimed: ask again next time
        return None

    def group_offsets(self, group: str) -> dict:
        """{(topic, partition): committed offset} of ``group``."""
        prefix = group.encode() + b"\0"
        out: dict = {}
        keys: list[bytes] = []
        with self._txn("group offsets") as txn:
            c = txn.cursor(db=self._offsets)
            if c.set_range(prefix):
                for k, v in c:
                    if not k.startswith(prefix):
                        break
                    parts = split_okey(k)
                    if parts is None or len(v) != _OFFSET.size:
                        raise CorruptLogError(
                            f"committed offset key {k!r} is damaged", self.path)
                    out[(parts[1], parts[2])] = _OFFSET.unpack(v)[0]
                    keys.append(k)
        if self.cursors is not None:
            for k in keys:
                found = self._read_slot(k)
                parts = split_okey(k)
                assert parts is not None
                if found is not None:
                    if found < 0:
                        out.pop((parts[1], parts[2]), None)
                    else:
                        out[(parts[1], parts[2])] = found
        return out

    def newest_commits(self, group: str | None = None) -> dict[str, int]:
        """Newest commit time (ms) of every group's offsets (M-6, and the
        commit table's newer ones), or of ``group``'s only; groups whose
        id is not UTF-8 are left out (nothing could name them)."""
        out: dict[str, int] = {}
        prefix = b"" if group is None else group.encode() + b"\0"

        def seen(k: bytes, ms: int) -> None:
            try:
                name = k.split(b"\0", 1)[0].decode()
            except UnicodeDecodeError:
                return
            if ms > out.get(name, -1):
                out[name] = ms
        table = self.cursors
        with self._txn("read commit times") as txn:
            c = txn.cursor(db=self._offsets)
            if c.set_range(prefix):
                for k, v in c:
                    if not k.startswith(prefix):
                        break
                    if len(v) == _OFFSET.size:     # damaged: describe_group says so
                        seen(k, _OFFSET.unpack(v)[1])
            slots = []
            c = txn.cursor(db=self._info)
            if table is not None and c.set_range(SLOT_PREFIX + prefix):
                for name, raw in c:
                    if not name.startswith(SLOT_PREFIX + prefix):
                        break
                    if len(raw) == _SLOT.size:
                        slots.append((name[len(SLOT_PREFIX):], _SLOT.unpack(raw)[0]))
        for k, slot in slots:
            assert table is not None
            if slot < table.capacity():
                got = table.read(slot, cur.key_hash(k))
                if got is not None and got[2] > got[3]:   # newer than LMDB's
                    seen(k, got[1])
        return out

    def delete_group_offsets(self, group: str, keys) -> None:
        after: list[Callable[[], None]] = []
        with self._txn("delete group offsets", write=True, after=after) as txn:
            self.clear_offsets(txn, [okey(group, t, p) for t, p in keys], after)

    # -- checkpoints ---------------------------------------------------------------
    def checkpoint_commits(
            self, before_store: Callable[[dict[tuple[str, int], int]],
                                         set[tuple[str, int]]] | None = None) -> int:
        """C-5: copy the slots changed since their last checkpoint into LMDB,
        in one transaction, after ``before_store({(topic, partition):
        highest offset committed})`` made the records they point past
        durable (M-10); the partitions in the set it returns were not, and
        their slots stay changed for a later checkpoint. Returns how many
        were copied. The values copied are the ones read before
        ``before_store``; a slot changed since stays changed for the next."""
        table = self.cursors
        if table is None or table.readonly:
            return 0
        table.check()           # C-7: a header overwritten while open
        seen = table.dirty()
        if not seen:
            return 0
        keys = {}
        for slot, key, *_ in seen:
            k = self._by_slot.get(slot)
            keys[slot] = k if k is not None and _key_hash(k) == key else None
        if None in keys.values():
            with self._txn("read commit slot keys") as txn:
                keys = {slot: self._okey_of(txn, slot, key) for slot, key, *_ in seen}
        tp_of: dict[int, tuple[str, int]] = {}
        waiting: set[tuple[str, int]] = set()
        if before_store is not None:
            for slot, _key, offset, *_ in seen:
                k = keys[slot]
                parts = split_okey(k) if k is not None else None
                if parts is not None:
                    tp_of[slot] = (parts[1], parts[2])
            tps: dict[tuple[str, int], int] = {}
            for slot, _key, offset, *_ in seen:
                tp = tp_of.get(slot)
                if tp is not None and offset > tps.get(tp, -1):
                    tps[tp] = offset
            waiting = before_store(tps)
        done: list[tuple[int, int]] = []
        with self._txn("checkpoint commits", write=True) as txn:
            for slot, key, offset, ms, seq in seen:
                # (inside LMDB's write transaction: never wait for a writer)
                now = table.read(slot, key, skip_busy=True)
                if now is None or now[3] >= seq:
                    continue            # cleared, checkpointed since, or busy
                k = keys[slot]
                if k is None or (waiting and tp_of.get(slot) in waiting):
                    continue            # (M-10: its records are not durable yet)
                txn.put(k, _OFFSET.pack(offset, ms), db=self._offsets)
                done.append((slot, seq))
        for slot, seq in done:
            table.mark(slot, seq)
        return len(done)

    def _okey_of(self, txn: Any, slot: int, key: int) -> bytes | None:
        """The M-6 key whose slot is ``slot`` (C-3, reverse), checked
        against the slot's hash; None if no key has it any more."""
        k = self._by_slot.get(slot)
        if k is not None and _key_hash(k) == key:
            return k
        c = txn.cursor(db=self._info)
        if c.set_range(SLOT_PREFIX):
            for name, raw in c:
                if not name.startswith(SLOT_PREFIX):
                    break
                if len(raw) == _SLOT.size:
                    self._by_slot[_SLOT.unpack(raw)[0]] = name[len(SLOT_PREFIX):]
        k = self._by_slot.get(slot)
        if k is not None and cur.key_hash(k) == key:
            return k
        return None

    def wait_checkpointed(self, stored: list[tuple[int, int, int]]) -> None:
        """Return once every (slot, key hash, seq) reached LMDB durably, by
        a checkpoint shared with concurrent commits (pylog.commitgroup)."""
        table = self.cursors
        assert table is not None
        self._group.wait(lambda: all(_checkpointed(table, *ent) for ent in stored))

    def close_commits(self) -> None:
        if self.cursors is not None:
            self.cursors.close()
            self.cursors = None


@functools.lru_cache(maxsize=1 << 14)
def _key_hash(k: bytes) -> int:
    """cursors.key_hash, remembered for the keys every checkpoint checks."""
    return cur.key_hash(k)


def _checkpointed(table: cur.CursorTable, slot: int, key: int, seq: int) -> bool:
    got = table.read(slot, key)
    return got is None or got[3] >= seq




def _slot_clear(table: cur.CursorTable, slot: int) -> Callable[[], None]:
    def run() -> None:
        table.set(slot, 0, cur.CLEAR)
    return run

