"""Learning which hosts of a registration share a rate bucket (`BucketMap`, one per
registration).

Every host starts in a group of its own. Each answer of host A that carries
`X-Rate-Limit-Remaining` (a throttled one counts as remaining 0: the bucket was full) tells how
many reservations A's bucket holds besides A's own other requests in flight:
y = (mark − remaining) ÷ reservation − (A's requests − 1), the mark being the highest remaining
seen. If A shares its bucket with another host B, y is B's requests in flight, x (plus the cost
charged, small until the bucket fills); if not, y is that cost alone, about 0. So for every
other host B with at least `min_load` requests in flight, the answer votes "shared" when
y ≥ x − `tolerance` (A's remaining moves with B's load; A is throttled while B's load fills the
bucket) and "separate" when y ≤ `tolerance`; an answer with y below −`tolerance` was counted late
by a busy event loop and is ignored. Votes fade (`GroupingPolicy.keep` per vote, `half_life` in
seconds). A pair is linked when the votes of both directions say shared (at least `min_votes`,
and `ratio` times the others), unlinked when either direction's say separate the same way, or
when no vote came for `evidence_horizon` seconds (the evidence went away). Groups are the
connected components of linked pairs; a new group starts from the most careful state of the
groups it replaces and counts the requests its hosts have in flight.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

from app.delivery.buckets import BucketGroup, Slots
from app.delivery.lanes import HostLane
from app.delivery.policy import GroupingPolicy, LanePolicy


@dataclass
class _Votes:
    """What the answers of one host said about sharing a bucket with another, with
    forgetting (`keep` per vote, and a half-life in seconds)."""

    shared: float = 0.0
    separate: float = 0.0
    at: float = -math.inf

    def add(self, shared: bool, now: float, keep: float, half_life: float) -> None:
        fade = keep * 0.5 ** ((now - self.at) / half_life) if self.at > -math.inf else 0.0
        self.shared = self.shared * fade + (1.0 if shared else 0.0)
        self.separate = self.separate * fade + (0.0 if shared else 1.0)
        self.at = now

    def says_shared(self, policy: GroupingPolicy) -> bool:
        return self.shared >= policy.min_votes and self.shared >= policy.ratio * self.separate

    def says_separate(self, policy: GroupingPolicy) -> bool:
        return self.separate >= policy.min_votes and self.separate >= policy.ratio * self.shared


class BucketMap:
    """The host lanes of one registration and the bucket groups they fall into (see the
    module docstring)."""

    def __init__(
        self, platform_id: str, policy: LanePolicy, grouping: GroupingPolicy, shared: Slots
    ) -> None:
        self.platform_id = platform_id
        self.policy = policy
        self.grouping = grouping
        self.shared = shared
        self.hosts: dict[str, HostLane] = {}
        self._busy: dict[str, HostLane] = {}
        """Hosts with jobs under way: the ones whose load can be told apart."""
        self._votes: dict[tuple[str, str], _Votes] = {}
        """(answering host, other host) → what the first's answers said of sharing."""
        self._links: set[frozenset[str]] = set()
        self.mark = -math.inf
        """The highest remaining seen: the bucket's mark as the platform reports it."""
        self.regroups = 0
        """How often the groups changed (figures)."""

    def host(self, origin: str) -> HostLane:
        lane = self.hosts.get(origin)
        if lane is None:
            lane = self.hosts[origin] = HostLane(self.platform_id, origin, self.policy, self)
        return lane

    def groups(self) -> list[list[HostLane]]:
        """The hosts of each group (hosts alone in theirs included)."""
        by_group: dict[int, list[HostLane]] = {}
        for lane in self.hosts.values():
            by_group.setdefault(id(lane.group), []).append(lane)
        return list(by_group.values())

    def busy(self, lane: HostLane) -> None:
        self._busy[lane.origin] = lane

    def idle(self, lane: HostLane) -> None:
        self._busy.pop(lane.origin, None)

    def sample(self, lane: HostLane, remaining: float) -> None:
        """One answer of `lane` with the bucket's remaining room: evidence for each pair."""
        self.mark = max(self.mark, remaining)
        if len(self._busy) < 2 and not self._links:
            return
        grouping = self.grouping
        # Reservations in the bucket beyond this host's own other requests: the others'
        # requests if they share it (plus the charged cost, small while the bucket is not
        # full), else that cost alone.
        beyond_own = (self.mark - remaining) / self.policy.reservation - (lane.sent - 1)
        if beyond_own < -grouping.tolerance:
            return  # answers counted late (a busy loop): this one cannot be read
        now = time.monotonic()
        changed = False
        for other in self._busy.values():
            load = other.sent
            if other is lane or load < grouping.min_load:
                continue
            if beyond_own >= load - grouping.tolerance:
                shared = True
            elif beyond_own <= grouping.tolerance:
                shared = False
            else:
                continue
            key = (lane.origin, other.origin)
            votes = self._votes.get(key)
            if votes is None:
                votes = self._votes[key] = _Votes()
            votes.add(shared, now, grouping.keep, grouping.half_life)
            changed |= self._judge(lane.origin, other.origin)
        if changed:
            self._regroup()

    def _judge(self, first: str, second: str) -> bool:
        """Link or unlink a pair on the votes of both directions; True if that changed."""
        pair = frozenset((first, second))
        ways = [self._votes.get((first, second)), self._votes.get((second, first))]
        if pair not in self._links:
            if all(way is not None and way.says_shared(self.grouping) for way in ways):
                self._links.add(pair)
                return True
        elif any(way is not None and way.says_separate(self.grouping) for way in ways):
            self._links.discard(pair)
            return True
        return False

    def forget_stale(self) -> None:
        """Evidence older than the horizon is gone: its links go too (the hosts split)."""
        horizon = time.monotonic() - self.grouping.evidence_horizon
        stale = [key for key, votes in self._votes.items() if votes.at < horizon]
        for key in stale:
            del self._votes[key]
        kept = {
            pair
            for pair in self._links
            if any(key in self._votes for key in (tuple(pair), tuple(reversed(tuple(pair)))))
        }
        if kept != self._links:
            self._links = kept
            self._regroup()

    def _regroup(self) -> None:
        """Groups become the connected components of the links; a component that is not an
        existing group gets a new group, started from its hosts' old groups."""
        parent = {origin: origin for origin in self.hosts}

        def root(origin: str) -> str:
            while parent[origin] != origin:
                parent[origin] = parent[parent[origin]]
                origin = parent[origin]
            return origin

        for pair in self._links:
            first, second = tuple(pair)
            if first in parent and second in parent:
                parent[root(first)] = root(second)
        components: dict[str, list[HostLane]] = {}
        for origin, lane in self.hosts.items():
            components.setdefault(root(origin), []).append(lane)
        self.regroups += 1
        sizes = Counter(id(lane.group) for lane in self.hosts.values())
        replaced: dict[int, BucketGroup] = {}
        for members in components.values():
            current = members[0].group
            if all(lane.group is current for lane in members) and sizes[id(current)] == len(
                members
            ):
                continue  # already a group of exactly these hosts
            olds = {id(lane.group): lane.group for lane in members}
            replaced.update(olds)
            group = BucketGroup(self.policy, self.shared)
            group.inherit(olds.values(), members)
            for lane in members:
                lane.group = group
                group.jobs += lane.jobs
        for old in replaced.values():
            old.retire()
