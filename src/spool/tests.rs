use super::*;
use std::io::Write;

fn settings() -> SpoolSettings {
    SpoolSettings {
        segment_bytes: 1024,
        max_bytes: 1024 * 1024,
        max_unsynced: 1024 * 1024,
    }
}

fn payloads(spool: &Spool, from: u64) -> Vec<(u64, String)> {
    spool
        .read(from, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(n, p)| (n, String::from_utf8(p.to_vec()).unwrap()))
        .collect()
}

fn numbered(range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range.map(|n| (n, format!("reading-{n}"))).collect()
}

fn append_all(spool: &mut Spool, range: std::ops::Range<u64>) {
    for n in range {
        assert_eq!(spool.append(format!("reading-{n}").as_bytes()).unwrap(), n);
    }
}

/// A spool in `dir` holding `reading-<n>` for each of `range`, synced.
fn synced(dir: &Path, range: std::ops::Range<u64>) -> Spool {
    let mut spool = Spool::open(dir, settings()).unwrap();
    append_all(&mut spool, range);
    spool.sync().unwrap();
    spool
}

/// Appends `reading-<n>` until an append is refused: how many were taken, and why not more.
fn append_until_refused(spool: &mut Spool) -> (u64, SpoolError) {
    let mut accepted = 0;
    loop {
        match spool.append(format!("reading-{accepted}").as_bytes()) {
            Ok(_) => accepted += 1,
            Err(e) => return (accepted, e),
        }
    }
}

#[test]
fn records_are_read_in_order_once_synced_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    append_all(&mut spool, 0..5);
    assert!(
        payloads(&spool, 0).is_empty(),
        "nothing is durable before sync"
    );
    assert_eq!(spool.sync().unwrap(), 5);
    assert_eq!(payloads(&spool, 0), numbered(0..5));
    assert_eq!(payloads(&spool, 3), numbered(3..5));
}

#[test]
fn what_was_synced_is_there_after_reopening_and_numbering_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Closed again before it is reopened.
    drop(synced(dir.path(), 0..100));
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    assert!(spool.segments.len() > 1, "100 records roll 1 KiB segments");
    assert_eq!(payloads(&spool, 0), numbered(0..100));
    append_all(&mut spool, 100..103);
    spool.sync().unwrap();
    assert_eq!(payloads(&spool, 98), numbered(98..103));
}

#[test]
fn a_torn_or_corrupt_tail_is_passed_over_and_written_over() {
    for damage in [&b"\x20\x00\x00\x00\x01\x02"[..], &[0xff; 40][..]] {
        let dir = tempfile::tempdir().unwrap();
        let (path, whole) = {
            let spool = synced(dir.path(), 0..3);
            let last = spool.segments.last().unwrap();
            (last.path.clone(), last.bytes)
        };
        // Where the next record would have gone, over the room made ahead.
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(whole)).unwrap();
        file.write_all(damage).unwrap();
        drop(file);
        let mut spool = Spool::open(dir.path(), settings()).unwrap();
        assert_eq!(payloads(&spool, 0), numbered(0..3));
        append_all(&mut spool, 3..4);
        spool.sync().unwrap();
        assert_eq!(payloads(&spool, 0), numbered(0..4));
        drop(spool);
        let spool = Spool::open(dir.path(), settings()).unwrap();
        assert_eq!(payloads(&spool, 0), numbered(0..4));
    }
}

#[test]
fn a_segment_is_made_at_full_size_in_zeros_and_its_room_is_not_taken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let spool = synced(dir.path(), 0..3);
        spool.segments[0].path.clone()
    };
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(size, settings().segment_bytes, "made at full size");
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "room kept");
    assert_eq!(payloads(&spool, 0), numbered(0..3));
    append_all(&mut spool, 3..5);
    spool.sync().unwrap();
    assert_eq!(payloads(&spool, 0), numbered(0..5));
    drop(spool);
    let spool = Spool::open(dir.path(), settings()).unwrap();
    assert_eq!(
        payloads(&spool, 0),
        numbered(0..5),
        "appends after reopening went over the room"
    );
}

fn spare_size(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir.join("spare")).ok().map(|m| m.len())
}

fn wait_for_spare(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spare_size(dir) != Some(settings().segment_bytes) {
        assert!(
            std::time::Instant::now() < deadline,
            "no spare segment made"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_new_spool_has_its_first_segment_and_the_spare_made_before_it_takes_anything() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    assert_eq!(spare_size(dir.path()), Some(settings().segment_bytes));
    append_all(&mut spool, 0..100);
    spool.sync().unwrap();
    assert!(spool.segments.len() >= 2, "100 records roll 1 KiB segments");
    assert!(
        std::fs::metadata(&spool.segments[1].path).unwrap().len() >= settings().segment_bytes,
        "the second segment is the spare, made at full size"
    );
    assert_eq!(payloads(&spool, 0), numbered(0..100));
}

#[test]
fn with_nothing_released_the_next_spare_is_made_once_the_current_segment_is_half_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    let mut next = 0;
    while spool.segments.len() < 2 {
        append_all(&mut spool, next..next + 1);
        next += 1;
    }
    assert_eq!(
        spare_size(dir.path()),
        Some(settings().segment_bytes),
        "an append does not touch files"
    );
    spool.sync().unwrap();
    assert_eq!(
        spare_size(dir.path()),
        None,
        "the spare became the second segment when a sync first wrote to it"
    );
    while spool.segments[1].bytes < settings().segment_bytes / 2 {
        append_all(&mut spool, next..next + 1);
        next += 1;
        if spool.segments[1].bytes < settings().segment_bytes / 2 {
            assert_eq!(
                spare_size(dir.path()),
                None,
                "none while less than half full"
            );
        }
    }
    wait_for_spare(dir.path());
}

#[test]
fn a_released_segment_becomes_the_spare_and_its_old_records_are_never_read_as_new() {
    // Records of one size, so that the old records of the reused file start
    // exactly where the new ones end: whole, with sound checksums.
    fn append_sized(spool: &mut Spool, n: u64) {
        assert_eq!(spool.append(format!("{n:08}").as_bytes()).unwrap(), n);
    }
    fn numbers(spool: &Spool) -> Vec<u64> {
        payloads(spool, 0).into_iter().map(|(n, _)| n).collect()
    }
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0;
    {
        let mut spool = Spool::open(dir.path(), settings()).unwrap();
        while spool.segments.len() < 2 {
            append_sized(&mut spool, next);
            next += 1;
        }
        spool.sync().unwrap();
        let first = spool.segments[0].path.clone();
        spool.release(spool.segments[1].first).unwrap();
        assert!(!first.exists(), "the released segment was moved");
        let reused = std::fs::read(dir.path().join("spare")).unwrap();
        assert!(
            reused.windows(8).any(|w| w == b"00000000"),
            "the spare is the released segment, its records still in it"
        );
        let second = spool.segments.len();
        while spool.segments.len() == second {
            append_sized(&mut spool, next);
            next += 1;
        }
        append_sized(&mut spool, next);
        next += 1;
        spool.sync().unwrap();
        let unreleased: Vec<u64> = (spool.released()..next).collect();
        assert_eq!(numbers(&spool), unreleased);
        let mut cursor = Cursor::at(dir.path(), unreleased[0]);
        let read: Vec<u64> = cursor
            .read(spool.durable(), usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(read, unreleased);
    }
    let spool = Spool::open(dir.path(), settings()).unwrap();
    let last = spool.segments.last().unwrap();
    assert!(
        std::fs::metadata(&last.path).unwrap().len() >= settings().segment_bytes,
        "the reused segment keeps its room: nothing cut off"
    );
    assert_eq!(
        spool.next(),
        next,
        "numbering goes on after the new records only"
    );
    assert_eq!(
        numbers(&spool),
        (spool.released()..next).collect::<Vec<_>>()
    );
}

#[test]
fn an_empty_record_numbered_zero_is_not_mistaken_for_room() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(dir.path(), settings()).unwrap();
        assert_eq!(spool.append(b"").unwrap(), 0);
        assert_eq!(spool.append(b"after").unwrap(), 1);
        spool.sync().unwrap();
    }
    let spool = Spool::open(dir.path(), settings()).unwrap();
    let read: Vec<(u64, Vec<u8>)> = spool
        .read(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(n, p)| (n, p.to_vec()))
        .collect();
    assert_eq!(read, vec![(0, Vec::new()), (1, b"after".to_vec())]);
}

#[test]
fn a_record_whose_checksum_fails_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let (path, end) = {
        let spool = synced(dir.path(), 0..3);
        (spool.segments[0].path.clone(), spool.segments[0].bytes)
    };
    // Flip the last byte of the third record's payload.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = end as usize - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let spool = Spool::open(dir.path(), settings()).unwrap();
    assert_eq!(payloads(&spool, 0), numbered(0..2));
}

#[test]
fn a_full_spool_refuses_appends_until_kafka_acknowledges_enough() {
    let dir = tempfile::tempdir().unwrap();
    let small = SpoolSettings {
        segment_bytes: 200,
        max_bytes: 1_000,
        max_unsynced: 1_000,
    };
    let mut spool = Spool::open(dir.path(), small).unwrap();
    let (accepted, refusal) = append_until_refused(&mut spool);
    assert!(
        matches!(refusal, SpoolError::Full { max: 1_000, .. }),
        "{refusal}"
    );
    assert!(accepted > 10, "{accepted}");
    spool.sync().unwrap();
    assert_eq!(
        payloads(&spool, 0),
        numbered(0..accepted),
        "nothing dropped"
    );
    spool.release(accepted).unwrap();
    assert!(spool.held_bytes() < 200, "{}", spool.held_bytes());
    assert_eq!(spool.append(b"after").unwrap(), accepted);
}

#[test]
fn released_records_stay_released_and_their_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = synced(dir.path(), 0..100);
        let before = spool.segments.len();
        spool.release(60).unwrap();
        assert!(spool.segments.len() < before);
        assert!(spool.segments[0].first <= 60);
        // Not durable yet: a release cannot pass what was synced.
        append_all(&mut spool, 100..101);
        spool.release(1_000).unwrap();
        assert_eq!(spool.released(), 100);
    }
    let spool = Spool::open(dir.path(), settings()).unwrap();
    assert_eq!(spool.released(), 100);
    assert!(
        payloads(&spool, 0).iter().all(|(n, _)| *n >= 100),
        "released records are not read again"
    );
    assert!(spool.durable() >= 100);
}

#[test]
fn a_record_too_large_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    let error = spool.append(&vec![0u8; MAX_RECORD + 1]).unwrap_err();
    assert!(matches!(error, SpoolError::TooLarge(_)), "{error}");
}

#[test]
fn a_cursor_reads_each_durable_record_once_in_order_across_segments_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    let mut cursor = Cursor::at(dir.path(), 0);
    let mut seen = Vec::new();
    let mut next = 0u64;
    for _ in 0..20 {
        append_all(&mut spool, next..next + 50);
        let durable = spool.sync().unwrap();
        // One more appended after the sync: in memory, never durable yet.
        append_all(&mut spool, next + 50..next + 51);
        next += 51;
        for (number, payload) in cursor.read(durable, 7).unwrap() {
            seen.push((number, String::from_utf8(payload.to_vec()).unwrap()));
        }
        while cursor.next_number() < durable {
            for (number, payload) in cursor.read(durable, 1000).unwrap() {
                seen.push((number, String::from_utf8(payload.to_vec()).unwrap()));
            }
        }
        assert_eq!(cursor.next_number(), durable);
    }
    let numbers: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
    assert!(numbers.len() >= 1000, "{}", numbers.len());
    assert_eq!(seen, numbered(0..seen.len() as u64));
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segments > 1, "the test must cross segments: {segments}");
}

#[test]
fn a_cursor_started_mid_queue_begins_at_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    append_all(&mut spool, 0..300);
    let durable = spool.sync().unwrap();
    let mut cursor = Cursor::at(dir.path(), 217);
    let read: Vec<u64> = cursor
        .read(durable, 5)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(read, vec![217, 218, 219, 220, 221]);
}

#[test]
fn a_sync_split_in_two_halves_makes_records_durable_only_after_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), settings()).unwrap();
    append_all(&mut spool, 0..10);
    let pending = spool.begin_sync().unwrap().expect("something to sync");
    append_all(&mut spool, 10..12);
    assert_eq!(spool.durable(), 0);
    let upto = pending.fsync().unwrap();
    spool.finish_sync(upto);
    assert_eq!(spool.durable(), 10);
    assert_eq!(spool.sync().unwrap(), 12);
    assert!(spool.begin_sync().unwrap().is_none());
}

#[test]
fn a_queue_open_in_one_place_is_refused_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), settings()).unwrap();
    match Spool::open(dir.path(), settings()) {
        Err(SpoolError::InUse(at)) => assert_eq!(at, dir.path()),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("opened twice"),
    }
    drop(spool);
    Spool::open(dir.path(), settings()).expect("free again once closed");
}

#[test]
fn appends_wait_in_memory_only_up_to_a_bound_and_are_taken_again_once_a_sync_wrote_them() {
    let dir = tempfile::tempdir().unwrap();
    let bounded = SpoolSettings {
        max_unsynced: 500,
        ..settings()
    };
    let mut spool = Spool::open(dir.path(), bounded).unwrap();
    let (accepted, refusal) = append_until_refused(&mut spool);
    assert!(matches!(refusal, SpoolError::Behind(_)), "{refusal}");
    assert!(accepted >= 10, "{accepted}");
    let pending = spool.begin_sync().unwrap().expect("something to sync");
    assert_eq!(
        spool.append(b"while the sync writes").unwrap(),
        accepted,
        "what a sync took no longer counts against the bound"
    );
    spool.finish_sync(pending.fsync().unwrap());
    assert_eq!(spool.sync().unwrap(), accepted + 1);
    let mut expected = numbered(0..accepted);
    expected.push((accepted, "while the sync writes".to_string()));
    assert_eq!(payloads(&spool, 0), expected, "nothing dropped");
}

#[test]
fn the_released_number_is_written_over_in_place_and_a_torn_one_sends_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("released");
    write_released(dir.path(), 7).unwrap();
    let first = std::fs::read_to_string(&file).unwrap();
    write_released(dir.path(), 123_456).unwrap();
    let second = std::fs::read_to_string(&file).unwrap();
    assert_eq!(first.len(), second.len(), "{first:?} then {second:?}");
    assert!(second.starts_with("00000000000000123456 "), "{second:?}");
    assert_eq!(read_released(dir.path()).unwrap(), 123_456);

    // A write torn between two numbers: its checksum no longer matches.
    let torn = format!("{}{}", &second[..18], &first[18..]);
    std::fs::write(&file, torn).unwrap();
    assert_eq!(read_released(dir.path()).unwrap(), 0);

    // The older format: the number alone, and a rename's leftover.
    std::fs::write(&file, "4242").unwrap();
    std::fs::write(dir.path().join("released.tmp"), "4243").unwrap();
    assert_eq!(read_released(dir.path()).unwrap(), 4242);
    let _spool = Spool::open(dir.path(), settings()).unwrap();
    assert!(!dir.path().join("released.tmp").exists());
}

#[test]
fn a_torn_released_number_starts_the_queue_again_at_its_oldest_record_still_held() {
    let dir = tempfile::tempdir().unwrap();
    let held = {
        let mut spool = synced(dir.path(), 0..100);
        spool.release(60).unwrap();
        spool.segments[0].first
    };
    assert!(held > 0, "a segment was deleted");
    std::fs::write(
        dir.path().join("released"),
        "00000000000000000060 0badcafe\n",
    )
    .unwrap();
    let spool = Spool::open(dir.path(), settings()).unwrap();
    assert_eq!(spool.released(), held);
    let mut cursor = Cursor::at(dir.path(), spool.released());
    let read: Vec<u64> = cursor
        .read(spool.durable(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(read, (held..100).collect::<Vec<_>>());
}
