//! Fault injection for the supervision tests, compiled only with the
//! `test-hooks` feature (which `control`'s dev-dependency enables; release
//! builds never have it): a worker that receives one of these datagrams
//! panics or stalls, exactly as it would on a bug in the loop.

use std::time::Duration;

/// A datagram with exactly these bytes makes the receiving worker panic.
pub const PANIC_DATAGRAM: &[u8] = b"sfu-test-hook:panic-worker";

/// A datagram with exactly these bytes makes the receiving worker sleep
/// [`STALL_FOR`] inside its loop.
pub const STALL_DATAGRAM: &[u8] = b"sfu-test-hook:stall-worker";

/// How long [`STALL_DATAGRAM`] stalls a worker.
pub const STALL_FOR: Duration = Duration::from_secs(3);

/// Called by the worker loop on every received datagram.
pub(crate) fn on_datagram(datagram: &[u8]) {
    if datagram == PANIC_DATAGRAM {
        panic!("test hook: worker panic requested");
    }
    if datagram == STALL_DATAGRAM {
        std::thread::sleep(STALL_FOR);
    }
}
