//! DTLS-SRTP handshakes between two `DtlsSession`s over an in-memory network:
//! key agreement per certificate type and SRTP profile, fingerprint checks,
//! retransmission after loss, and hostile datagrams.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sfu_core::dtls::{
    DTLS_MTU, DtlsCert, DtlsError, DtlsRole, DtlsSession, DtlsState, Fingerprint, SrtpKeys,
};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};

/// A client and a server session and the datagrams in flight between them.
struct Pair {
    server: DtlsSession,
    client: DtlsSession,
    now: Instant,
    /// Datagrams delivered so far, per direction.
    to_server: usize,
    to_client: usize,
}

impl Pair {
    fn new(server_cert: &DtlsCert, client_cert: &DtlsCert) -> Self {
        Self::with_expected(
            server_cert,
            client_cert,
            client_cert.fingerprint().clone(),
            server_cert.fingerprint().clone(),
        )
    }

    /// `server_expects` is the fingerprint the server checks the client's
    /// certificate against, and vice versa.
    fn with_expected(
        server_cert: &DtlsCert,
        client_cert: &DtlsCert,
        server_expects: Fingerprint,
        client_expects: Fingerprint,
    ) -> Self {
        let now = Instant::now();
        Self {
            server: DtlsSession::new(server_cert, DtlsRole::Server, server_expects, now)
                .expect("server session"),
            client: DtlsSession::new(client_cert, DtlsRole::Client, client_expects, now)
                .expect("client session"),
            now,
            to_server: 0,
            to_client: 0,
        }
    }

    /// Moves every queued datagram to the other side until both are quiet,
    /// letting `drop_to_client(n)` / `drop_to_server(n)` discard the n-th
    /// datagram of that direction. Returns the errors each side reported.
    fn pump(
        &mut self,
        mut drop_to_client: impl FnMut(usize) -> bool,
        mut drop_to_server: impl FnMut(usize) -> bool,
    ) -> (Vec<DtlsError>, Vec<DtlsError>) {
        let mut buf = [0u8; DTLS_MTU];
        let (mut server_errors, mut client_errors) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            let mut moved = false;
            while let Some(n) = self.client.poll_datagram(&mut buf) {
                assert!(n <= DTLS_MTU);
                moved = true;
                self.to_server += 1;
                if !drop_to_server(self.to_server)
                    && let Err(e) = self.server.handle_datagram(&buf[..n], self.now)
                {
                    server_errors.push(e);
                }
            }
            while let Some(n) = self.server.poll_datagram(&mut buf) {
                assert!(n <= DTLS_MTU);
                moved = true;
                self.to_client += 1;
                if !drop_to_client(self.to_client)
                    && let Err(e) = self.client.handle_datagram(&buf[..n], self.now)
                {
                    client_errors.push(e);
                }
            }
            if !moved {
                break;
            }
        }
        (server_errors, client_errors)
    }

    fn run(&mut self) -> (Vec<DtlsError>, Vec<DtlsError>) {
        self.pump(|_| false, |_| false)
    }
}

fn ecdsa() -> DtlsCert {
    DtlsCert::generate().expect("ECDSA certificate")
}

/// Checks the two sides' keys mirror each other and protect/unprotect works
/// across them in both directions.
fn assert_keys_work(server: &SrtpKeys, client: &SrtpKeys, profile: Profile) {
    assert_eq!(server.profile, profile);
    assert_eq!(client.profile, profile);
    let master_len = profile.key_len() + profile.salt_len();
    assert_eq!(server.local_master.len(), master_len);
    assert_eq!(server.remote_master.len(), master_len);
    assert_eq!(server.local_master, client.remote_master);
    assert_eq!(server.remote_master, client.local_master);
    assert_ne!(server.local_master, server.remote_master);

    let context = |master: &[u8]| {
        let (key, salt) = master.split_at(profile.key_len());
        SrtpContext::new(profile, key, salt, SrtpConfig::default()).expect("key lengths")
    };
    for (tx, rx) in [(server, client), (client, server)] {
        let mut protect = context(&tx.local_master);
        let mut unprotect = context(&rx.remote_master);
        let mut packet = vec![0u8; 200];
        packet[0] = 0x80;
        packet[1] = 96;
        packet[2..4].copy_from_slice(&7u16.to_be_bytes());
        packet[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        packet[12..100].fill(0x5a);
        let plain = packet[..100].to_vec();
        let len = protect.protect_rtp(&mut packet, 100).expect("protect");
        assert_ne!(packet[12..100], plain[12..]);
        let out = unprotect
            .unprotect_rtp(&mut packet[..len])
            .expect("unprotect");
        assert_eq!(packet[..out], plain[..]);
        // And the other direction's key does not open it.
        let mut wrong = context(&tx.remote_master);
        let len = protect.protect_rtp(&mut packet, 100).expect("protect");
        assert!(wrong.unprotect_rtp(&mut packet[..len]).is_err());
    }
}

fn connect_and_check(server_cert: &DtlsCert, client_cert: &DtlsCert, profile: Profile) {
    let mut pair = Pair::new(server_cert, client_cert);
    let (server_errors, client_errors) = pair.run();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert!(client_errors.is_empty(), "{client_errors:?}");
    assert_eq!(pair.server.state(), DtlsState::Connected);
    assert_eq!(pair.client.state(), DtlsState::Connected);
    assert_eq!(pair.server.poll_timeout(), None);
    assert_eq!(pair.client.poll_timeout(), None);
    let server_keys = pair.server.take_keys().expect("server keys");
    let client_keys = pair.client.take_keys().expect("client keys");
    assert_keys_work(&server_keys, &client_keys, profile);
    assert!(
        pair.server.take_keys().is_none(),
        "keys are handed out once"
    );
    assert!(
        pair.client.take_keys().is_none(),
        "keys are handed out once"
    );
}

#[test]
fn ecdsa_client_and_server_agree_on_gcm_keys() {
    connect_and_check(&ecdsa(), &ecdsa(), Profile::AeadAes128Gcm);
}

#[test]
fn rsa_client_certificate_is_accepted() {
    let rsa = DtlsCert::generate_rsa().expect("RSA certificate");
    connect_and_check(&ecdsa(), &rsa, Profile::AeadAes128Gcm);
}

#[test]
fn rsa_server_certificate_is_accepted() {
    let rsa = DtlsCert::generate_rsa().expect("RSA certificate");
    connect_and_check(&rsa, &ecdsa(), Profile::AeadAes128Gcm);
}

#[test]
fn client_offering_only_aes_cm_gets_aes_cm() {
    let client =
        DtlsCert::generate_with_profiles(&[Profile::Aes128CmHmacSha1_80]).expect("certificate");
    connect_and_check(&ecdsa(), &client, Profile::Aes128CmHmacSha1_80);
}

#[test]
fn server_offering_only_aes_cm_gets_aes_cm() {
    let server =
        DtlsCert::generate_with_profiles(&[Profile::Aes128CmHmacSha1_80]).expect("certificate");
    connect_and_check(&server, &ecdsa(), Profile::Aes128CmHmacSha1_80);
}

#[test]
fn no_common_srtp_profile_fails() {
    let server = DtlsCert::generate_with_profiles(&[Profile::AeadAes128Gcm]).expect("cert");
    let client = DtlsCert::generate_with_profiles(&[Profile::Aes128CmHmacSha1_80]).expect("cert");
    let mut pair = Pair::new(&server, &client);
    let (server_errors, client_errors) = pair.run();
    // OpenSSL's server completes the handshake without use_srtp; the key
    // export then refuses on both sides.
    assert_eq!(pair.server.state(), DtlsState::Failed, "{server_errors:?}");
    assert_eq!(pair.client.state(), DtlsState::Failed, "{client_errors:?}");
    assert!(pair.server.take_keys().is_none());
    assert!(pair.client.take_keys().is_none());
    assert!(
        server_errors
            .iter()
            .chain(&client_errors)
            .any(|e| e.as_str() == "no_srtp_profile"),
        "{server_errors:?} {client_errors:?}"
    );
    assert!(DtlsCert::generate_with_profiles(&[]).is_err());
}

#[test]
fn wrong_client_fingerprint_fails_on_server() {
    let (server_cert, client_cert, stranger) = (ecdsa(), ecdsa(), ecdsa());
    let mut pair = Pair::with_expected(
        &server_cert,
        &client_cert,
        stranger.fingerprint().clone(),
        server_cert.fingerprint().clone(),
    );
    let (server_errors, _) = pair.run();
    assert_eq!(pair.server.state(), DtlsState::Failed);
    assert_eq!(server_errors[0], DtlsError::FingerprintMismatch);
    assert_eq!(server_errors[0].as_str(), "fingerprint_mismatch");
    assert!(pair.server.take_keys().is_none());
    // The server's close_notify reaches the client, which stops too.
    assert_eq!(pair.client.state(), DtlsState::Failed);
    assert!(pair.client.take_keys().is_none());
}

#[test]
fn wrong_server_fingerprint_fails_on_client() {
    let (server_cert, client_cert) = (ecdsa(), ecdsa());
    let mut wrong = server_cert.fingerprint().clone();
    wrong.value[31] ^= 1;
    let mut pair = Pair::with_expected(
        &server_cert,
        &client_cert,
        client_cert.fingerprint().clone(),
        wrong,
    );
    let (_, client_errors) = pair.run();
    assert_eq!(pair.client.state(), DtlsState::Failed);
    assert!(client_errors.contains(&DtlsError::FingerprintMismatch));
    assert!(pair.client.take_keys().is_none());
}

#[test]
fn server_flight_lost_is_retransmitted() {
    let (server_cert, client_cert) = (ecdsa(), ecdsa());
    let mut pair = Pair::new(&server_cert, &client_cert);
    // Lose everything the server sends in its first flight.
    pair.pump(|_| true, |_| false);
    let first_flight = pair.to_client;
    assert!(first_flight >= 1);
    assert_eq!(pair.client.state(), DtlsState::Handshaking);
    let deadline = pair.server.poll_timeout().expect("server timer armed");
    assert_eq!(deadline, pair.now + Duration::from_secs(1));

    // Early: nothing.
    pair.server
        .handle_timeout(pair.now + Duration::from_millis(900))
        .expect("early timer");
    let mut buf = [0u8; DTLS_MTU];
    assert!(pair.server.poll_datagram(&mut buf).is_none());

    // OpenSSL's timer runs on the wall clock: really wait for it.
    std::thread::sleep(Duration::from_millis(1050));
    pair.now += Duration::from_millis(1050);
    pair.server.handle_timeout(pair.now).expect("server timer");
    // Measured: OpenSSL resends its flight from the memory transport when
    // called after its timer expired.
    let (server_errors, client_errors) = pair.pump(|_| false, |_| false);
    assert!(
        pair.to_client > first_flight,
        "server retransmitted its flight"
    );
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert!(client_errors.is_empty(), "{client_errors:?}");
    assert_eq!(pair.server.state(), DtlsState::Connected);
    assert_eq!(pair.client.state(), DtlsState::Connected);
    let (s, c) = (pair.server.take_keys(), pair.client.take_keys());
    assert_keys_work(&s.expect("keys"), &c.expect("keys"), Profile::AeadAes128Gcm);
}

#[test]
fn client_retransmission_of_finished_is_answered_after_connect() {
    let (server_cert, client_cert) = (ecdsa(), ecdsa());
    let mut pair = Pair::new(&server_cert, &client_cert);
    // Deliver the client's flights, lose the server's last flight
    // (ChangeCipherSpec + Finished): the server is connected, the client not.
    let mut server_flights = 0;
    pair.pump(
        |_| {
            server_flights += 1;
            server_flights > 1
        },
        |_| false,
    );
    assert_eq!(pair.server.state(), DtlsState::Connected);
    assert_eq!(pair.client.state(), DtlsState::Handshaking);
    let lost = pair.to_client;

    std::thread::sleep(Duration::from_millis(1050));
    pair.now += Duration::from_millis(1050);
    pair.client.handle_timeout(pair.now).expect("client timer");
    let (server_errors, client_errors) = pair.run();
    assert!(pair.to_client > lost, "server answered the retransmission");
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert!(client_errors.is_empty(), "{client_errors:?}");
    assert_eq!(pair.client.state(), DtlsState::Connected);
    let (s, c) = (pair.server.take_keys(), pair.client.take_keys());
    assert_keys_work(&s.expect("keys"), &c.expect("keys"), Profile::AeadAes128Gcm);
}

#[test]
fn hostile_datagrams_never_panic() {
    let (server_cert, client_cert) = (ecdsa(), ecdsa());
    let mut rng = StdRng::seed_from_u64(0x5eed_d715);
    let now = Instant::now();
    let mut buf = [0u8; DTLS_MTU];

    // Real handshake datagrams to mutate: the ClientHello and the server's
    // first flight.
    let mut client_hello = Vec::new();
    {
        let mut probe = DtlsSession::new(
            &client_cert,
            DtlsRole::Client,
            server_cert.fingerprint().clone(),
            now,
        )
        .expect("client");
        while let Some(n) = probe.poll_datagram(&mut buf) {
            client_hello = buf[..n].to_vec();
        }
    }
    let mut server_flight = Vec::new();
    {
        let mut probe = DtlsSession::new(
            &server_cert,
            DtlsRole::Server,
            client_cert.fingerprint().clone(),
            now,
        )
        .expect("server");
        probe
            .handle_datagram(&client_hello, now)
            .expect("ClientHello");
        while let Some(n) = probe.poll_datagram(&mut buf) {
            server_flight.push(buf[..n].to_vec());
        }
    }
    assert!(!client_hello.is_empty() && !server_flight.is_empty());

    let new_server = || {
        DtlsSession::new(
            &server_cert,
            DtlsRole::Server,
            client_cert.fingerprint().clone(),
            now,
        )
        .expect("server")
    };
    let new_client = || {
        let mut c = DtlsSession::new(
            &client_cert,
            DtlsRole::Client,
            server_cert.fingerprint().clone(),
            now,
        )
        .expect("client");
        while c.poll_datagram(&mut [0u8; DTLS_MTU]).is_some() {}
        c
    };

    // A connected pair receives hostile datagrams too.
    let mut connected = Pair::new(&server_cert, &client_cert);
    connected.run();
    assert_eq!(connected.server.state(), DtlsState::Connected);

    let mut server = new_server();
    let mut client = new_client();
    let mut malformed = 0;
    let mut failed_sessions = 0;
    for i in 0..10_000 {
        let datagram: Vec<u8> = match i % 4 {
            // Random bytes, random length (some beyond the size cap).
            0 => {
                let len = rng.random_range(0..2200);
                (0..len).map(|_| rng.random()).collect()
            }
            // Random bytes behind a plausible record header.
            1 => {
                let len = rng.random_range(0..300u16);
                let mut d = vec![rng.random_range(20..24), 0xfe, 0xfd];
                d.extend((0..8).map(|_| rng.random::<u8>()));
                d.extend_from_slice(&len.to_be_bytes());
                d.extend((0..len).map(|_| rng.random::<u8>()));
                d
            }
            // A mutated or truncated ClientHello.
            2 => mutate(&mut rng, &client_hello),
            // A mutated or truncated server flight datagram.
            _ => {
                let pick = rng.random_range(0..server_flight.len());
                mutate(&mut rng, &server_flight[pick])
            }
        };
        let results = [
            server.handle_datagram(&datagram, now),
            client.handle_datagram(&datagram, now),
            connected.server.handle_datagram(&datagram, now),
            connected.client.handle_datagram(&datagram, now),
        ];
        for r in &results {
            if let Err(e) = r {
                assert!(!e.as_str().is_empty());
                if *e == DtlsError::Malformed {
                    malformed += 1;
                }
            }
        }
        for s in [&mut server, &mut client] {
            s.handle_timeout(now + Duration::from_secs(5)).ok();
            while s.poll_datagram(&mut buf).is_some() {}
        }
        if server.state() == DtlsState::Failed {
            failed_sessions += 1;
            server = new_server();
        }
        if client.state() == DtlsState::Failed {
            failed_sessions += 1;
            client = new_client();
        }
        for s in [&mut connected.server, &mut connected.client] {
            while s.poll_datagram(&mut buf).is_some() {}
        }
    }
    // The record check refuses most random input before OpenSSL sees it.
    assert!(malformed > 10_000, "{malformed}");
    // Hostile handshake messages do fail sessions (and nothing panicked).
    assert!(failed_sessions > 0);
    // Unauthenticated garbage does not tear down a connected association.
    assert_eq!(connected.server.state(), DtlsState::Connected);
    assert_eq!(connected.client.state(), DtlsState::Connected);
}

/// Flips, truncates, extends or overwrites bytes of `original`.
fn mutate(rng: &mut StdRng, original: &[u8]) -> Vec<u8> {
    let mut d = original.to_vec();
    match rng.random_range(0..4) {
        0 => d.truncate(rng.random_range(0..=d.len())),
        1 => {
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..d.len());
                d[i] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            let i = rng.random_range(0..d.len());
            d[i] = rng.random();
            // Keep the record length consistent so OpenSSL parses it.
            if d.len() >= 13 {
                let len = (d.len() - 13) as u16;
                d[11..13].copy_from_slice(&len.to_be_bytes());
            }
        }
        _ => {
            let extra = rng.random_range(1..64);
            d.extend((0..extra).map(|_| rng.random::<u8>()));
        }
    }
    d
}

#[test]
fn oversized_and_queue_bounds() {
    let (server_cert, client_cert) = (ecdsa(), ecdsa());
    let now = Instant::now();
    let mut server = DtlsSession::new(
        &server_cert,
        DtlsRole::Server,
        client_cert.fingerprint().clone(),
        now,
    )
    .expect("server");
    let mut big = vec![0u8; 2100];
    big[0] = 22;
    big[1] = 0xfe;
    big[2] = 0xfd;
    big[11..13].copy_from_slice(&((2100 - 13) as u16).to_be_bytes());
    assert_eq!(server.handle_datagram(&big, now), Err(DtlsError::Malformed));
    assert_eq!(server.state(), DtlsState::Handshaking);
    // A malformed datagram does not start the handshake timer.
    assert_eq!(server.poll_timeout(), None);
}
