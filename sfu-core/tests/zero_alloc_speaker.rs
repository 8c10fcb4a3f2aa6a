//! A counting global allocator over 100,000 audio levels and 1,000 decisions
//! in a room of eight speakers: once the speakers are added, recording,
//! deciding and ordering allocate nothing.

mod counting;

use std::time::Instant;

use sfu_core::speaker::{FRAME, LastN, SpeakerDetector};
use sfu_core::wire::rtp::AudioLevel;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const SPEAKERS: u64 = 8;
const RECORDS: u64 = 100_000;
const POLLS: u64 = 1_000;

#[test]
fn record_and_poll_allocate_nothing() {
    let t0 = Instant::now();
    let mut detector = SpeakerDetector::new(SPEAKERS as usize, t0);
    for id in 0..SPEAKERS {
        detector.add(id).unwrap();
    }
    let mut video = LastN::new(4);
    let mut audio = LastN::new(3);
    let mut out = [0u64; 8];

    let before = counting::allocations();
    let mut now = t0;
    let (mut polls, mut changes) = (0, 0);
    for i in 0..RECORDS {
        let id = i % SPEAKERS;
        if id == 0 {
            now += FRAME;
        }
        // Speaker (i / 12,000) % 8 talks; the others sit at -70 dBov.
        let talker = (i / 12_000) % SPEAKERS;
        let level = if id == talker {
            20 + (i % 11) as u8
        } else {
            70
        };
        detector
            .record(
                id,
                AudioLevel {
                    voice: id == talker,
                    level,
                },
                now,
            )
            .unwrap();
        if i % (RECORDS / POLLS) == RECORDS / POLLS - 1 {
            // Every 100 records: 12.5 frames, so ~every other poll decides.
            polls += 1;
            if detector.poll(now).is_some() {
                changes += 1;
            }
            video.update_recent(&detector, 3);
            audio.update_loudest(&detector, 3);
            detector.active(&mut out);
        }
    }
    let allocations = counting::allocations() - before;
    assert_eq!(polls, POLLS);
    assert!(changes >= 7, "the talkers took over: {changes}");
    assert_eq!(allocations, 0, "allocations on the speaker path");
}
