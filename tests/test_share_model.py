"""The share-partition state machine (Q-2) against a model, with a fake
clock: acquisitions, accept / release (delayed) / reject / renew, lock
expiry and owners that die. No record is ever acquired while another live
owner holds its unexpired lock; delivery counts and archiving follow
Kafka's rules."""

import os

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pylog
from pylog import shareops as ops
from pylog import sharestate as ss

END = 24
RING = 16
LOCK = 100
LIMIT = 3
DEAD_TOKEN = 0x7FFFFFF0      # no Log holds its liveness lock


class ShareModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="share-model-")
        self.log = pylog.open(self.dir + "/log", sync="never")
        # a ring shorter than END: offsets wrap around it
        self.f = self.log.share_files().get("g", "t", 0, RING, lambda: 0)
        self.now = 1_000_000
        self.owners = {}             # consumer number -> owner slot (live ones)
        self.next_consumer = 0
        # model, per offset: holder, deadline, count, state
        self.holder = {}
        self.deadline = {}
        self.count = {o: 0 for o in range(END)}
        self.done = set()
        self.delayed = {}

    def teardown(self):
        self.log.close()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    # archived records go nowhere here (dead-letter copies: test_share_dlq)
    TARGET = ops.Target(pylog.TopicPartition("t", 0), None, None)

    def _settle(self):
        """The model's lazy transitions at ``now``: expired or dead holders."""
        for off in list(self.holder):
            if self.holder[off] not in self.owners.values() or self.deadline[off] <= self.now:
                del self.holder[off]
                if self.count[off] >= LIMIT:
                    self.done.add(off)

    @rule()
    def new_consumer(self):
        if len(self.owners) >= 4:
            return
        with self.f.locked():
            slot = self.f.owner_slot_locked(self.next_consumer + 1)
        self.owners[self.next_consumer] = slot
        self.next_consumer += 1

    @precondition(lambda self: self.owners)
    @rule(data=st.data(), n=st.integers(1, 6))
    def acquire(self, data, n):
        k = data.draw(st.sampled_from(sorted(self.owners)))
        slot = self.owners[k]
        with self.f.locked():
            got, _lost = ops.acquire(self.f, lambda: slot, self.now, LOCK, n, 1000, LIMIT,
                                     0, END, self.TARGET)
        self._settle()
        for off, count in got:
            assert off not in self.holder, f"{off} acquired while held"
            assert off not in self.done, f"{off} acquired after it was done"
            assert self.delayed.get(off, 0) <= self.now, f"{off} before its delay"
            assert count == self.count[off] + 1, (count, self.count[off])
            self.count[off] = count
            self.holder[off] = slot
            self.deadline[off] = self.now + LOCK
            self.delayed.pop(off, None)
        assert len(got) <= n

    @precondition(lambda self: self.holder)
    @rule(data=st.data(), kind=st.sampled_from(ops.ACK_TYPES), delay=st.integers(0, 300))
    def acknowledge(self, data, kind, delay):
        off = data.draw(st.sampled_from(sorted(self.holder)))
        slot = self.holder[off]
        if slot not in self.owners.values():
            return
        with self.f.locked():
            bad = ops.apply_acks(self.f, slot, [(off, kind, delay if kind == ops.RELEASE
                                                 else 0)],
                                 self.now, LOCK, LIMIT, self.TARGET)
        assert bad == []            # never taken by another: the model holds it
        if kind == ops.RENEW:
            self.deadline[off] = self.now + LOCK
            return
        del self.holder[off]
        if kind in (ops.ACCEPT, ops.REJECT) or self.count[off] >= LIMIT:
            self.done.add(off)
        elif delay:
            self.delayed[off] = self.now + delay

    @precondition(lambda self: self.holder)
    @rule(data=st.data(), n=st.integers(1, 6))
    def accept_run(self, data, n):
        """Accepts of a contiguous run in one batch (applied a ring span at a
        time): all of them when the owner holds every one, else none."""
        first = data.draw(st.sampled_from(sorted(self.holder)))
        slot = self.holder[first]
        if slot not in self.owners.values():
            return
        run = range(first, first + n)
        before = bytes(self.f.states)
        with self.f.locked():
            bad = ops.apply_acks(self.f, slot, [(o, ops.ACCEPT, 0) for o in run],
                                 self.now, LOCK, LIMIT, self.TARGET, accepts_only=True)
        if all(self.holder.get(o) == slot for o in run):
            assert bad == []
            for o in run:
                del self.holder[o]
                self.done.add(o)
        else:
            assert bad, "accepted records the owner does not hold"
            assert bytes(self.f.states) == before         # all or nothing

    @rule(dt=st.integers(1, 150))
    def tick(self, dt):
        self.now += dt

    @precondition(lambda self: self.owners)
    @rule(data=st.data())
    def die(self, data):
        k = data.draw(st.sampled_from(sorted(self.owners)))
        slot = self.owners.pop(k)
        self.f.owners[2 * slot] = DEAD_TOKEN      # its Log's liveness lock is gone

    @invariant()
    def spso_below_every_open_record(self):
        spso = self.f.head[ss.SPSO]
        for off in range(spso):
            assert off in self.done or self.count[off] >= LIMIT


EXAMPLES = int(os.environ.get("SHARE_MODEL_EXAMPLES", "60"))     # more: a longer hunt
ShareModel.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=40,
                                        deadline=None)
TestShareModel = ShareModel.TestCase
