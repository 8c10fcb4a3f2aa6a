//! DTLS record input into the node's DTLS session (`sfu_core::dtls`): a
//! server session (the node's usual role) or a client session that has sent
//! its ClientHello, fed the input's datagrams in order, with its output
//! drained and its retransmission timer run between them.
//!
//! Layout: `mode`, then datagrams as `len:2 bytes` (an exhausted input
//! ends the last one early). `mode` bit 0 picks the client role, bit 1 runs
//! the timers.
#![no_main]
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sfu_core::dtls::{DTLS_MTU, DtlsCert, DtlsRole, DtlsSession};
use sfu_fuzz::Reader;

/// Most datagrams per input (the session queues at most 32).
const MAX_DATAGRAMS: usize = 48;

/// The node's certificate and the peer's, made once (key generation is slow).
fn certs() -> &'static (DtlsCert, DtlsCert) {
    static CERTS: OnceLock<(DtlsCert, DtlsCert)> = OnceLock::new();
    CERTS.get_or_init(|| {
        (
            DtlsCert::generate().expect("ECDSA certificate"),
            DtlsCert::generate().expect("ECDSA certificate"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (ours, theirs) = certs();
    let mut r = Reader::new(data);
    let mode = r.u8();
    let role = if mode & 1 == 0 {
        DtlsRole::Server
    } else {
        DtlsRole::Client
    };
    let mut now = Instant::now();
    let Ok(mut session) = DtlsSession::new(ours, role, theirs.fingerprint().clone(), now) else {
        return;
    };
    let mut out = [0u8; DTLS_MTU];
    while session.poll_datagram(&mut out).is_some() {}
    let mut datagrams = 0;
    while !r.is_empty() && datagrams < MAX_DATAGRAMS {
        datagrams += 1;
        let len = usize::from(r.u16());
        let datagram = r.take(len);
        let _ = session.handle_datagram(datagram, now);
        while session.poll_datagram(&mut out).is_some() {}
        if mode & 2 != 0 {
            now += Duration::from_millis(500);
            if session.poll_timeout().is_some_and(|t| t <= now) {
                let _ = session.handle_timeout(now);
            }
        }
        let _ = (session.state(), session.take_keys());
    }
});
