"""The micro-batcher: items that arrive together are processed together, each caller
getting its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.intake.batching import MicroBatcher


class Recorder:
    """A `process` that keeps the batches it was given and waits for a go before answering."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.go = asyncio.Event()
        self.go.set()

    async def process(self, items: Sequence[str]) -> list[str | BaseException]:
        self.batches.append(list(items))
        await self.go.wait()
        return [ValueError(item) if item.startswith("bad") else item.upper() for item in items]


def batcher(
    recorder: Recorder, *, max_size: int = 100, max_in_flight: int = 1, overlap_from: int = 1
) -> MicroBatcher[str, str]:
    return MicroBatcher(
        recorder.process,
        keys_of=lambda item: [item.split(":")[0]],
        max_size=max_size,
        max_in_flight=max_in_flight,
        overlap_from=overlap_from,
    )


async def test_a_lone_item_is_processed_at_once_on_its_own() -> None:
    recorder = Recorder()

    assert await batcher(recorder).submit("a") == "A"
    assert recorder.batches == [["a"]]


async def test_items_arriving_while_a_batch_runs_go_together_in_the_next() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder)
    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batches.submit(item)) for item in ("b", "c", "d")]
    await asyncio.sleep(0)
    recorder.go.set()

    assert await asyncio.gather(first, *waiting) == ["A", "B", "C", "D"]
    assert recorder.batches == [["a"], ["b", "c", "d"]]


async def test_a_batch_holds_at_most_max_size_items() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder, max_size=2)
    tasks = [asyncio.create_task(batches.submit(item)) for item in "abcde"]
    await asyncio.sleep(0)
    recorder.go.set()

    assert await asyncio.gather(*tasks) == list("ABCDE")
    assert recorder.batches == [["a"], ["b", "c"], ["d", "e"]]


async def test_items_with_a_common_key_never_share_a_batch_and_keep_their_order() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder)
    tasks = [
        asyncio.create_task(batches.submit(item))
        for item in ("x:0", "a:1", "b:1", "a:2", "c:1", "a:3", "b:2")
    ]
    await asyncio.sleep(0)
    recorder.go.set()

    assert await asyncio.gather(*tasks) == ["X:0", "A:1", "B:1", "A:2", "C:1", "A:3", "B:2"]
    assert recorder.batches == [["x:0"], ["a:1", "b:1", "c:1"], ["a:2", "b:2"], ["a:3"]]


async def test_several_batches_run_at_once_up_to_the_limit() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder, max_in_flight=2)
    tasks = [asyncio.create_task(batches.submit(item)) for item in "abcd"]
    await asyncio.sleep(0)

    assert batches.batches_in_flight == 2
    recorder.go.set()
    assert await asyncio.gather(*tasks) == list("ABCD")
    assert recorder.batches == [["a"], ["b"], ["c", "d"]]


async def test_an_item_that_fails_fails_alone() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder)
    tasks = [asyncio.create_task(batches.submit(item)) for item in ("a", "b", "bad", "c")]
    await asyncio.sleep(0)
    recorder.go.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert outcomes[:2] == ["A", "B"] and outcomes[3] == "C"
    assert isinstance(outcomes[2], ValueError)
    assert recorder.batches == [["a"], ["b", "bad", "c"]]


async def test_a_batch_that_fails_as_a_whole_fails_each_of_its_items() -> None:
    async def broken(items: Sequence[str]) -> list[str | BaseException]:
        raise ConnectionError("database down")

    batches: MicroBatcher[str, str] = MicroBatcher(
        broken, keys_of=lambda item: [item], max_size=10, max_in_flight=1
    )
    outcomes = await asyncio.gather(
        *(batches.submit(item) for item in "abc"), return_exceptions=True
    )

    assert [type(outcome) for outcome in outcomes] == [ConnectionError] * 3
    assert batches.batches_in_flight == 0
    with pytest.raises(ConnectionError):  # the next item still gets a batch of its own
        await batches.submit("d")


async def test_when_a_batch_fails_as_a_whole_those_waiting_fail_with_it_at_once() -> None:
    release = asyncio.Event()
    batches_run: list[list[str]] = []

    async def stuck_then_broken(items: Sequence[str]) -> list[str | BaseException]:
        batches_run.append(list(items))
        await release.wait()
        raise ConnectionError("database down")

    batches: MicroBatcher[str, str] = MicroBatcher(
        stuck_then_broken, keys_of=lambda item: [item], max_size=10, max_in_flight=1
    )
    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batches.submit(item)) for item in "bc"]
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)

    assert [type(outcome) for outcome in outcomes] == [ConnectionError] * 3
    assert batches_run == [["a"]]  # b and c never waited for a batch of their own


async def test_a_caller_that_gives_up_does_not_stop_the_others_in_its_batch() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder)
    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(batches.submit("b"))
    staying = asyncio.create_task(batches.submit("c"))
    await asyncio.sleep(0)
    leaving.cancel()
    recorder.go.set()

    assert await staying == "C" and await first == "A"
    assert recorder.batches == [["a"], ["b", "c"]]
    with pytest.raises(asyncio.CancelledError):
        await leaving


def test_a_batcher_needs_room_for_one_item_and_one_batch() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="at least one"):
        batcher(recorder, max_size=0)
    with pytest.raises(ValueError, match="at least one"):
        batcher(recorder, max_in_flight=0)


async def test_a_batch_starts_beside_a_running_one_only_once_enough_items_wait() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder, max_in_flight=2, overlap_from=3)
    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    two = [asyncio.create_task(batches.submit(item)) for item in "bc"]
    await asyncio.sleep(0)
    assert batches.batches_in_flight == 1, "two waiting are too few to overlap"

    third = asyncio.create_task(batches.submit("d"))
    await asyncio.sleep(0)
    assert batches.batches_in_flight == 2
    await asyncio.sleep(0)
    assert recorder.batches == [["a"], ["b", "c", "d"]]
    recorder.go.set()
    assert await asyncio.gather(first, *two, third) == list("ABCD")


async def test_items_too_few_to_overlap_start_as_soon_as_the_running_batch_ends() -> None:
    recorder = Recorder()
    recorder.go.clear()
    batches = batcher(recorder, max_in_flight=2, overlap_from=10)
    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    later = asyncio.create_task(batches.submit("b"))
    await asyncio.sleep(0)
    assert recorder.batches == [["a"]]

    recorder.go.set()
    assert await asyncio.gather(first, later) == ["A", "B"]
    assert recorder.batches == [["a"], ["b"]]
