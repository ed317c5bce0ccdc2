"""Pacing: how a bucket group's request limit follows Canvas's answers, how a host lane's follows
the host's health, and backoff."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.delivery.buckets import JOBS_PER_SLOT, BucketGroup, Slots
from app.delivery.grouping import BucketMap
from app.delivery.lanes import HostLane
from app.delivery.policy import DeliveryPolicy, GroupingPolicy, LanePolicy
from app.lti.outcomes import Action, Outcome, RetryCode

DELIVERED = Outcome(Action.delivered, "delivered", http_status=200)
THROTTLED = Outcome(Action.retry, RetryCode.throttled, http_status=403, throttled=True)


def answered(remaining: float | None) -> Outcome:
    return Outcome(Action.delivered, "delivered", http_status=200, rate_limit_remaining=remaining)


def host_lane(policy: LanePolicy, origin: str = "https://school.instructure.com") -> HostLane:
    return BucketMap("p", policy, GroupingPolicy(), Slots(64)).host(origin)


class Requests:
    """Requests in flight through a lane, each waiting for its answer until released."""

    def __init__(self, lane: BucketGroup | HostLane) -> None:
        self.lane = lane
        self.answer = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, count: int) -> None:
        async def request() -> None:
            async with self.lane.slot():
                await self.answer.wait()

        self.tasks += [asyncio.create_task(request()) for _ in range(count)]
        await asyncio.sleep(0)

    async def finish(self) -> None:
        self.answer.set()
        await asyncio.gather(*self.tasks)


async def test_a_busy_lane_goes_straight_to_the_room_canvas_reports_until_pressure() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=4), Slots(64))
    requests = Requests(lane)
    await requests.start(4)  # every slot taken: the limit holds work back
    # Room for ten more besides the three others in flight: 13 requests, less the margin.
    lane.observe(answered(500))
    assert lane.limit == 12
    await requests.start(8)
    lane.observe(answered(450))  # the same bucket, seen later: no higher
    assert lane.limit == 12
    await requests.finish()


async def test_lanes_that_fill_one_bucket_unknowingly_take_their_share_of_its_room() -> None:
    # Two groups of four on one bucket of twelve (a mark of 600), each not knowing the other's
    # requests: an answer of each says there is room for six more, and of the six reservations
    # in the bucket besides the answered request, three are not the group's own.
    groups = [BucketGroup(LanePolicy(initial_limit=4), Slots(64)) for _ in range(2)]
    requests = [Requests(group) for group in groups]
    for each in requests:
        await each.start(4)
    for group in groups:
        group.observe(answered(300), mark=600)
    # Each takes the room in proportion to its part of the load (4 of 7): together they stay
    # a request below the twelve, where each, taking all the room, would have gone to 8.
    assert [group.limit for group in groups] == [pytest.approx(8 - 6 * 3 / 7)] * 2
    assert sum(group.limit for group in groups) <= 11
    alone = BucketGroup(LanePolicy(initial_limit=4), Slots(64))
    requests.append(Requests(alone))
    await requests[-1].start(4)
    alone.observe(answered(300), mark=300)
    assert alone.limit == 8  # nothing but its own in the bucket: all the room is its
    for each in requests:
        await each.finish()


async def test_a_busy_lane_without_the_header_grows_by_one_request_per_answer() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=4), Slots(64))
    requests = Requests(lane)
    await requests.start(4)
    lane.observe(answered(None))
    assert lane.limit == 5
    await requests.start(1)
    lane.observe(answered(None))
    assert lane.limit == 6
    await requests.finish()


async def test_a_lane_that_is_not_busy_does_not_grow() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=4), Slots(64))
    lane.observe(answered(500))
    lane.observe(DELIVERED)
    assert lane.limit == 4


async def test_near_the_high_water_mark_a_lane_grows_by_the_room_left() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=6), Slots(64))
    requests = Requests(lane)
    await requests.start(6)
    lane.observe(answered(250))  # room for five: four requests more per round trip
    assert lane.limit == pytest.approx(6 + 4 / 6)
    assert not lane.slow_start
    await requests.finish()


async def test_with_room_for_one_request_a_lane_holds() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=6), Slots(64))
    requests = Requests(lane)
    await requests.start(6)
    lane.observe(answered(75))
    assert lane.limit == 6
    await requests.finish()


async def test_a_lane_stays_a_request_below_what_the_bucket_can_hold() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=12), Slots(64))
    requests = Requests(lane)
    await requests.start(12)
    # Eleven others in flight and room for one more: the bucket holds twelve at most.
    lane.observe(answered(50))
    assert lane.limit == 11
    await requests.finish()


async def test_a_lane_shrinks_when_the_bucket_fills_from_elsewhere() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=8), Slots(64))
    requests = Requests(lane)
    await requests.start(8)
    # Another user of the key: with seven of ours in flight, room is already gone.
    lane.observe(answered(-100))
    assert lane.limit == 4
    await requests.finish()


async def test_throttling_halves_the_lane_and_pauses_it_briefly() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=12), Slots(64))
    lane.observe(THROTTLED)
    lane.observe(THROTTLED)  # the same storm: one cut
    assert lane.limit == 6
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with lane.slot():
        pass
    assert loop.time() - started >= lane.latency * 0.5  # waited out the pause


def storm_lane() -> BucketGroup:
    lane = BucketGroup(LanePolicy(initial_limit=8, throttle_pause=0.05), Slots(64))
    lane.latency = 0.01
    return lane


async def test_a_throttled_lane_sends_one_probe_at_a_time_oldest_first() -> None:
    lane = storm_lane()
    lane.observe(THROTTLED)  # the storm begins: the lane pauses
    answers = [THROTTLED, DELIVERED]  # the first probe is refused, the second gets through
    entered: list[tuple[str, float]] = []
    inside = 0
    most_inside = {True: 0, False: 0}  # during the storm, after it
    loop = asyncio.get_running_loop()

    async def request(name: str) -> None:
        nonlocal inside
        async with lane.slot():
            inside += 1
            most_inside[lane.throttled] = max(most_inside[lane.throttled], inside)
            entered.append((name, loop.time()))
            await asyncio.sleep(0.01)
            inside -= 1
            lane.observe(answers.pop(0) if answers else DELIVERED)

    tasks = []
    for name in "abcd":
        tasks.append(asyncio.create_task(request(name)))
        await asyncio.sleep(0.001)  # they join the line in this order
    await asyncio.gather(*tasks)

    assert [name for name, _ in entered] == ["a", "b", "c", "d"]
    assert most_inside == {True: 1, False: 2}  # once a probe is through, the line moves
    assert not lane.throttled
    times = dict(entered)
    # The refused probe doubled the pause (0.05 s, then 0.1 s) before the next one went.
    assert times["b"] - times["a"] >= 0.1


async def test_a_refused_probe_goes_to_the_back_of_the_line() -> None:
    lane = storm_lane()
    lane.observe(THROTTLED)
    answers = [THROTTLED, THROTTLED, DELIVERED]
    probes: list[str] = []

    async def call(name: str) -> None:
        """A job's call: resent at once while refused (the lane makes it wait)."""
        while True:
            async with lane.slot():
                probes.append(name)
                answer = answers.pop(0) if answers else DELIVERED
                lane.observe(answer)
            if not answer.throttled:
                return

    tasks = []
    for name in "abc":
        tasks.append(asyncio.create_task(call(name)))
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    assert probes[:3] == ["a", "b", "c"]  # each job probed once before any probed again
    assert sorted(probes[3:]) == ["a", "b"]


async def test_a_probe_that_gives_up_passes_its_turn_on() -> None:
    lane = storm_lane()
    lane.observe(THROTTLED)
    entered: list[str] = []

    async def request(name: str, hang: bool) -> None:
        async with lane.slot():
            entered.append(name)
            if hang:
                await asyncio.sleep(3600)
            lane.observe(DELIVERED)

    first = asyncio.create_task(request("a", hang=True))
    await asyncio.sleep(0.001)
    second = asyncio.create_task(request("b", hang=False))
    while not entered:
        await asyncio.sleep(0.01)
    first.cancel()  # the probe's delivery was stopped without an answer
    await asyncio.wait_for(second, 2)
    assert entered == ["a", "b"] and not lane.throttled


async def test_a_throttled_lane_takes_on_a_slot_of_jobs_at_most() -> None:
    lane = host_lane(LanePolicy(initial_limit=8))
    assert lane.free_jobs == 8 * JOBS_PER_SLOT
    lane.observe(THROTTLED)
    assert lane.free_jobs == JOBS_PER_SLOT


async def test_server_errors_and_timeouts_shrink_the_host_lane_not_its_group() -> None:
    lane = host_lane(LanePolicy(initial_limit=8))
    lane.observe(Outcome(Action.retry, RetryCode.timeout))
    assert lane.limit == 6
    assert lane.group.limit == 8


async def test_a_host_lane_grows_back_once_answers_get_through() -> None:
    lane = host_lane(LanePolicy(initial_limit=2))
    lane.observe(Outcome(Action.retry, RetryCode.platform_error, http_status=500))
    assert lane.slots == 1
    requests = Requests(lane)
    await requests.start(1)
    lane.observe(answered(500))
    assert lane.slots == 2
    await requests.finish()


async def test_a_host_that_never_struggled_follows_its_groups_limit_at_once() -> None:
    lane = host_lane(LanePolicy(initial_limit=4))
    requests = Requests(lane)
    await requests.start(4)
    lane.observe(answered(500))  # its group goes to the room Canvas reports: 12
    assert (lane.limit, lane.group.limit) == (5, 12)
    await requests.start(1)  # its own five slots taken
    lane.observe(answered(500))
    assert lane.limit == 12
    await requests.finish()


async def test_a_host_that_struggled_grows_back_one_request_per_answer() -> None:
    lane = host_lane(LanePolicy(initial_limit=4))
    lane.observe(server_error())
    assert lane.limit == 3
    requests = Requests(lane)
    await requests.start(3)
    lane.observe(answered(500))
    await requests.start(1)
    lane.observe(answered(500))
    assert lane.limit == 5
    await requests.finish()


NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
RESTING = LanePolicy(failures_to_rest=3, rest_first=5.0, rest_max=20.0)


# Each answer its own object: the lane counts an answer once however many tries shared it.
def server_error() -> Outcome:
    return Outcome(Action.retry, RetryCode.platform_error, http_status=500)


def garbage() -> Outcome:
    return Outcome(Action.retry, RetryCode.invalid_answer, http_status=200)


def timed_out() -> Outcome:
    return Outcome(Action.retry, RetryCode.timeout)


def rested(lane: HostLane, tries: list[list[Outcome]], now: datetime) -> list[datetime | None]:
    return [lane.try_ended(outcomes, now) for outcomes in tries]


async def test_a_host_rests_after_tries_in_a_row_with_no_usable_answer() -> None:
    lane = host_lane(RESTING)
    assert rested(lane, [[server_error()], [garbage()], [timed_out()]], NOON) == [
        None,
        None,
        NOON + timedelta(seconds=5),
    ]
    assert lane.resting(NOON) and lane.resting(NOON + timedelta(seconds=4.9))
    assert not lane.resting(NOON + timedelta(seconds=5))


async def test_tries_with_no_request_of_their_own_say_nothing_about_the_host() -> None:
    lane = host_lane(RESTING)
    assert rested(lane, [[server_error()], [], [server_error()], [], [server_error()]], NOON)[-1]
    assert lane.failures == 3


async def test_an_answer_shared_by_several_tries_counts_once() -> None:
    lane = host_lane(RESTING)
    shared_read = server_error()  # a line item read that five jobs joined
    assert rested(lane, [[shared_read]] * 5, NOON) == [None] * 5
    assert lane.failures == 1


async def test_any_usable_answer_ends_the_count_and_the_rest() -> None:
    not_found = Outcome(Action.failed, "assignment_not_linked", http_status=404)
    for usable in (DELIVERED, THROTTLED, not_found):
        lane = host_lane(RESTING)
        rested(lane, [[server_error()] for _ in range(3)], NOON)
        assert lane.rests == 1
        assert lane.try_ended([timed_out(), usable], NOON) is None
        assert (lane.failures, lane.rests, lane.resting(NOON)) == (0, 0, False)
        assert rested(lane, [[server_error()], [server_error()]], NOON) == [None, None]


async def test_after_a_rest_one_job_probes_and_a_failed_probe_doubles_the_rest() -> None:
    lane = host_lane(RESTING)
    rested(lane, [[server_error()] for _ in range(3)], NOON)
    # Tries that began before the rest end in it: the rest stays as it is.
    assert (
        rested(lane, [[server_error()] for _ in range(4)], NOON + timedelta(seconds=1))
        == [None] * 4
    )
    later = NOON + timedelta(seconds=5)
    assert lane.free_jobs == 1  # the probe
    lane.job_started()
    assert lane.free_jobs == 0
    lane.job_ended()
    ends = []
    for _ in range(4):
        until = lane.try_ended([garbage()], later)
        assert until is not None
        ends.append((until - later).total_seconds())
        later = until
    assert ends == [10.0, 20.0, 20.0, 20.0]
    lane.try_ended([DELIVERED], later)
    assert lane.free_jobs == RESTING.initial_limit * JOBS_PER_SLOT


async def test_the_hosts_of_a_group_share_its_room_for_jobs() -> None:
    bucket_map = BucketMap("p", LanePolicy(initial_limit=2), GroupingPolicy(), Slots(64))
    first, second = bucket_map.host("https://a.example"), bucket_map.host("https://b.example")
    second.group = first.group  # as if learned
    for _ in range(2 * JOBS_PER_SLOT):
        first.job_started()
    assert first.free_jobs == 0 and second.free_jobs == 0


def linked_by_answers(bucket_map: BucketMap, first: HostLane, second: HostLane) -> None:
    """Answers of each host that carry the other's requests in flight: the hosts share a
    bucket (with a `GroupingPolicy` that links on one vote each way)."""
    reservation = bucket_map.policy.reservation
    bucket_map.sample(first, 600.0)  # the mark (an answer that cannot be read otherwise)
    in_bucket = first.sent + second.sent - 1  # besides the answered request
    for lane in (first, second):
        bucket_map.sample(lane, 600.0 - in_bucket * reservation)


async def test_hosts_found_to_share_a_bucket_pace_together_from_the_requests_in_flight() -> None:
    policy = LanePolicy(initial_limit=4)
    bucket_map = BucketMap("p", policy, GroupingPolicy(min_votes=1, ratio=1), Slots(64))
    first, second = bucket_map.host("https://a.example"), bucket_map.host("https://b.example")
    first.group = BucketGroup(policy, bucket_map.shared, limit=2)  # as if it was throttled
    old_groups = (first.group, second.group)
    for lane in (first, second):
        lane.job_started()
    on_first, on_second = Requests(first), Requests(second)
    await on_first.start(3)  # two in flight, one waiting for the group
    await on_second.start(3)
    assert (first.sent, second.sent, first.group.waiting) == (2, 3, 1)

    linked_by_answers(bucket_map, first, second)
    await asyncio.sleep(0.01)  # the waiting request moves on

    group = first.group
    assert second.group is group and group not in old_groups
    # The most careful limit of the two, and the five requests in flight count against it:
    # the one that waited waits on, in the new group.
    assert group.limit == 2 and group.requests == 5 and group.waiting == 1
    assert first.sent + second.sent == 5
    await asyncio.gather(on_first.finish(), on_second.finish())
    assert group.requests == 0 and first.held == 0 and second.held == 0


async def test_requests_beyond_the_limit_wait_for_a_slot() -> None:
    lane = BucketGroup(LanePolicy(initial_limit=2), Slots(64))
    order: list[str] = []
    gate = asyncio.Event()

    async def request(name: str) -> None:
        async with lane.slot():
            order.append(name)
            await gate.wait()

    tasks = [asyncio.create_task(request(name)) for name in "abc"]
    await asyncio.sleep(0.01)
    assert order == ["a", "b"] and lane.waiting == 1
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"] and lane.requests == 0


async def test_a_request_others_wait_for_goes_ahead_of_the_waiting_ones() -> None:
    lane = host_lane(LanePolicy(initial_limit=1))
    order: list[str] = []
    gate = asyncio.Event()

    async def request(name: str, *, ahead: bool = False) -> None:
        async with lane.slot(ahead=ahead):
            order.append(name)
            await gate.wait()

    tasks = [asyncio.create_task(request(name)) for name in ("post 1", "post 2", "post 3")]
    await asyncio.sleep(0.01)
    # A line item read that a new batch of deliveries waits for: next in, not last.
    tasks.append(asyncio.create_task(request("read", ahead=True)))
    await asyncio.sleep(0.01)
    assert order == ["post 1"]
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["post 1", "read", "post 2", "post 3"]


async def test_the_instance_cap_is_shared_by_all_lanes() -> None:
    shared = Slots(1)
    first = BucketGroup(LanePolicy(initial_limit=4), shared)
    second = BucketGroup(LanePolicy(initial_limit=4), shared)
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def hold() -> None:
        async with first.slot():
            inside.set()
            await leave.wait()

    holder = asyncio.create_task(hold())
    await inside.wait()
    waiting = asyncio.create_task(second.slot().__aenter__())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    leave.set()
    await holder
    await waiting
    assert shared.taken == 1


@pytest.mark.parametrize("tries", [1, 2, 5, 12])
def test_backoff_is_exponential_with_jitter_and_capped(tries: int) -> None:
    policy = DeliveryPolicy(backoff_first=2.0, backoff_max=60.0)
    full = min(2.0 * 2 ** (tries - 1), 60.0)
    delays = {policy.backoff(tries) for _ in range(50)}
    assert all(full / 2 <= delay <= full for delay in delays)
    assert len(delays) > 1  # jittered
