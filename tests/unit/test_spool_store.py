"""The spool directory (bus/spool/store.py, frames.py) on its own: no Redis, no routes."""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from bus import ConfigError, SpoolError, SpoolFull, SpoolLocked
from bus.journal import NewEvent
from bus.spool import frames, inspect
from bus.spool.store import Spool


def event(n: int = 0, body: bytes | None = None) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), "api.orders", "api", body or b'{"n":%d,"text":"a\\nb"}' % n, time.time())


def append(spool: Spool, events: list[NewEvent]) -> None:
    spool.append([frames.encode(e) for e in events])


def drain(spool: Spool, ack: bool = True) -> list[NewEvent]:
    got = []
    while (batch := spool.read(100)) is not None:
        got += batch.events
        if not ack:
            break
        spool.ack(batch)
    return got


def test_a_frame_reads_back_as_the_event_it_was():
    e = event()
    parsed = frames.parse(frames.encode(e) + frames.encode(e)[:5])
    assert [frames.decode(p) for p in parsed.payloads] == [e]
    assert not parsed.damaged


def test_a_reopened_spool_finds_what_was_appended_and_not_acked(tmp_path):
    events = [event(i) for i in range(10)]
    spool = Spool(tmp_path, fsync="no")
    append(spool, events[:4])
    append(spool, events[4:])
    batch = spool.read(3)
    spool.ack(batch)
    spool.close()
    again = Spool(tmp_path, fsync="no")
    assert again.waiting().count == 7
    assert drain(again) == events[3:]
    assert again.waiting().count == 0
    again.close()
    assert inspect(tmp_path).count == 0


def spooled_and_closed(directory, events: list[NewEvent]):
    """A spool left behind holding `events`; its one segment file."""
    spool = Spool(directory, fsync="no")
    append(spool, events)
    spool.close()
    (segment,) = directory.glob("*.seg")
    return segment


def test_a_torn_last_frame_is_cut_off_on_reopening_and_the_rest_kept(tmp_path):
    events = [event(i) for i in range(3)]
    segment = spooled_and_closed(tmp_path, events)
    whole = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(frames.encode(event())[:-3])  # power lost in the middle of a write
    again = Spool(tmp_path, fsync="no")
    assert segment.stat().st_size == whole
    assert drain(again) == events
    append(again, [event(9)])
    assert len(drain(again)) == 1
    again.close()


def test_a_damaged_frame_ends_what_is_read_of_its_segment(tmp_path):
    events = [event(i) for i in range(3)]
    segment = spooled_and_closed(tmp_path, events)
    data = bytearray(segment.read_bytes())
    second = len(frames.encode(events[0]))
    data[second + frames.HEADER.size + 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path, fsync="no")
    assert drain(again) == events[:1]
    again.close()


def test_segments_rotate_and_those_wholly_sent_are_deleted(tmp_path):
    spool = Spool(tmp_path, fsync="everysec", segment_bytes=1000)
    events = [event(i) for i in range(60)]
    for e in events:
        append(spool, [e])
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert inspect(tmp_path).count == 60
    assert drain(spool) == events
    assert len(list(tmp_path.glob("*.seg"))) == 1
    spool.close()


def test_spool_full_names_the_limit_and_the_directory_and_keeps_what_was_spooled(tmp_path):
    one = len(frames.encode(event()))
    spool = Spool(tmp_path, max_bytes=one * 5 + 10, fsync="no")
    kept = [event(i) for i in range(5)]
    append(spool, kept)
    with pytest.raises(SpoolFull, match=f"the spool {tmp_path} .* max_bytes is {one * 5 + 10}"):
        append(spool, [event(5)])
    with pytest.raises(SpoolFull):
        append(spool, [event(6), event(7)])
    assert drain(spool) == kept
    append(spool, [event(8)])  # room again once Redis took them
    spool.close()


def test_a_second_spool_on_a_directory_is_refused_with_spoollocked(tmp_path):
    spool = Spool(tmp_path)
    with pytest.raises(SpoolLocked, match=f"in use by another Producer \\(process {os.getpid()}\\)"):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()  # free again once closed


def test_fsync_must_be_always_everysec_or_no(tmp_path):
    with pytest.raises(ConfigError, match="'always', 'everysec'"):
        Spool(tmp_path, fsync="sometimes")
    spool = Spool(tmp_path, fsync="always")
    append(spool, [event()])
    assert spool.waiting().count == 1
    spool.close()


def appended_from_threads(spool: Spool, threads: int, per_thread: int) -> list[list[NewEvent]]:
    """Each of `threads` threads appends `per_thread` events one by one; each thread's events, in its order."""
    made: list[list[NewEvent]] = [[] for _ in range(threads)]

    def produce(t: int) -> None:
        for i in range(per_thread):
            e = event(i)
            append(spool, [e])
            made[t].append(e)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    return made


def test_threads_appending_at_once_each_event_once(tmp_path):
    spool = Spool(tmp_path, fsync="everysec")
    made = appended_from_threads(spool, 8, 300)
    got = drain(spool)
    assert sorted(e.id for e in got) == sorted(e.id for part in made for e in part)
    for part in made:  # each thread's events in the order it emitted them
        mine = {e.id for e in part}
        assert [e for e in got if e.id in mine] == part
    spool.close()


def test_a_closed_spool_refuses_appends_and_keeps_what_it_holds(tmp_path):
    spool = Spool(tmp_path, fsync="no")
    append(spool, [event()])
    spool.close()
    with pytest.raises(SpoolError, match="is closed; make a new Producer"):
        append(spool, [event()])
    assert inspect(tmp_path).count == 1


def test_a_torn_cursor_write_loses_one_slot_and_a_cursor_lost_whole_sends_again_never_skips(tmp_path):
    events = [event(i) for i in range(4)]
    spool = Spool(tmp_path, fsync="no")
    append(spool, events)
    spool.ack(spool.read(2))
    spool.close()
    cursor = tmp_path / "cursor"
    whole = cursor.read_bytes()
    cursor.write_bytes(b"000000000009" + whole[12:])  # the first slot torn
    again = Spool(tmp_path, fsync="no")
    assert drain(again, ack=False) == events[2:]  # the second slot has it
    again.close()
    cursor.write_bytes(b"garbage")  # both gone
    again = Spool(tmp_path, fsync="no")
    assert drain(again) == events  # all of them again: the journal skips the ids it has
    again.close()


def test_a_spool_sending_as_it_goes_takes_at_most_a_quarter_more_disk_than_max_bytes(tmp_path):
    limit = 256 << 10
    spool = Spool(tmp_path, max_bytes=limit, fsync="no")
    biggest = 0
    for _ in range(40):  # 40 x 100 events of ~600 B: ~2.4 MB through a 256 KiB spool
        append(spool, [event(body=b'{"pad":"%s"}' % (b"x" * 500)) for _ in range(100)])
        drain(spool)
        biggest = max(biggest, sum(f.stat().st_size for f in tmp_path.glob("*.seg")))
    assert biggest <= limit * 1.25 + 100 * 700
    spool.close()


def test_a_failed_write_raises_spoolerror_saying_what_to_do_and_leaves_whole_frames(tmp_path, monkeypatch):
    from bus.spool import layout

    # Appends copy into a segment allocated whole ahead, so the disk fills when the next one is allocated.
    spool = Spool(tmp_path, fsync="no", segment_bytes=1000)
    kept = [event(1)]
    append(spool, kept)
    real_fallocate = os.posix_fallocate

    def disk_full(fd, offset, length):
        real_fallocate(fd, offset, 7)  # part of it is taken, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout.os, "posix_fallocate", disk_full)
    with pytest.raises(SpoolError, match="No space left on device; nothing of this call was spooled: free disk space"):
        append(spool, [event(2, body=b'{"pad":"%s"}' % (b"x" * 1000))])
    monkeypatch.setattr(layout.os, "posix_fallocate", real_fallocate)
    kept.append(event(3))
    append(spool, kept[1:])
    spool.close()
    again = Spool(tmp_path, fsync="no")
    assert drain(again) == kept
    again.close()


def test_threads_appending_with_fsync_always_share_fsyncs_and_each_event_is_kept_once(tmp_path, monkeypatch):
    from bus.spool import store

    fsyncs = []
    real_fsync = os.fsync

    def counted(fd):
        fsyncs.append(fd)
        time.sleep(0.002)  # a disk's latency: threads arriving meanwhile wait for the next one
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", counted)
    spool = Spool(tmp_path, fsync="always", segment_bytes=4096)  # rotating under the threads too
    made = appended_from_threads(spool, 8, 50)
    assert len(fsyncs) < 8 * 50  # some appends returned on another thread's fsync
    spool.close()
    again = Spool(tmp_path, fsync="no")
    assert sorted(e.id for e in drain(again)) == sorted(e.id for part in made for e in part)
    again.close()


def test_a_spool_never_closed_leaves_zeros_after_its_frames_cut_off_quietly_on_reopening(tmp_path, caplog):
    # What a SIGKILL leaves: the segment allocated whole, its frames, then zeros (no close() cut it).
    events = [event(i) for i in range(5)]
    spool = Spool(tmp_path, fsync="no", segment_bytes=1 << 16)
    append(spool, events)
    (segment,) = tmp_path.glob("*.seg")
    assert segment.stat().st_size == 1 << 16
    spool.abandon()  # its files closed as a killed process's are, the lock included
    assert inspect(tmp_path).count == 5
    again = Spool(tmp_path, fsync="no")
    assert segment.stat().st_size == sum(len(frames.encode(e)) for e in events)
    assert "not a whole frame" not in caplog.text
    assert drain(again) == events
    again.close()


def test_an_append_larger_than_a_segment_gets_a_segment_of_its_size(tmp_path):
    spool = Spool(tmp_path, fsync="everysec", segment_bytes=1000)
    small, large = event(1), event(2, body=b'{"pad":"%s"}' % (b"x" * 5000))
    append(spool, [small])
    append(spool, [large])
    append(spool, [small])
    spool.close()
    assert sorted(f.stat().st_size for f in tmp_path.glob("*.seg")) == sorted(
        [len(frames.encode(small))] * 2 + [len(frames.encode(large))])
    again = Spool(tmp_path, fsync="no")
    assert [e.id for e in drain(again)] == [small.id, large.id, small.id]
    again.close()


def test_no_room_for_a_new_segment_at_opening_is_a_spoolerror_and_leaves_the_directory_unlocked(tmp_path, monkeypatch):
    from bus.spool import layout

    append_and_close = Spool(tmp_path, fsync="no")
    append(append_and_close, [event(1)])
    append_and_close.close()

    def disk_full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout.os, "posix_fallocate", disk_full)
    with pytest.raises(SpoolError, match=f"cannot open the spool {tmp_path}: .*No space left on device; free disk"):
        Spool(tmp_path, fsync="no")
    monkeypatch.undo()
    again = Spool(tmp_path, fsync="no")  # not locked by the failed one
    assert again.waiting().count == 1
    again.close()


def test_with_fsync_always_a_failed_fsync_is_a_spoolerror_saying_the_event_stays_spooled(tmp_path, monkeypatch):
    from bus.spool import store

    spool = Spool(tmp_path, fsync="always")

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store.os, "fsync", failing)
    kept = event(1)
    with pytest.raises(SpoolError, match="Input/output error; what this call spooled stays and will be sent"):
        append(spool, [kept])
    monkeypatch.undo()
    assert drain(spool) == [kept]
    spool.close()
