"""The admission scheduler's contract on its own, with streams that are live cameras (a newer
frame always waiting): never more frames in flight than the shared room, room handed to the
streams in the order they queued, each stream queued once, and a stream that closed or has
nothing left to start passed over. No pipeline, no event loop: what `VideoStream` does with it
is tested in test_stream_admission_and_order.py."""

from __future__ import annotations

from collections import Counter

import pytest

from service.streams.admission import AdmissionScheduler


class Camera:
    """A stream as the scheduler sees it: a waiting frame and its own bound of frames in
    flight. It tells the scheduler of its frames as `VideoStream` does."""

    def __init__(self, name: str, scheduler: AdmissionScheduler[Camera], bound: int = 1) -> None:
        self.name = name
        self.scheduler = scheduler
        self.bound = bound
        self.waiting = False
        self.in_flight = 0
        self.started: list[str] = []  # shared by the test's cameras: the order frames started

    @property
    def can_start(self) -> bool:
        return self.waiting and self.in_flight < self.bound

    def start_waiting_frame(self) -> None:
        assert self.can_start, f"{self.name} was started with nothing it may start"
        self.waiting, self.in_flight = False, self.in_flight + 1
        self.started.append(self.name)

    def frame_arrives(self) -> None:
        self.waiting = True  # a newer frame replaces a waiting one: still one waiting
        self.scheduler.admit(self)

    def frame_done(self) -> None:
        self.in_flight -= 1
        self.scheduler.frame_done()  # streams queued before this one go first
        self.scheduler.admit(self)


def cameras(count: int, room: int, bound: int = 1) -> list[Camera]:
    scheduler: AdmissionScheduler[Camera] = AdmissionScheduler(room)
    started: list[str] = []
    made = [Camera(f"s{n}", scheduler, bound) for n in range(count)]
    for camera in made:
        camera.started = started
    return made


def test_a_frame_starts_at_once_while_there_is_room() -> None:
    a, b = cameras(2, room=2)
    a.frame_arrives()
    b.frame_arrives()
    assert a.started == ["s0", "s1"]
    assert a.scheduler.in_flight == 2


def test_a_frame_without_room_waits_and_takes_the_room_of_the_next_frame_done() -> None:
    a, b = cameras(2, room=1)
    a.frame_arrives()
    b.frame_arrives()
    assert a.started == ["s0"] and b.waiting, "b waits: the room is taken"
    a.frame_done()
    assert a.started == ["s0", "s1"]
    assert a.scheduler.in_flight == 1


def test_room_goes_to_the_streams_in_the_order_they_queued_not_to_the_one_that_finished() -> None:
    a, b, c = cameras(3, room=1)
    a.frame_arrives()
    c.frame_arrives()
    b.frame_arrives()
    a.frame_arrives()  # a's next frame, while its first is in flight
    for stream in (a, c, b):
        stream.frame_done()
    assert a.started == ["s0", "s2", "s1", "s0"]


@pytest.mark.parametrize(("streams", "room"), [(3, 1), (4, 2), (5, 3)])
def test_an_overloaded_scheduler_serves_every_stream_evenly(streams: int, room: int) -> None:
    made = cameras(streams, room)
    by_name = {camera.name: camera for camera in made}
    for camera in made:
        camera.frame_arrives()
    started = made[0].started
    for finished in range(60 * streams):  # frames finish in the order they started
        done = by_name[started[finished]]
        done.waiting = True  # a live camera: its next frame came meanwhile
        done.frame_done()
        assert done.scheduler.in_flight == sum(camera.in_flight for camera in made) <= room
    starts = Counter(started)
    assert max(starts.values()) - min(starts.values()) <= 1, starts


def test_a_stream_that_asks_twice_queues_once() -> None:
    a, b, c = cameras(3, room=1)
    a.frame_arrives()
    b.frame_arrives()
    b.frame_arrives()  # a newer frame replaces b's waiting one: b still queues once
    c.frame_arrives()
    a.frame_done()
    b.frame_arrives()  # b's next frame, held by its own bound while its first is in flight
    b.frame_done()  # queued once, b is behind c now; queued twice, it would pass c
    assert a.started == ["s0", "s1", "s2"]


def test_a_stream_held_by_its_own_bound_does_not_take_shared_room() -> None:
    a, b = cameras(2, room=2, bound=1)
    a.frame_arrives()
    a.frame_arrives()  # a has a frame in flight already: its own bound holds the next one
    assert a.scheduler.in_flight == 1
    b.frame_arrives()
    assert a.started == ["s0", "s1"], "b took the room a's bound left free"


def test_a_queued_stream_with_nothing_left_to_start_is_passed_over() -> None:
    a, b, c = cameras(3, room=1)
    a.frame_arrives()
    b.frame_arrives()
    c.frame_arrives()
    b.waiting = False  # b's waiting frame was answered (its call ended) while it queued
    a.frame_done()
    assert a.started == ["s0", "s2"]
    assert a.scheduler.in_flight == 1


def test_a_stream_that_closed_while_queued_is_forgotten() -> None:
    a, b, c = cameras(3, room=1)
    a.frame_arrives()
    b.frame_arrives()
    c.frame_arrives()
    a.scheduler.forget(b)
    a.frame_done()
    assert a.started == ["s0", "s2"]


def test_a_stream_with_no_frame_waiting_is_neither_started_nor_queued() -> None:
    a, b = cameras(2, room=1)
    a.frame_arrives()
    a.scheduler.admit(b)  # nothing waiting
    a.frame_done()
    assert a.started == ["s0"]
    assert a.scheduler.in_flight == 0
