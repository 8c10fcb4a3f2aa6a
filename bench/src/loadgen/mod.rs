//! `sfu-loadgen`: publishers and subscribers of SRTP media against a node,
//! set up through its control API, with loss, latency, integrity and CPU
//! figures at the end.
//!
//! # Run
//! [`run`] builds a [`plan::Plan`] (who publishes which stream, who receives
//! what), binds one UDP socket per peer ([`packet_path::io::BatchSocket`] on
//! `--bind`:0, GSO on for publishers, GRO on for receivers), creates the rooms
//! and endpoints through the control API ([`api`]), then runs for
//! `--duration`:
//!
//! * **one sender thread** (`lg-send`) walks a min-heap of due times, one
//!   entry per stream, sleeping until the earliest. Stream `n`'s unit `u`
//!   (a video frame or an audio packet) is due at
//!   `offset_n + u * 1e9 / rate` ns after the run's origin, computed from `u`
//!   so there is no drift ([`media::Cadence`]); the first units of the
//!   streams of one kind are spread evenly over one period. Video runs at
//!   `--video-fps` (30) frames per second. A video frame is
//!   `ceil(bytes / 1200)` packets with consecutive sequence numbers, one
//!   timestamp and the marker bit on the last; its full-size packets leave in
//!   one GSO train (equal segments), a shorter last packet in the same
//!   `sendmmsg` as a separate datagram. Audio is one 160-byte packet every
//!   20 ms. Each payload starts with a [`payload::Marker`] (publisher index,
//!   stream sequence number, send time) followed by a checkable pattern, and
//!   is protected in place with [`sfu_core::srtp::SrtpContext::protect_rtp`].
//!   A late sender does not skip units: it catches up and reports its worst
//!   lateness.
//! * **receive threads** (`lg-recv-N`, default 1 per receiving peer up to 4
//!   of them, else 2) each own a share of the receiving sockets. A thread with
//!   one socket that no sender shares blocks in `recvmmsg` (with a read
//!   timeout); otherwise the sockets are non-blocking and swept round-robin,
//!   with a short sleep (`--idle-sleep-us`) after a sweep that found nothing.
//!   Every datagram is counted; its clear RTP header gives the consumer SSRC
//!   and sequence number, from which gaps and reordering are counted per
//!   (subscriber, consumer). One packet in `--sample-every` per consumer
//!   (every packet with `--verify-all`, and always in the seed meeting) is
//!   decrypted with the node's key for that subscriber; its pattern is
//!   checked and its latency (receive time − marker send time, both from
//!   one `Instant` origin) goes into a fixed log-linear histogram
//!   ([`histogram`]). Receiving allocates nothing per packet.
//! * **a switch thread** (`lg-switch`, seed meeting only) changes every
//!   viewer's video subscription at each speaker switch with
//!   `PUT .../subscriptions`, from `--switch-workers` parallel clients.
//! * **failover threads** (`--rejoin`, `--kill-pid`): a health monitor,
//!   rejoin threads and the kill, see "Cluster and failover".
//! * **the calling thread** prints a [`Progress`] line each second, then
//!   waits for the sender to finish, lets the receivers drain for
//!   `--drain-ms`, stops them and assembles the [`Report`]. The rooms are
//!   deleted at the end, on error too (best effort, from a drop guard).
//!
//! # Expected packets
//! * Scenario `rooms` (subscribe `"all"`): each subscriber should get every
//!   packet every publisher of its room sent: `expected = Σ_rooms sent(room)
//!   × S`; received = datagrams that are RTP from one of its consumer SSRCs.
//! * Scenario `seed-meeting`: every packet is decrypted and attributed by its
//!   marker. A viewer expects all packets of its three audio publishers, and
//!   for each speaker period the video packets its speaker of that period
//!   sent, except video sent within a switch window
//!   `[switch − grace, switch + budget + grace)`, which is left out of both
//!   the expected and the received count (the node may switch anywhere in
//!   the window). Video from anyone else outside the windows is
//!   `misrouted_packets`. The method is stated in the report's
//!   `expected_method`.
//! * Simulcast video and last-N slots: the node's choice (a layer, a
//!   speaker) decides what a consumer carries, so each such consumer is
//!   expected to deliver every output sequence number from its first
//!   packet to its last ([`plan::Plan::span_counted`]); the node keeps one
//!   numbering per consumer across switches, so a gap is a lost packet.
//! * A subscriber whose node went down (`--rejoin`, below) is expected by
//!   the sequence number span of every consumer it had, those of the
//!   endpoint before the failure and those of the endpoint after its
//!   rejoin, summed: a gap inside a span is protocol loss and counts in
//!   `loss_ratio` like any other. What its room's publishers sent that no
//!   span covers (sent to the dead node, in flight in it, or sent on the
//!   new node before this subscriber's endpoint existed there) was missed
//!   in the failover: `failover.missed_packets`, left out of both
//!   `expected_rx_packets` and `loss_ratio` (which is then
//!   `failover.loss_ratio_outside` for those subscribers). Losses at the
//!   very edges of a span (before a consumer's first packet, after its
//!   last) cannot be told from the failover and count as missed in it.
//!   Unaffected subscribers are counted by what was sent as above. The
//!   progress lines count an affected subscriber by what was sent until a
//!   receive thread has taken its rejoin in, so their loss rises during
//!   the outage and falls back after it.
//!
//! # Loss and repair
//! Off by default. `--loss-percent P` makes each receive thread drop P % of
//! the RTP datagrams (media and RTX) it receives before counting them
//! (seeded, `--loss-seed`): simulated loss on the node's way out.
//! `--publisher-loss-percent Q` makes the sender withhold Q % of the video
//! packets (never those of a stream's last frame, whose gaps nothing would
//! reveal): loss on the node's way in. Either turns on `--nack`, with
//! which the peers repair like browsers ([`repair`]):
//!
//! * subscribers ask for `rtx_payload_types` 97 (video) and 98 (audio),
//!   track the output sequence numbers missing per consumer (fixed-size
//!   [`repair::Gaps`]), look every 20 ms for those still missing and send a
//!   generic NACK per consumer from their own socket (SRTCP with their own
//!   key), each number again after `--nack-retry-ms` (20), at most 10
//!   times, for 1 s, and take the node's RTX packets (the
//!   consumer's `rtx_ssrc`, always decrypted; original sequence number in
//!   the first two payload bytes, the original payload checked) to fill the
//!   gaps: a repair is counted like the original packet;
//! * publishers declare an RTX stream per video track (SSRC with the top bit
//!   flipped, payload type 98), keep every packet in clear in a ring, and
//!   the sender thread polls their (then non-blocking) sockets every 2 ms
//!   for the node's SRTCP, answering each NACKed number with an RTX packet,
//!   and for 300 ms after the last frame.
//!
//! Withheld packets count as sent for the expectation (`tx_video_packets`),
//! not in `tx_packets` (datagrams). The report's `repair` object gives the
//! simulated loss, the repairs, what was never repaired (`loss_ratio`, i.e.
//! the residual loss), NACKs, RTX and duplicates on both sides, and the
//! node's repair counters over the run from `/metrics` (summed over its
//! workers). Loss options need scenario `rooms`.
//!
//! # Simulcast
//! `--simulcast` (scenario `rooms`) makes each publisher's video one track
//! of three layers (the API's `layer_of`), SSRCs `v`, `v ^ 2^29`,
//! `v ^ 2^30` at a tenth, a third and all of `--video-kbps` (150/500/1500
//! kbit/s for 1500), each with VP8 payload descriptors ([`vp8`]: a 15-bit
//! PictureID per frame, a VP8 payload header whose P bit the node's
//! keyframe detection reads) and the layer in the payload marker. Each
//! layer starts with a keyframe, sends one every `--keyframe-secs` and at
//! its next frame after the node's PLI or FIR (the sender polls the
//! publishers' sockets). The node forwards one layer per subscriber's
//! consumer; every video packet is decrypted, so the report gives the
//! packets received per layer, the layer switches seen (the marker's layer
//! changed on a consumer), the sequence numbers skipped at those switches
//! (0 when the output numbering is continuous), switches that did not
//! start on a keyframe, and PictureID discontinuities. `--layer-cap-secs S`
//! steps every subscriber's video caps through layer 0, layer 1 and no cap
//! every S seconds (`PUT /v1/rooms/{room}/endpoints/{id}/layers`), which
//! makes the node switch. A subscriber's video is expected by the span of
//! its output sequence numbers (first to last packet of each consumer),
//! its audio by what was sent.
//!
//! # Last-N
//! Scenario `last-n`: one room of `--participants` (500) peers with role
//! `both`, each created with its own token identity (`sub` = `lg-N`, the
//! node's participant id), publishing VP8 video at `--video-kbps` (default
//! 100 here) and 64 kbit/s audio with the RFC 6464 audio level (extension
//! id 1, the endpoint's `audio_level_extension`), and receiving
//! `{"slots": {"video": --video-slots, "audio": --audio-slots}}` (9 and 3).
//! Speakers rotate every `--switch-secs` ([`plan::TalkPlan`]): for the
//! first period everyone sends room noise (-70 dBov, from which the node
//! learns the noise floors); from then on, in each period a different
//! `--talkers` peers send speech levels (-22 to -34 dBov with the voice
//! bit) and everyone else room noise. Every packet is decrypted and attributed by its marker; a
//! packet from the viewer itself counts as `self_received` (and
//! misrouted). **Slot switch latency**: for each viewer, measured period
//! and talker that is not the viewer, the time from the period's start
//! (when the talker starts speaking, on the load generator's clock) to the
//! arrival of the first packet of the talker's video (and, separately, audio)
//! in any of the viewer's slots; a talker whose media already arrived in the
//! 200 ms before its start is counted as `already_shown`, one that never
//! arrived in the period as `missed`. Measured periods are those with
//! talkers that end within the run. Every consumer is expected by its
//! sequence number span. The `both` peers' sockets are read by the
//! receive threads, which also pass the node's keyframe requests on.
//!
//! # Cluster and failover
//! `--nodes URL,URL,...` names the control APIs of several nodes of one
//! cluster (a load balancer's stand-in): the rooms are created through
//! them in turn (the cluster places each room), and so are the endpoints; each endpoint's node is the one its answer's
//! `X-Sfu-Served-By` names (the room's owner), else the one asked.
//! `/v1/load` and `/metrics` are read from every node: `node_cpu_seconds`
//! lists the workers of the nodes that answered at the end, in `--nodes`
//! order, `node_load` is an object by URL, and node counters are summed.
//! Without `--nodes`, `--control` alone is used as before.
//! `--room-prefix P` names the rooms `P-0`, `P-1`, ... and joins any that
//! exist already, so a run can use rooms placed beforehand (to know which
//! node owns them).
//!
//! `--rejoin` ([`rejoin`]): a monitor thread asks every node's `/healthz`
//! every 100 ms; a node that does not connect (300 ms) or answer (1 s) is
//! down. Every publisher and subscriber whose endpoint it held then
//! creates its endpoint again, with the same request (role, tracks and
//! SSRCs, keys, remote address, subscription), through the other nodes in
//! turn (nodes known down skipped), one attempt per peer every 100 ms,
//! from `--rejoin-threads` (8) threads, until a 201: while the dead node's
//! registry entry lives, the survivors answer 503 `owner_unreachable`;
//! then a POST places the room on a survivor. The answer is swapped into
//! the peer's link (a generation counter and a mutex); the sender picks it
//! up before the peer's next unit (new media address, a fresh SRTP
//! context of the same key: the new node starts the rollover counter at
//! 0; sequence numbers carry on), a receive thread before its next read of
//! the peer's socket (the node's new key, the new consumer SSRCs with a
//! fresh numbering, the new node's address). The per-packet paths check
//! one atomic and allocate nothing; the swap itself may. Consumers that
//! appear after a rejoin (a publisher that rejoined later) are
//! `failover.late_consumers`, not `unannounced_ssrcs`; datagrams still
//! coming from the node a subscriber left are `failover.stale_packets`,
//! not counted. A packet the new node sends before the load generator has
//! its 201 is read with the old key (an SRTP error). `--rejoin` needs
//! scenario rooms, at least two nodes and no `--layer-cap-secs`.
//!
//! `--kill-pid PID --kill-at S` runs `kill -9 PID` S seconds after sending
//! starts and times the failover from that instant (the start of the
//! command; `failover.kill_command_ms` says how long it ran). The report's
//! `failover` object (also with `--rejoin` alone, timed from when the
//! monitor saw each node down) gives the nodes seen down, the rejoins and
//! attempts, per rejoined subscriber the time from the kill to its 201 and
//! to its first media packet from the new node, their p50/p99/max, how
//! many never got media back, and the packets missed in the failover; the
//! progress lines and the text report have a `failover` part.
//!
//! # Panics
//! No network input can make the receive path panic: headers are parsed with
//! checked views, SRTP failures, malformed or unexpected datagrams are
//! counted (`rx_unexpected_packets`, `integrity_errors`). Setup failures are
//! errors, not panics.

pub mod api;
pub mod histogram;
pub mod media;
pub mod payload;
pub mod plan;
pub mod procstat;
mod receiver;
pub mod rejoin;
pub mod repair;
mod sender;
pub mod vp8;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use packet_path::io::{BatchSocket, SocketOptions};
use rand::Rng;
use serde::Serialize;
use sfu_core::srtp::Profile;

use api::{ControlClient, Track};
use histogram::Snapshot;
use plan::{Plan, Receives, Role, SwitchTiming};
use rejoin::{FailoverReport, JoinSpec, Joined, Links, Nodes, Percentiles, SubscribeSpec};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Opus-like audio, PT 111, 48 kHz.
    Audio,
    /// Video, PT 96, 90 kHz.
    Video,
}

/// Which topology to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `--rooms` rooms of `--publishers` publishers and `--subscribers`
    /// subscribers that receive everything.
    Rooms,
    /// One room of `--participants` (500) peers with role `both`;
    /// `--speakers` (50) publish 2 Mbit/s video, all publish audio; each
    /// receives the rotating speaker's video and three others' audio.
    SeedMeeting,
    /// One room of `--participants` (500) peers with role `both`, each
    /// publishing VP8 video and audio with RFC 6464 levels and receiving
    /// `--video-slots` and `--audio-slots` last-N slots; `--talkers` new
    /// speakers every `--switch-secs`; reports the slot switch latency.
    LastN,
}

impl Scenario {
    /// The name the report and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rooms => "rooms",
            Self::SeedMeeting => "seed-meeting",
            Self::LastN => "last-n",
        }
    }
}

/// Command-line options of `sfu-loadgen`, also the library's input.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "sfu-loadgen",
    about = "SRTP load generator for the SFU node: publishers and subscribers over UDP, set up through the control API"
)]
pub struct Options {
    /// Base URL of the node's control API.
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    pub control: String,
    /// Control API base URLs of several nodes of one cluster,
    /// comma-separated (a load balancer's stand-in): rooms and endpoints
    /// are created through them in turn, and `--control` is not used.
    #[arg(long, value_parser = parse_node_list)]
    pub nodes: Option<NodeList>,
    /// When a node stops answering `/healthz` (checked every 100 ms), every
    /// publisher and subscriber whose endpoint it held creates it again
    /// (same request) through the other nodes in turn, every 100 ms until
    /// a 201, and carries on with the new endpoint. Needs `--nodes` with
    /// at least two nodes and scenario rooms.
    #[arg(long)]
    pub rejoin: bool,
    /// Threads that create endpoints again (`--rejoin`), each for a share
    /// of the peers.
    #[arg(long, default_value_t = 8)]
    pub rejoin_threads: usize,
    /// Send SIGKILL to this process (a node) at `--kill-at`; the report
    /// gets a `failover` object timed from that instant.
    #[arg(long, requires = "kill_at")]
    pub kill_pid: Option<u32>,
    /// Seconds after the start of sending to kill `--kill-pid`.
    #[arg(long, requires = "kill_pid")]
    pub kill_at: Option<f64>,
    /// Names of the rooms: `PREFIX-0`, `PREFIX-1`, ... (scenario rooms) or
    /// `PREFIX-meeting`; a room of that name that exists already is joined
    /// as it is (and deleted at the end like the others) [default:
    /// `lg-PID-NONCE`].
    #[arg(long)]
    pub room_prefix: Option<String>,
    /// Secret of the node's API tokens; the load generator mints its own
    /// token (room `*`, every grant, valid for the run plus an hour) [env
    /// SFU_API_SECRET; default: the development secret of the embedded
    /// defaults].
    #[arg(
        long,
        env = "SFU_API_SECRET",
        default_value = control::auth::DEV_API_SECRET,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub api_secret: String,
    /// Rooms (scenario `rooms`).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishers per room (scenario `rooms`).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscribers per room (scenario `rooms`).
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Video bitrate per publisher, kbit/s (with `--simulcast`, of the top
    /// layer) [default: 2000; 100 in scenario last-n].
    #[arg(long)]
    pub video_kbps: Option<u32>,
    /// Publishers also send 64 kbit/s audio (scenario `rooms`).
    #[arg(long)]
    pub audio: bool,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// SRTP profile of every endpoint.
    #[arg(long, default_value = "AEAD_AES_128_GCM", value_parser = parse_profile)]
    pub profile: Profile,
    /// Topology.
    #[arg(long, value_enum, default_value = "rooms")]
    pub scenario: Scenario,
    /// Participants of the seed meeting or the last-N meeting.
    #[arg(long, default_value_t = 500)]
    pub participants: usize,
    /// Video publishers (rotating speakers) of the seed meeting.
    #[arg(long, default_value_t = 50)]
    pub speakers: usize,
    /// Seconds between speaker switches (seed meeting), or between two
    /// rotations of the talkers (last-N; at least 1).
    #[arg(long, default_value_t = 5.0)]
    pub switch_secs: f64,
    /// Time all subscription changes of one switch must finish in, ms.
    #[arg(long, default_value_t = 1000)]
    pub switch_budget_ms: u64,
    /// Margin around each switch window excluded from the counts, ms.
    #[arg(long, default_value_t = 200)]
    pub switch_grace_ms: u64,
    /// Parallel HTTP clients changing subscriptions at a switch (a
    /// signaling service sends a switch's changes in parallel).
    #[arg(long, default_value_t = 16)]
    pub switch_workers: usize,
    /// How a switch's changes are sent: `batch` (each client sends its
    /// share in one `PUT /v1/rooms/{room}/subscriptions`) or `each` (one
    /// `PUT .../endpoints/{id}/subscriptions` per viewer).
    #[arg(long, value_enum, default_value_t = SwitchMode::Batch)]
    pub switch_mode: SwitchMode,
    /// Local address of every socket.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Pin the load generator's sender and receive threads to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Decrypt and verify one packet in N per consumer.
    #[arg(long, default_value_t = 16)]
    pub sample_every: u32,
    /// Decrypt and verify every packet.
    #[arg(long)]
    pub verify_all: bool,
    /// Receive threads (default: one per receiving socket up to 4 sockets, else 2).
    #[arg(long)]
    pub recv_threads: Option<usize>,
    /// Time receivers keep counting after the last send, ms.
    #[arg(long, default_value_t = 500)]
    pub drain_ms: u64,
    /// Sleep after a receive sweep over non-blocking sockets that found
    /// nothing, µs.
    #[arg(long, default_value_t = 100)]
    pub idle_sleep_us: u64,
    /// Shortest time between the starts of two receive sweeps over
    /// non-blocking sockets, µs (default: 0 up to 16 sockets per thread,
    /// else 500). Adds up to this much to measured latencies.
    #[arg(long)]
    pub sweep_interval_us: Option<u64>,
    /// SO_RCVBUF/SO_SNDBUF of every socket, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub socket_buffer_bytes: usize,
    /// First SSRC of the run (default: random, low 16 bits 0x1000). Peer
    /// `n` sends video with SSRC `base + 2n` and audio with `base + 2n + 1`;
    /// in scenario `rooms` the publishers of room `r` are the peers
    /// `r × (publishers + subscribers) + i`. A fixed base lets another tool
    /// name the room's publishers (e.g. `sfu-junk --known-ssrc`).
    #[arg(long, value_parser = parse_u32)]
    pub ssrc_base: Option<u32>,
    /// Simulated downstream loss: each subscriber drops this percentage of
    /// the RTP packets it receives (media and RTX), before counting them,
    /// from a seeded generator.
    #[arg(long, default_value_t = 0.0)]
    pub loss_percent: f64,
    /// Simulated loss on the way into the node: each publisher withholds
    /// this percentage of its video packets the first time (keeping them)
    /// and sends them as RTX when the node NACKs them. Scenario `rooms`.
    #[arg(long, default_value_t = 0.0)]
    pub publisher_loss_percent: f64,
    /// Repair like a browser: subscribers negotiate RTX (payload types 97
    /// video, 98 audio), NACK the gaps they see every 20 ms (each number at
    /// most 10 times, for 1 s) and fill them from RTX; publishers declare an
    /// RTX stream per video track (payload type 98) and answer the node's
    /// NACKs [default: on when either loss is above 0].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub nack: Option<bool>,
    /// Shortest time between two NACKs of one missing number, ms (they are
    /// looked for every 20 ms; libwebrtc waits an RTT, 100 ms until it has
    /// measured one).
    #[arg(long, default_value_t = 20)]
    pub nack_retry_ms: u64,
    /// Seed of the simulated loss.
    #[arg(long, default_value_t = 1)]
    pub loss_seed: u64,
    /// Video frames per second of every video stream (1 to 60; bitrates
    /// stay as given, frames grow): fewer packets where the load
    /// generator's own core is the limit.
    #[arg(long, default_value_t = media::VIDEO_FPS)]
    pub video_fps: u64,
    /// Simulcast publishers (scenario rooms): each video is a track of
    /// three VP8 layers at a tenth, a third and all of `--video-kbps`
    /// (separate SSRCs, `layer_of`); subscribers get the layer the node
    /// chooses and the report counts packets per layer and layer switches.
    #[arg(long)]
    pub simulcast: bool,
    /// Seconds between two periodic keyframes of a VP8 stream (simulcast,
    /// last-n); 0: only the first one and those the node asks for with PLI
    /// or FIR (always answered).
    #[arg(long, default_value_t = 3.0)]
    pub keyframe_secs: f64,
    /// With `--simulcast`: every this many seconds, cap every subscriber's
    /// video consumers at layer 0, then 1, then lift the cap, and so on
    /// (`PUT /v1/rooms/{room}/endpoints/{id}/layers`); 0: never.
    #[arg(long, default_value_t = 0.0)]
    pub layer_cap_secs: f64,
    /// Last-N video slots per participant (scenario last-n).
    #[arg(long, default_value_t = 9)]
    pub video_slots: u16,
    /// Last-N audio slots per participant (scenario last-n).
    #[arg(long, default_value_t = 3)]
    pub audio_slots: u16,
    /// Participants speaking at once in each rotation (scenario last-n);
    /// at most half the participants. Every talker gets a slot of a viewer
    /// only if it is at most the viewer's slots of that kind.
    #[arg(long, default_value_t = 3)]
    pub talkers: usize,
}

impl Options {
    /// Whether the peers NACK and retransmit (`--nack`, default on when
    /// some loss is simulated).
    pub fn repair(&self) -> bool {
        self.nack
            .unwrap_or(self.loss_percent > 0.0 || self.publisher_loss_percent > 0.0)
    }

    /// Video bitrate per publisher: `--video-kbps`, or the scenario's
    /// default.
    pub fn video_kbps(&self) -> u32 {
        self.video_kbps.unwrap_or(match self.scenario {
            Scenario::LastN => 100,
            Scenario::Rooms | Scenario::SeedMeeting => 2000,
        })
    }

    /// The control API base URLs: `--nodes`, else `--control`.
    pub fn node_urls(&self) -> Vec<String> {
        match &self.nodes {
            Some(NodeList(nodes)) => nodes.clone(),
            None => vec![self.control.trim_end_matches('/').to_owned()],
        }
    }

    /// Whether the run watches the nodes' health (`--rejoin`,
    /// `--kill-pid`) and reports a failover.
    pub fn watches_failover(&self) -> bool {
        self.rejoin || self.kill_pid.is_some()
    }

    /// Whether the sender polls the publish-only peers' sockets for the
    /// node's RTCP (NACKs, keyframe requests).
    fn polls_publishers(&self) -> bool {
        self.repair() || self.simulcast
    }
}

impl Default for Options {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["sfu-loadgen"])
    }
}

/// The nodes of `--nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList(pub Vec<String>);

fn parse_node_list(s: &str) -> Result<NodeList, String> {
    rejoin::parse_nodes(s).map(NodeList)
}

/// A `u32` in decimal or with a `0x` prefix in hexadecimal.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a u32 (decimal or 0x hex): {e}"))
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::from_name(s).ok_or_else(|| {
        format!("unknown SRTP profile {s:?}: AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80")
    })
}

/// One progress line's figures (over the last interval, loss since start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Seconds since sending started.
    pub elapsed_s: f64,
    /// Packets sent per second over the last interval.
    pub tx_pps: f64,
    /// Packets received per second over the last interval.
    pub rx_pps: f64,
    /// 1 − received / expected so far (in-flight packets count as lost).
    pub loss: f64,
    /// Median latency of the sampled packets so far, µs.
    pub latency_us_p50: Option<f64>,
    /// 99th percentile latency of the sampled packets so far, µs.
    pub latency_us_p99: Option<f64>,
    /// Failover so far (`--rejoin`, `--kill-pid`), once a node is down.
    pub failover: Option<FailoverTick>,
}

/// A progress line's failover figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailoverTick {
    /// Peers whose node went down.
    pub flagged: usize,
    /// Of those, rejoined.
    pub rejoined: usize,
    /// Subscribers rejoined.
    pub subscribers: usize,
    /// Of those, with media back.
    pub back: usize,
    /// Median time from the kill (or the node down) to media back, ms.
    pub back_p50_ms: Option<f64>,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        write!(
            f,
            "t={:5.1}s tx {:8.0} pps  rx {:8.0} pps  loss {:7.4}%  latency p50 {} µs p99 {} µs",
            self.elapsed_s,
            self.tx_pps,
            self.rx_pps,
            self.loss * 100.0,
            us(self.latency_us_p50),
            us(self.latency_us_p99),
        )?;
        if let Some(t) = &self.failover {
            write!(
                f,
                "  failover: rejoined {}/{}, media back at {}/{} subscribers (p50 {} ms)",
                t.rejoined,
                t.flagged,
                t.back,
                t.subscribers,
                t.back_p50_ms.map_or("-".to_owned(), |v| format!("{v:.0}")),
            )?;
        }
        Ok(())
    }
}

/// The final report (`--json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `rooms` or `seed-meeting`.
    pub scenario: &'static str,
    /// SRTP profile name.
    pub profile: &'static str,
    /// Rooms created.
    pub rooms: usize,
    /// Endpoints created.
    pub endpoints: usize,
    /// Streams published.
    pub streams: usize,
    /// Video frames per second of every video stream.
    pub video_fps: u64,
    /// Seconds of sending (measured).
    pub duration_s: f64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Video packets sent.
    pub tx_video_packets: u64,
    /// Audio packets sent.
    pub tx_audio_packets: u64,
    /// Bytes sent (SRTP, UDP payload).
    pub tx_bytes: u64,
    /// `sendmmsg` failures (packets not sent).
    pub send_errors: u64,
    /// Packets per second the plan asks for.
    pub target_tx_pps: f64,
    /// Packets sent per second.
    pub tx_pps: f64,
    /// Worst lateness of the sender against its schedule, µs.
    pub sender_late_us_max: f64,
    /// Datagrams received (all of them).
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams counted against the expectation.
    pub rx_counted_packets: u64,
    /// Packets expected under `expected_method`.
    pub expected_rx_packets: u64,
    /// `1 − rx_counted / expected` (negative if the node duplicated).
    pub loss_ratio: f64,
    /// Worst loss ratio of a single subscriber.
    pub loss_ratio_worst_subscriber: f64,
    /// How `expected_rx_packets` was computed.
    pub expected_method: String,
    /// Datagrams received per second of sending.
    pub rx_pps: f64,
    /// Bits received per second of sending (UDP payload).
    pub rx_bps: f64,
    /// SRTCP datagrams received (e.g. PLIs to publishers).
    pub rx_rtcp_packets: u64,
    /// Datagrams that are not RTP/RTCP or come from an unknown SSRC.
    pub rx_unexpected_packets: u64,
    /// Failed receive calls (other than timeouts).
    pub recv_errors: u64,
    /// Packets decrypted and verified.
    pub verified_packets: u64,
    /// SRTP failures plus payload pattern mismatches.
    pub integrity_errors: u64,
    /// Of `integrity_errors`: packets SRTP refused.
    pub srtp_errors: u64,
    /// Packets whose marker says they were not for this subscriber.
    pub misrouted_packets: u64,
    /// Switched video inside switch windows (in neither count).
    pub rx_excluded_packets: u64,
    /// Packets older than, or equal to, the highest sequence number seen on
    /// their consumer.
    pub out_of_order: u64,
    /// Sequence numbers skipped (forward jumps) per consumer, summed.
    pub seq_gaps: u64,
    /// Consumer SSRCs seen that the API did not announce.
    pub unannounced_ssrcs: u64,
    /// Latency samples.
    pub latency_samples: u64,
    /// Median latency, µs.
    pub latency_us_p50: Option<f64>,
    /// 90th percentile latency, µs.
    pub latency_us_p90: Option<f64>,
    /// 99th percentile latency, µs.
    pub latency_us_p99: Option<f64>,
    /// Largest latency, µs.
    pub latency_us_max: Option<f64>,
    /// Speaker switches done.
    pub switches: usize,
    /// Subscription changes made at switches.
    pub switch_requests: u64,
    /// Failed subscription changes.
    pub switch_errors: u64,
    /// Longest time one switch's changes took, ms.
    pub switch_ms_max: f64,
    /// Switches that overran `--switch-budget-ms` (their counts are unreliable).
    pub switch_overruns: u64,
    /// Median round trip of one subscription request at a switch (one
    /// viewer's change with `--switch-mode each`, a client's share of the
    /// switch with `batch`), ms.
    pub switch_request_ms_p50: f64,
    /// 99th percentile of those round trips, ms.
    pub switch_request_ms_p99: f64,
    /// Endpoints created through the API during setup (one at a time).
    pub joins: usize,
    /// Seconds all joins (endpoint creations) took together.
    pub joins_s: f64,
    /// Median time of one join (`POST .../endpoints` round trip), ms.
    pub join_ms_p50: f64,
    /// Slowest join, ms.
    pub join_ms_max: f64,
    /// Per node worker: CPU seconds over the run.
    pub node_cpu_seconds: Vec<f64>,
    /// Per node worker: CPU seconds over the run / `duration_s`.
    pub node_cpu_utilisation: Vec<f64>,
    /// The node's `/v1/load` at the end.
    pub node_load: serde_json::Value,
    /// CPU seconds of this process over the run (utime + stime).
    pub loadgen_cpu_seconds: f64,
    /// Whether GSO stayed on for every publisher socket.
    pub gso: bool,
    /// Whether GRO was on for every receiving socket.
    pub gro: bool,
    /// Loss and repair (`--loss-percent`, `--publisher-loss-percent`,
    /// `--nack`); all zero when off.
    pub repair: RepairReport,
    /// Simulcast layers and switches (`--simulcast`), else `null`.
    pub simulcast: Option<SimulcastReport>,
    /// Last-N slots and their switch latency (scenario `last-n`), else
    /// `null`.
    pub last_n: Option<LastNReport>,
    /// Failover (`--rejoin`, `--kill-pid`), else `null`.
    pub failover: Option<FailoverReport>,
}

/// What the simulcast subscribers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimulcastReport {
    /// Bitrates of the layers, low to high, kbit/s.
    pub layer_kbps: [u32; 3],
    /// `--keyframe-secs`.
    pub keyframe_secs: f64,
    /// Keyframes the publishers sent (all layers).
    pub tx_keyframes: u64,
    /// Of those, sent at the node's request before they were due.
    pub tx_keyframes_requested: u64,
    /// PLI/FIR entries from the node that named a layer.
    pub keyframe_requests_in: u64,
    /// Video packets received per layer (by marker), low to high.
    pub rx_layer_packets: [u64; 3],
    /// Keyframe starts received.
    pub rx_keyframes: u64,
    /// Layer changes seen on the subscribers' consumers.
    pub layer_switches: u64,
    /// Sequence numbers skipped at those changes (0: one continuous
    /// numbering across every switch).
    pub switch_seq_gaps: u64,
    /// Layer changes whose first packet was not a keyframe start.
    pub switches_not_on_keyframe: u64,
    /// Frame starts whose PictureID was not the previous one plus one
    /// (with simulated loss also every lost frame start: a repair by RTX
    /// does not feed this check).
    pub picture_id_jumps: u64,
    /// Cap steps done (`--layer-cap-secs`).
    pub cap_steps: u64,
    /// `PUT .../layers` requests sent.
    pub cap_requests: u64,
    /// Of those, failed.
    pub cap_errors: u64,
    /// The node's counters over the run (`layer_switches`, `pli_sent`).
    pub node: std::collections::BTreeMap<String, u64>,
}

/// Slot switch latency of one kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotLatency {
    /// (viewer, period, talker) cases, the talker not being the viewer.
    pub expected: u64,
    /// Cases measured: the talker's media first reached the viewer after
    /// the talker started.
    pub measured: u64,
    /// Cases where the talker's media was already reaching the viewer.
    pub already_shown: u64,
    /// Cases where it never reached the viewer within the period.
    pub missed: u64,
    /// Median latency from the talker's start to the first packet, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
}

impl SlotLatency {
    fn new(mut latency_ns: Vec<u64>, expected: u64, already_shown: u64, missed: u64) -> Self {
        latency_ns.sort_unstable();
        let q = |q: f64| {
            (!latency_ns.is_empty()).then(|| {
                let i = ((latency_ns.len() as f64 * q) as usize).min(latency_ns.len() - 1);
                latency_ns[i] as f64 / 1e6
            })
        };
        Self {
            expected,
            measured: latency_ns.len() as u64,
            already_shown,
            missed,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: q(1.0),
        }
    }
}

/// What the last-N viewers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LastNReport {
    /// Participants.
    pub participants: usize,
    /// Video slots per participant.
    pub video_slots: u16,
    /// Audio slots per participant.
    pub audio_slots: u16,
    /// Talkers per period.
    pub talkers: usize,
    /// Length of a period, s.
    pub period_s: f64,
    /// Periods measured (with talkers, ending within the run).
    pub periods_measured: usize,
    /// First video of a new talker in a viewer's video slot.
    pub video: SlotLatency,
    /// First audio of a new talker in a viewer's audio slot.
    pub audio: SlotLatency,
    /// Packets a participant received of its own media.
    pub self_received: u64,
    /// Keyframes the participants sent.
    pub tx_keyframes: u64,
    /// PLI/FIR entries from the node that named a participant's video.
    pub keyframe_requests_in: u64,
    /// The node's counters over the run (`slot_switches`,
    /// `speaker_decisions`, `active_speaker_changes`, `pli_sent`, ...).
    pub node: std::collections::BTreeMap<String, u64>,
}

/// Node counters the simulcast report carries.
const SIMULCAST_COUNTERS: &[&str] = &["layer_switches", "pli_sent"];
/// Node counters the last-N report carries.
const LAST_N_COUNTERS: &[&str] = &[
    "slot_switches",
    "speaker_decisions",
    "active_speaker_changes",
    "dominant_speaker_changes",
    "audio_levels",
    "audio_levels_missing",
    "pli_sent",
];

/// What loss was simulated and how much of it was repaired.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Peers NACKed and retransmitted.
    pub enabled: bool,
    /// `--loss-percent`.
    pub loss_percent: f64,
    /// `--publisher-loss-percent`.
    pub publisher_loss_percent: f64,
    /// RTP packets the subscribers dropped (simulated downstream loss,
    /// media and RTX).
    pub sim_lost_packets: u64,
    /// Gaps filled by an RTX packet from the node.
    pub repaired_by_rtx: u64,
    /// Gaps filled by a late original packet (reordering, or a publisher's
    /// retransmission the node forwarded).
    pub late_filled: u64,
    /// Expected packets never counted: `expected − counted` (≥ 0).
    pub never_repaired: u64,
    /// `loss_ratio` after repair (the same figure, named).
    pub residual_loss_ratio: f64,
    /// Generic NACK packets the subscribers sent.
    pub subscriber_nacks: u64,
    /// Sequence numbers in them (retries count again).
    pub subscriber_nacked_seqs: u64,
    /// Missing numbers the subscribers stopped waiting for (1 s).
    pub subscriber_gave_up: u64,
    /// Missing numbers not tracked (too many at once, or a huge jump).
    pub subscriber_untracked: u64,
    /// RTX packets the subscribers received (after simulated loss).
    pub rtx_received: u64,
    /// RTX packets for numbers not missing (already received or repaired).
    pub duplicates: u64,
    /// Video packets the publishers withheld the first time.
    pub publisher_withheld: u64,
    /// NACK packets the publishers received from the node.
    pub publisher_nacks_in: u64,
    /// Sequence numbers the node asked the publishers for.
    pub publisher_nacked_seqs: u64,
    /// RTX packets the publishers sent.
    pub publisher_rtx_sent: u64,
    /// NACKed numbers the publishers no longer had.
    pub publisher_rtx_not_cached: u64,
    /// The node's repair counters over the run (`/metrics`, summed over
    /// workers): `nack_in`, `rtx_sent`, `rtx_throttled`, `rtx_not_cached`,
    /// `nack_sent`, `rtx_in`, `nack_repaired`, …
    pub node: std::collections::BTreeMap<String, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        writeln!(
            f,
            "{} ({}), {} rooms, {} endpoints, {} streams (video at {} fps), {:.1} s",
            self.scenario,
            self.profile,
            self.rooms,
            self.endpoints,
            self.streams,
            self.video_fps,
            self.duration_s
        )?;
        writeln!(
            f,
            "tx {} packets ({:.0} pps of {:.0} planned, worst lateness {:.0} µs, {} send errors)",
            self.tx_packets,
            self.tx_pps,
            self.target_tx_pps,
            self.sender_late_us_max,
            self.send_errors
        )?;
        writeln!(
            f,
            "rx {} packets ({:.0} pps, {:.1} Mbit/s), counted {} of {} expected: loss {:.4}% (worst subscriber {:.4}%)",
            self.rx_packets,
            self.rx_pps,
            self.rx_bps / 1e6,
            self.rx_counted_packets,
            self.expected_rx_packets,
            self.loss_ratio * 100.0,
            self.loss_ratio_worst_subscriber * 100.0
        )?;
        writeln!(
            f,
            "verified {} packets: {} integrity errors ({} SRTP), {} misrouted, {} unexpected, {} out of order, {} gaps",
            self.verified_packets,
            self.integrity_errors,
            self.srtp_errors,
            self.misrouted_packets,
            self.rx_unexpected_packets,
            self.out_of_order,
            self.seq_gaps
        )?;
        writeln!(
            f,
            "latency µs: p50 {} p90 {} p99 {} max {} ({} samples)",
            us(self.latency_us_p50),
            us(self.latency_us_p90),
            us(self.latency_us_p99),
            us(self.latency_us_max),
            self.latency_samples
        )?;
        writeln!(
            f,
            "joins {}: {:.2} s in all, p50 {:.2} ms, slowest {:.2} ms",
            self.joins, self.joins_s, self.join_ms_p50, self.join_ms_max
        )?;
        if self.switches > 0 {
            writeln!(
                f,
                "switches {}: {} requests, {} errors, slowest {:.0} ms, {} overruns; one request p50 {:.2} ms p99 {:.2} ms",
                self.switches,
                self.switch_requests,
                self.switch_errors,
                self.switch_ms_max,
                self.switch_overruns,
                self.switch_request_ms_p50,
                self.switch_request_ms_p99
            )?;
        }
        if let Some(sc) = &self.simulcast {
            writeln!(
                f,
                "simulcast {:?} kbit/s: rx per layer {:?}, {} layer switches ({} numbers skipped at them, {} not on a keyframe), {} PictureID jumps; \
                 {} keyframes sent ({} on request, {} requests in), {} received; caps {} steps, {} requests, {} errors",
                sc.layer_kbps,
                sc.rx_layer_packets,
                sc.layer_switches,
                sc.switch_seq_gaps,
                sc.switches_not_on_keyframe,
                sc.picture_id_jumps,
                sc.tx_keyframes,
                sc.tx_keyframes_requested,
                sc.keyframe_requests_in,
                sc.rx_keyframes,
                sc.cap_steps,
                sc.cap_requests,
                sc.cap_errors,
            )?;
        }
        if let Some(ln) = &self.last_n {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
            for (what, l) in [("video", &ln.video), ("audio", &ln.audio)] {
                writeln!(
                    f,
                    "last-N {what} slot switch ms: p50 {} p99 {} max {} ({} measured of {} expected, {} already shown, {} missed)",
                    ms(l.p50_ms),
                    ms(l.p99_ms),
                    ms(l.max_ms),
                    l.measured,
                    l.expected,
                    l.already_shown,
                    l.missed,
                )?;
            }
            writeln!(
                f,
                "last-N {} participants, {} video + {} audio slots, {} talkers every {} s ({} periods measured); \
                 {} packets of a participant's own media; node slot switches {}",
                ln.participants,
                ln.video_slots,
                ln.audio_slots,
                ln.talkers,
                ln.period_s,
                ln.periods_measured,
                ln.self_received,
                ln.node.get("slot_switches").copied().unwrap_or(0),
            )?;
        }
        if let Some(fo) = &self.failover {
            writeln!(f, "{fo}")?;
        }
        let cpu: Vec<String> = self
            .node_cpu_utilisation
            .iter()
            .map(|u| format!("{:.0}%", u * 100.0))
            .collect();
        write!(
            f,
            "node worker CPU [{}], load generator {:.2} CPU s",
            cpu.join(", "),
            self.loadgen_cpu_seconds
        )?;
        let r = &self.repair;
        if r.enabled || r.sim_lost_packets > 0 || r.publisher_withheld > 0 {
            let node = |k: &str| r.node.get(k).copied().unwrap_or(0);
            write!(
                f,
                "\nloss {}% down, {}% up: subscribers lost {}, repaired {} by RTX + {} late, never {} (residual loss {:.4}%); \
                 {} NACKs ({} numbers, {} given up), {} RTX received, {} duplicates; \
                 publishers withheld {}, got {} NACKs, sent {} RTX",
                r.loss_percent,
                r.publisher_loss_percent,
                r.sim_lost_packets,
                r.repaired_by_rtx,
                r.late_filled,
                r.never_repaired,
                r.residual_loss_ratio * 100.0,
                r.subscriber_nacks,
                r.subscriber_nacked_seqs,
                r.subscriber_gave_up,
                r.rtx_received,
                r.duplicates,
                r.publisher_withheld,
                r.publisher_nacks_in,
                r.publisher_rtx_sent,
            )?;
            write!(
                f,
                "\nnode: nack_in {} rtx_sent {} rtx_throttled {} rtx_not_cached {} rtx_unanswerable {} | \
                 nack_sent {} nack_requested {} rtx_in {} nack_repaired {} nack_gave_up {} rtx_duplicate drops {}",
                node("nack_in"),
                node("rtx_sent"),
                node("rtx_throttled"),
                node("rtx_not_cached"),
                node("rtx_unanswerable"),
                node("nack_sent"),
                node("nack_requested"),
                node("rtx_in"),
                node("nack_repaired"),
                node("nack_gave_up"),
                node("drops_rtx_duplicate"),
            )?;
        }
        Ok(())
    }
}

/// One peer's socket, shared by the sender and a receive thread.
#[derive(Debug)]
struct PeerSocket {
    socket: Mutex<BatchSocket>,
    local: SocketAddr,
}

/// Most subscription changes per `PUT /v1/rooms/{room}/subscriptions` (a
/// change is about 100 bytes of JSON; the node takes 64 KiB bodies).
const BATCH_CHANGES: usize = 200;

/// How a speaker switch's subscription changes reach the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchMode {
    /// One `PUT /v1/rooms/{room}/subscriptions` per client per switch.
    Batch,
    /// One `PUT .../endpoints/{id}/subscriptions` per viewer.
    Each,
}

/// What setup learnt about each peer's endpoint.
#[derive(Debug)]
struct PeerSetup {
    room: String,
    id: String,
    media: SocketAddr,
    /// Key || salt the peer protects with (sender side).
    master: Vec<u8>,
    /// Key || salt the node protects towards the peer with (receiver side).
    node_master: Vec<u8>,
    consumers: Vec<api::Consumer>,
}

/// Deletes the run's rooms when dropped (best effort), through the first
/// node that manages to.
struct RoomsGuard {
    clients: Vec<ControlClient>,
    rooms: Vec<String>,
}

impl Drop for RoomsGuard {
    fn drop(&mut self) {
        for room in &self.rooms {
            let mut last = None;
            for client in &self.clients {
                match client.delete_room(room) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                eprintln!("sfu-loadgen: could not delete room {room}: {e:#}");
            }
        }
    }
}

/// Sets the flag when dropped: the threads of a run's scope stop when it
/// ends, on an error too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the load described by `opts` against the node, calling `progress`
/// about once a second, and returns the final report.
pub fn run(opts: &Options, mut progress: impl FnMut(&Progress)) -> anyhow::Result<Report> {
    validate(opts)?;
    // validate() bounds the duration to (0, 86400] s.
    let token_life = Duration::from_secs_f64(opts.duration) + Duration::from_secs(3600);
    let clients: Vec<ControlClient> = opts
        .node_urls()
        .iter()
        .map(|url| ControlClient::new(url, opts.api_secret.as_bytes(), token_life))
        .collect();
    let mut loads_before = Vec::with_capacity(clients.len());
    for c in &clients {
        loads_before.push(
            c.load()
                .with_context(|| format!("control API at {} does not answer", c.base()))?,
        );
    }
    let nodes = Nodes::new(
        clients,
        loads_before
            .iter()
            .map(|l| l["node_id"].as_str().unwrap_or_default().to_owned())
            .collect(),
    );
    let client = nodes.clients[0].clone();
    let repair_on = opts.repair();
    let counters = NodeCounters::for_options(opts);
    let metrics_before = if repair_on || !counters.names.is_empty() {
        let mut texts = Vec::with_capacity(nodes.clients.len());
        for c in &nodes.clients {
            texts.push(
                c.metrics()
                    .with_context(|| format!("GET {}/metrics", c.base()))?,
            );
        }
        Some(texts)
    } else {
        None
    };
    let duration_ns = (opts.duration * 1e9) as u64;
    let mut rng = rand::rng();
    let ssrc_base: u32 = opts
        .ssrc_base
        .unwrap_or_else(|| rng.random::<u32>() & 0xffff_0000 | 0x1000);
    let plan = match opts.scenario {
        Scenario::Rooms => Plan::rooms(
            opts.rooms,
            opts.publishers,
            opts.subscribers,
            opts.video_kbps(),
            opts.audio,
            opts.simulcast,
            ssrc_base,
        ),
        Scenario::LastN => Plan::last_n(
            opts.participants,
            opts.video_kbps(),
            opts.video_slots,
            opts.audio_slots,
            ssrc_base,
            plan::TalkPlan {
                period_ns: (opts.switch_secs * 1e9) as u64,
                talkers: opts.talkers,
                participants: opts.participants,
                duration_ns,
            },
        ),
        Scenario::SeedMeeting => Plan::seed_meeting(
            opts.participants,
            opts.speakers,
            opts.video_kbps(),
            ssrc_base,
            SwitchTiming {
                period_ns: (opts.switch_secs * 1e9) as u64,
                budget_ns: opts.switch_budget_ms * 1_000_000,
                grace_ns: opts.switch_grace_ms * 1_000_000,
            },
            duration_ns,
        ),
    };
    let mut plan = plan;
    if opts.video_fps != media::VIDEO_FPS {
        plan.set_video_fps(opts.video_fps);
    }
    let receivers: Vec<usize> = (0..plan.peers.len())
        .filter(|&p| plan.is_receiver(p))
        .collect();
    let recv_threads = opts
        .recv_threads
        .unwrap_or(if receivers.len() <= 4 {
            receivers.len()
        } else {
            2
        })
        .clamp(1, receivers.len().max(1));
    // A receiving socket blocks in recv only if its thread owns it alone and
    // no sender shares it.
    let blocking_receivers = recv_threads == receivers.len();
    let sockets = bind_sockets(opts, &plan, blocking_receivers)?;

    let mut guard = RoomsGuard {
        clients: nodes.clients.clone(),
        rooms: Vec::new(),
    };
    let SetUp {
        setups,
        specs,
        joined,
        joins,
    } = set_up(opts, &plan, &nodes, &sockets, &mut guard, &mut rng)?;
    let links = opts.rejoin.then(|| Links::new(joined));
    let links = links.as_ref();
    let fo_stats = rejoin::Stats::new(nodes.clients.len());
    let node_down: Vec<AtomicBool> = nodes
        .clients
        .iter()
        .map(|_| AtomicBool::new(false))
        .collect();

    let shared = Shared::new(&plan, recv_threads);
    let requests = sender::KeyframeRequests::new(&plan);
    let stop_receivers = AtomicBool::new(false);
    let stop_all = AtomicBool::new(false);
    let cpu_before = procstat::cpu_seconds();
    let origin = Instant::now();
    let end_ns = duration_ns;

    // Seed meeting and last-N count by the decrypted marker.
    let attribute_all = plan.switch.is_some() || plan.talk.is_some();
    let outcome = std::thread::scope(|s| -> anyhow::Result<Outcome> {
        let _stop = StopOnDrop(&stop_all);
        let mut side = Vec::new();
        if opts.watches_failover() {
            let cfg = rejoin::MonitorConfig {
                nodes: &nodes,
                links,
                stats: &fo_stats,
                down: &node_down,
                origin,
                stop: &stop_all,
            };
            side.push(
                std::thread::Builder::new()
                    .name("lg-health".into())
                    .spawn_scoped(s, move || rejoin::run_monitor(cfg))
                    .context("spawning the health monitor")?,
            );
        }
        if let Some(links) = links {
            let threads = opts.rejoin_threads.min(links.len()).max(1);
            for t in 0..threads {
                let cfg = rejoin::RejoinConfig {
                    nodes: &nodes,
                    links,
                    specs: &specs,
                    profile: opts.profile,
                    stats: &fo_stats,
                    down: &node_down,
                    origin,
                    stop: &stop_all,
                    peers: (t..links.len()).step_by(threads).collect(),
                };
                side.push(
                    std::thread::Builder::new()
                        .name(format!("lg-rejoin-{t}"))
                        .spawn_scoped(s, move || rejoin::run_rejoiner(cfg))
                        .context("spawning a rejoin thread")?,
                );
            }
        }
        if let (Some(pid), Some(at)) = (opts.kill_pid, opts.kill_at) {
            let (stop, stats) = (&stop_all, &fo_stats);
            side.push(
                std::thread::Builder::new()
                    .name("lg-kill".into())
                    .spawn_scoped(s, move || {
                        rejoin::run_killer(pid, Duration::from_secs_f64(at), origin, stop, stats);
                    })
                    .context("spawning the kill thread")?,
            );
        }
        let sender = {
            let cfg = sender::Config {
                plan: &plan,
                sockets: &sockets,
                setups: &setups,
                profile: opts.profile,
                origin,
                end_ns,
                cpu: opts.cpu,
                stop: &stop_all,
                shared: &shared.tx,
                repair: repair_on,
                withhold_percent: opts.publisher_loss_percent,
                loss_seed: opts.loss_seed,
                poll_publishers: opts.polls_publishers(),
                keyframe_interval_ns: (opts.keyframe_secs * 1e9) as u64,
                requests: &requests,
                links,
            };
            std::thread::Builder::new()
                .name("lg-send".into())
                .spawn_scoped(s, move || sender::run(cfg))
                .context("spawning the sender thread")?
        };
        let mut recv_handles = Vec::with_capacity(recv_threads);
        for t in 0..recv_threads {
            let mine: Vec<usize> = receivers
                .iter()
                .copied()
                .skip(t)
                .step_by(recv_threads)
                .collect();
            let cfg = receiver::Config {
                plan: &plan,
                sockets: &sockets,
                setups: &setups,
                peers: mine.clone(),
                profile: opts.profile,
                origin,
                sample_every: if opts.verify_all || attribute_all || opts.simulcast {
                    1
                } else {
                    opts.sample_every
                },
                attribute_all,
                blocking: blocking_receivers,
                idle_sleep: Duration::from_micros(opts.idle_sleep_us),
                sweep_interval: Duration::from_micros(
                    opts.sweep_interval_us
                        .unwrap_or(if mine.len() > 16 { 500 } else { 0 }),
                ),
                cpu: opts.cpu,
                stop: &stop_receivers,
                shared: &shared.rx[t],
                loss_percent: opts.loss_percent,
                // A different stream per thread, reproducible per seed.
                loss_seed: opts
                    .loss_seed
                    .wrapping_add((t as u64 + 1).wrapping_mul(0x9e37_79b9)),
                nack: repair_on,
                nack_retry_ns: opts.nack_retry_ms.max(1) * 1_000_000,
                requests: &requests,
                links,
            };
            recv_handles.push(
                std::thread::Builder::new()
                    .name(format!("lg-recv-{t}"))
                    .spawn_scoped(s, move || receiver::run(cfg))
                    .context("spawning a receive thread")?,
            );
        }
        let switcher = plan
            .switch
            .as_ref()
            .map(|sw| {
                let cfg = SwitchConfig {
                    plan: &plan,
                    switch: sw,
                    setups: &setups,
                    client: &client,
                    origin,
                    workers: opts.switch_workers.max(1),
                    mode: opts.switch_mode,
                    stop: &stop_all,
                };
                std::thread::Builder::new()
                    .name("lg-switch".into())
                    .spawn_scoped(s, move || run_switches(cfg))
                    .context("spawning the switch thread")
            })
            .transpose()?;
        let capper = (opts.simulcast && opts.layer_cap_secs > 0.0)
            .then(|| {
                let cfg = CapConfig {
                    plan: &plan,
                    setups: &setups,
                    client: &client,
                    origin,
                    period: Duration::from_secs_f64(opts.layer_cap_secs),
                    end: Duration::from_nanos(end_ns),
                    stop: &stop_all,
                };
                std::thread::Builder::new()
                    .name("lg-caps".into())
                    .spawn_scoped(s, move || run_layer_caps(cfg))
                    .context("spawning the layer cap thread")
            })
            .transpose()?;

        // Progress once a second until the sender is done.
        let mut last = (0u64, 0u64, Instant::now());
        let mut next_tick = Duration::from_secs(1);
        while !sender.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            let elapsed = origin.elapsed();
            if elapsed < next_tick {
                continue;
            }
            next_tick += Duration::from_secs(1);
            let (tx, rx) = (shared.tx.packets(), shared.rx_packets());
            let dt = last.2.elapsed().as_secs_f64().max(1e-9);
            let hist = shared.latency();
            let sent = shared.tx.sent(&plan);
            // A rejoined subscriber is expected by its consumers' spans
            // (the failover gap is reported apart).
            let expected: u64 = (receivers
                .iter()
                .filter(|&&v| !links.is_some_and(|l| l.picked_up(v)))
                .map(|&v| plan.expected(v, &sent))
                .sum::<u64>()
                + shared.rx_span()
                + shared.sum(|r| &r.rejoined_all_span))
            .saturating_sub(shared.sum(|r| &r.rejoined_span));
            progress(&Progress {
                elapsed_s: elapsed.as_secs_f64(),
                tx_pps: (tx - last.0) as f64 / dt,
                rx_pps: (rx - last.1) as f64 / dt,
                loss: loss_ratio(shared.rx_counted(), expected),
                latency_us_p50: hist.quantile(0.5).map(ns_to_us),
                latency_us_p99: hist.quantile(0.99).map(ns_to_us),
                failover: links.and_then(|l| failover_tick(&plan, l, &fo_stats)),
            });
            last = (tx, rx, Instant::now());
        }
        let sent_for = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender thread panicked"))??;
        stop_all.store(true, Ordering::Relaxed);
        let switches = match switcher {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the switch thread panicked"))?,
            None => SwitchStats::default(),
        };
        let caps = match capper {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the layer cap thread panicked"))?,
            None => CapStats::default(),
        };
        for h in side {
            h.join()
                .map_err(|_| anyhow::anyhow!("a failover thread panicked"))?;
        }
        std::thread::sleep(Duration::from_millis(opts.drain_ms));
        stop_receivers.store(true, Ordering::Relaxed);
        let mut per_viewer = Vec::new();
        let mut slot_switches = receiver::SwitchSamples::default();
        for h in recv_handles {
            let done = h
                .join()
                .map_err(|_| anyhow::anyhow!("a receive thread panicked"))??;
            per_viewer.extend(done.viewers);
            slot_switches.merge(done.switches);
        }
        Ok(Outcome {
            sent_for,
            switches,
            caps,
            per_viewer,
            slot_switches,
        })
    });
    // Tell the threads to stop if the scope failed half way (they have
    // all been joined by now; this is for clarity).
    stop_all.store(true, Ordering::Relaxed);
    let outcome = outcome?;
    let cpu_after = procstat::cpu_seconds();
    let loads_after: Vec<serde_json::Value> = nodes
        .clients
        .iter()
        .map(|c| {
            c.load().unwrap_or_else(|e| {
                eprintln!(
                    "sfu-loadgen: GET {}/v1/load at the end failed: {e:#}",
                    c.base()
                );
                serde_json::Value::Null
            })
        })
        .collect();
    let mut report = build_report(
        opts,
        &plan,
        &shared,
        &requests,
        outcome,
        &sockets,
        Cpu {
            urls: nodes.clients.iter().map(|c| c.base().to_owned()).collect(),
            node_before: &loads_before,
            node_after: loads_after,
            loadgen: cpu_after.zip(cpu_before).map(|(a, b)| a - b),
        },
        opts.watches_failover().then_some(FailoverInputs {
            nodes: &nodes,
            links,
            stats: &fo_stats,
        }),
    );
    if let Some(before) = metrics_before {
        // Summed over the nodes that answered both times.
        let mut repair_node = std::collections::BTreeMap::new();
        let mut node = std::collections::BTreeMap::new();
        let mut answered = 0;
        for (c, before) in nodes.clients.iter().zip(&before) {
            match c.metrics() {
                Ok(after) => {
                    answered += 1;
                    if repair_on {
                        for (k, v) in
                            repair::deltas(&repair::scrape(before), &repair::scrape(&after))
                        {
                            *repair_node.entry(k).or_insert(0) += v;
                        }
                    }
                    for (k, v) in counters.deltas(before, &after) {
                        *node.entry(k).or_insert(0) += v;
                    }
                }
                Err(e) => eprintln!(
                    "sfu-loadgen: GET {}/metrics at the end failed: {e:#}",
                    c.base()
                ),
            }
        }
        if answered > 0 {
            report.repair.node = repair_node;
            if let Some(sc) = report.simulcast.as_mut() {
                sc.node = node.clone();
            }
            if let Some(ln) = report.last_n.as_mut() {
                ln.node = node;
            }
        }
    }
    report.joins = joins.times_ns.len();
    report.joins_s = joins.total_ns as f64 / 1e9;
    report.join_ms_p50 = quantile_ms(&joins.times_ns, 0.5);
    report.join_ms_max = quantile_ms(&joins.times_ns, 1.0);
    drop(guard);
    Ok(report)
}

fn validate(opts: &Options) -> anyhow::Result<()> {
    if !(opts.duration > 0.0 && opts.duration <= 86_400.0) {
        bail!("--duration must be in (0, 86400] seconds");
    }
    if opts.sample_every == 0 {
        bail!("--sample-every must be at least 1");
    }
    if opts.video_kbps() == 0 || opts.video_kbps() > 100_000 {
        bail!("--video-kbps must be in 1..=100000");
    }
    if !(1..=60).contains(&opts.video_fps) {
        bail!("--video-fps must be in 1..=60");
    }
    if !(0.0..=3600.0).contains(&opts.keyframe_secs) {
        bail!("--keyframe-secs must be in [0, 3600]");
    }
    if !(0.0..=86_400.0).contains(&opts.layer_cap_secs) {
        bail!("--layer-cap-secs must be in [0, 86400]");
    }
    if opts.simulcast && opts.scenario != Scenario::Rooms {
        bail!("--simulcast needs scenario rooms");
    }
    if opts.layer_cap_secs > 0.0 && !opts.simulcast {
        bail!("--layer-cap-secs needs --simulcast");
    }
    for (flag, p) in [
        ("--loss-percent", opts.loss_percent),
        ("--publisher-loss-percent", opts.publisher_loss_percent),
    ] {
        if !(0.0..=50.0).contains(&p) {
            bail!("{flag} must be in [0, 50]");
        }
    }
    if opts.rejoin {
        if opts.nodes.as_ref().is_none_or(|n| n.0.len() < 2) {
            bail!("--rejoin needs --nodes with at least two nodes");
        }
        if opts.scenario != Scenario::Rooms {
            // Switches and slots address endpoints by their first id.
            bail!("--rejoin needs scenario rooms");
        }
        if opts.layer_cap_secs > 0.0 {
            bail!("--rejoin does not go with --layer-cap-secs");
        }
        if opts.rejoin_threads == 0 {
            bail!("--rejoin-threads must be at least 1");
        }
    }
    if let Some(at) = opts.kill_at
        && !(at >= 0.0 && at < opts.duration)
    {
        bail!("--kill-at must be in [0, --duration)");
    }
    if let Some(pid) = opts.kill_pid
        && (pid == 0 || pid == std::process::id() || i32::try_from(pid).is_err())
    {
        bail!("--kill-pid must name another process");
    }
    if let Some(prefix) = &opts.room_prefix
        && (prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        bail!("--room-prefix must be letters, digits, '-', '_' or '.'");
    }
    if opts.repair() && opts.scenario != Scenario::Rooms {
        // A `both` peer's socket is read by a receive thread, not by the
        // sender that would answer the node's NACKs.
        bail!("--nack and the loss options need scenario rooms");
    }
    match opts.scenario {
        Scenario::Rooms => {
            if opts.rooms == 0 || opts.publishers == 0 || opts.subscribers == 0 {
                bail!("--rooms, --publishers and --subscribers must be at least 1");
            }
            if opts.rooms * (opts.publishers + opts.subscribers) > 20_000 {
                bail!("more than 20000 endpoints");
            }
        }
        Scenario::LastN => {
            if opts.participants < 2 || opts.participants > 20_000 {
                bail!("--participants must be in 2..=20000");
            }
            if opts.talkers == 0 || opts.talkers * 2 > opts.participants {
                bail!("--talkers must be in 1..=participants/2");
            }
            if opts.video_slots == 0 || opts.audio_slots == 0 {
                bail!("--video-slots and --audio-slots must be at least 1");
            }
            if usize::from(opts.video_slots) + usize::from(opts.audio_slots) > 1024 {
                bail!("more than 1024 slots per participant");
            }
            if !(opts.switch_secs >= 1.0 && opts.switch_secs <= 3600.0) {
                bail!("--switch-secs must be in [1, 3600] in scenario last-n");
            }
        }
        Scenario::SeedMeeting => {
            if opts.participants < 2 || opts.participants > 20_000 {
                bail!("--participants must be in 2..=20000");
            }
            if opts.speakers == 0 {
                bail!("--speakers must be at least 1");
            }
            let period = opts.switch_secs * 1e3;
            let window = (opts.switch_budget_ms + 2 * opts.switch_grace_ms) as f64;
            if !(period >= 1.0 && window < period) {
                bail!("--switch-secs must exceed the switch budget plus twice the grace");
            }
        }
    }
    Ok(())
}

fn bind_sockets(
    opts: &Options,
    plan: &Plan,
    blocking_receivers: bool,
) -> anyhow::Result<Vec<PeerSocket>> {
    plan.peers
        .iter()
        .map(|peer| {
            let receives = peer.receives != Receives::Nothing;
            let read_timeout = match (receives, peer.publishes.is_empty()) {
                // Publisher answering NACKs or keyframe requests: polled
                // by the sender.
                (false, false) if opts.polls_publishers() => Some(Duration::ZERO),
                // Publisher only: recv is never called; blocking sends.
                (false, _) => Some(Duration::from_millis(100)),
                (true, true) if blocking_receivers => Some(Duration::from_millis(20)),
                _ => Some(Duration::ZERO),
            };
            let options = SocketOptions {
                buffer_bytes: opts.socket_buffer_bytes,
                gro: receives,
                gso: !peer.publishes.is_empty(),
                read_timeout,
                reuse_port: false,
            };
            let socket = BatchSocket::bind(SocketAddr::new(opts.bind, 0), 16, &options)
                .with_context(|| format!("binding a UDP socket on {}", opts.bind))?;
            let local = socket.local_addr()?;
            Ok(PeerSocket {
                socket: Mutex::new(socket),
                local,
            })
        })
        .collect()
}

/// What setup made.
struct SetUp {
    setups: Vec<PeerSetup>,
    /// Each peer's request, to ask again (`--rejoin`).
    specs: Vec<JoinSpec>,
    /// Each peer's endpoint and the node that holds it.
    joined: Vec<Joined>,
    joins: JoinTimes,
}

fn set_up(
    opts: &Options,
    plan: &Plan,
    nodes: &Nodes,
    sockets: &[PeerSocket],
    guard: &mut RoomsGuard,
    rng: &mut impl Rng,
) -> anyhow::Result<SetUp> {
    let nonce: u16 = rng.random();
    let pid = std::process::id();
    let prefix = opts
        .room_prefix
        .clone()
        .unwrap_or_else(|| format!("lg-{pid}-{nonce:04x}"));
    let mut room_names = Vec::with_capacity(plan.rooms);
    for r in 0..plan.rooms {
        let name = match opts.scenario {
            Scenario::Rooms => format!("{prefix}-{r}"),
            Scenario::SeedMeeting | Scenario::LastN => format!("{prefix}-meeting"),
        };
        let via = &nodes.clients[r % nodes.clients.len()];
        if !via.create_room_if_absent(&name)? {
            eprintln!("sfu-loadgen: room {name} exists; joining it");
        }
        guard.rooms.push(name.clone());
        room_names.push(name);
    }
    let master_len = opts.profile.key_len() + opts.profile.salt_len();
    let mut setups = Vec::with_capacity(plan.peers.len());
    let mut specs = Vec::with_capacity(plan.peers.len());
    let mut joined = Vec::with_capacity(plan.peers.len());
    let mut joins = JoinTimes {
        times_ns: Vec::with_capacity(plan.peers.len()),
        total_ns: 0,
    };
    let all_joins = Instant::now();
    for (p, peer) in plan.peers.iter().enumerate() {
        let mut master = vec![0u8; master_len];
        rng.fill(&mut master[..]);
        let tracks: Vec<Track> = peer
            .publishes
            .iter()
            .map(|&s| {
                let stream = &plan.streams[s];
                Track {
                    kind: stream.kind,
                    ssrc: stream.ssrc,
                    payload_type: stream.payload_type,
                    // The node NACKs video only.
                    rtx: (opts.repair() && stream.kind == Kind::Video).then(|| {
                        (
                            repair::publisher_rtx_ssrc(stream.ssrc),
                            repair::PUBLISHER_RTX_PT,
                        )
                    }),
                    layer_of: stream.layer_of,
                }
            })
            .collect();
        let explicit = plan.subscription(p, 0);
        let subscribe = match (&peer.receives, explicit) {
            (Receives::Nothing, _) => SubscribeSpec::Omit,
            (Receives::Slots { video, audio }, _) => SubscribeSpec::Slots(*video, *audio),
            (_, Some((video, audio))) => SubscribeSpec::Explicit(video, audio),
            (_, None) => SubscribeSpec::All,
        };
        // Last-N participants are named (their own media never fills
        // their slots by identity, not by endpoint).
        let identity = matches!(peer.receives, Receives::Slots { .. }).then(|| format!("lg-{p}"));
        let audio_level_extension = peer
            .publishes
            .iter()
            .any(|&s| plan.streams[s].audio_level)
            .then_some(plan::AUDIO_LEVEL_EXTENSION);
        let room = &room_names[peer.room];
        let spec = JoinSpec {
            room: room.clone(),
            role: peer.role,
            master,
            tracks,
            // Publishers are learnt by comedia; receivers are told.
            remote: (peer.role != Role::Publish).then_some(sockets[p].local),
            subscribe,
            rtx_payload_types: (opts.repair() && peer.role != Role::Publish)
                .then_some(repair::SUBSCRIBER_RTX_PTS),
            identity,
            audio_level_extension,
        };
        let n = nodes.next();
        let join = Instant::now();
        let endpoint = nodes.clients[n]
            .create_endpoint(room, &spec.request(opts.profile))
            .with_context(|| {
                format!("creating endpoint {p} in room {room} via {}", nodes.url(n))
            })?;
        joins.times_ns.push(join.elapsed().as_nanos() as u64);
        let holder = nodes.holder(n, endpoint.served_by.as_deref());
        if nodes.clients.len() > 1 && (p == 0 || plan.peers[p - 1].room != peer.room) {
            eprintln!(
                "sfu-loadgen: room {room} is on node {} ({}, media {})",
                nodes.url(holder),
                nodes.ids.get(holder).map_or("?", String::as_str),
                endpoint.media
            );
        }
        setups.push(PeerSetup {
            room: room.clone(),
            id: endpoint.id.clone(),
            media: endpoint.media,
            master: spec.master.clone(),
            node_master: endpoint.node_master.clone(),
            consumers: endpoint.consumers.clone(),
        });
        joined.push(Joined::new(holder, endpoint));
        specs.push(spec);
    }
    joins.total_ns = all_joins.elapsed().as_nanos() as u64;
    Ok(SetUp {
        setups,
        specs,
        joined,
        joins,
    })
}

/// The `q` quantile of `ns`, in ms (0 when empty).
fn quantile_ms(ns: &[u64], q: f64) -> f64 {
    let mut sorted = ns.to_vec();
    sorted.sort_unstable();
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |&t| t as f64 / 1e6)
}

/// How long the endpoint creations of setup took.
struct JoinTimes {
    /// Each join's round trip, in order.
    times_ns: Vec<u64>,
    /// All joins, from the first request to the last answer.
    total_ns: u64,
}

/// Counters the threads publish while running.
struct Shared {
    tx: sender::Shared,
    rx: Vec<receiver::Shared>,
}

impl Shared {
    fn new(plan: &Plan, recv_threads: usize) -> Self {
        Self {
            tx: sender::Shared::new(plan),
            rx: (0..recv_threads)
                .map(|_| receiver::Shared::default())
                .collect(),
        }
    }

    fn rx_packets(&self) -> u64 {
        self.rx.iter().map(|r| r.load(&r.packets)).sum()
    }

    fn rx_counted(&self) -> u64 {
        self.rx.iter().map(|r| r.load(&r.counted)).sum()
    }

    /// One receive counter summed over the threads.
    fn sum(&self, f: impl Fn(&receiver::Shared) -> &AtomicU64) -> u64 {
        self.rx.iter().map(|r| r.load(f(r))).sum()
    }

    /// Expected packets of span-counted consumers so far.
    fn rx_span(&self) -> u64 {
        self.rx.iter().map(|r| r.load(&r.span)).sum()
    }

    fn latency(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for r in &self.rx {
            s.merge(&r.latency.snapshot());
        }
        s
    }
}

struct Outcome {
    sent_for: sender::Summary,
    switches: SwitchStats,
    caps: CapStats,
    /// What each receiving peer counted.
    per_viewer: Vec<receiver::Viewer>,
    /// Last-N slot switches of every viewer.
    slot_switches: receiver::SwitchSamples,
}

/// The node counters a run reports besides repair's.
struct NodeCounters {
    names: &'static [&'static str],
}

impl NodeCounters {
    fn for_options(opts: &Options) -> Self {
        Self {
            names: match opts.scenario {
                Scenario::LastN => LAST_N_COUNTERS,
                _ if opts.simulcast => SIMULCAST_COUNTERS,
                _ => &[],
            },
        }
    }

    /// Their changes between two `/metrics` texts.
    fn deltas(&self, before: &str, after: &str) -> std::collections::BTreeMap<String, u64> {
        let scrape = |t| repair::scrape_named(t, self.names, &[]);
        repair::deltas(&scrape(before), &scrape(after))
            .into_iter()
            .collect()
    }
}

struct Cpu<'a> {
    /// The nodes' URLs.
    urls: Vec<String>,
    /// Each node's `/v1/load` at the start and at the end (`null` if it
    /// did not answer).
    node_before: &'a [serde_json::Value],
    node_after: Vec<serde_json::Value>,
    loadgen: Option<f64>,
}

impl Cpu<'_> {
    /// Per worker CPU seconds over the run and the `node_load` of the
    /// report: one node's as they are; with several, the workers of each
    /// node that answered at the end in `--nodes` order, and an object of
    /// each node's load by URL.
    fn node(mut self) -> (Vec<f64>, serde_json::Value) {
        if self.node_after.len() == 1 {
            let after = self.node_after.pop().unwrap_or_default();
            return (node_cpu_deltas(&self.node_before[0], &after), after);
        }
        let mut cpu = Vec::new();
        let mut load = serde_json::Map::new();
        for ((url, before), after) in self
            .urls
            .into_iter()
            .zip(self.node_before)
            .zip(self.node_after)
        {
            cpu.extend(node_cpu_deltas(before, &after));
            load.insert(url, after);
        }
        (cpu, serde_json::Value::Object(load))
    }
}

/// What the failover report is made of.
struct FailoverInputs<'a> {
    nodes: &'a Nodes,
    links: Option<&'a Links>,
    stats: &'a rejoin::Stats,
}

/// A progress line's failover figures, once some peer's node went down.
fn failover_tick(plan: &Plan, links: &Links, stats: &rejoin::Stats) -> Option<FailoverTick> {
    let kill_ns = stats.kill_ns.load(Ordering::Relaxed);
    let mut tick = FailoverTick {
        flagged: 0,
        rejoined: 0,
        subscribers: 0,
        back: 0,
        back_p50_ms: None,
    };
    let mut back = Vec::new();
    for p in 0..links.len() {
        let (failed, _, back_ns, rejoins) = links.times(p);
        if failed == 0 {
            continue;
        }
        tick.flagged += 1;
        if rejoins == 0 {
            continue;
        }
        tick.rejoined += 1;
        if plan.is_receiver(p) {
            tick.subscribers += 1;
            if back_ns > 0 {
                tick.back += 1;
                let reference = if kill_ns > 0 { kill_ns } else { failed };
                back.push(back_ns.saturating_sub(reference));
            }
        }
    }
    tick.back_p50_ms = Percentiles::of(back).p50_ms;
    (tick.flagged > 0).then_some(tick)
}

/// The failover report: kill, nodes down, rejoins and when media came
/// back, from the links; `counts` = (missed, expected outside, counted
/// outside) of the affected subscribers.
fn failover_report(
    plan: &Plan,
    inputs: &FailoverInputs<'_>,
    counts: (u64, u64, u64),
    stale_packets: u64,
    late_consumers: u64,
    kill_pid: Option<u32>,
) -> FailoverReport {
    let stats = inputs.stats;
    let kill_ns = stats.kill_ns.load(Ordering::Relaxed);
    let kill = (kill_ns > 0).then_some(kill_ns);
    let kill_error = stats
        .kill_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut report = FailoverReport {
        nodes: (0..inputs.nodes.clients.len())
            .map(|n| inputs.nodes.url(n).to_owned())
            .collect(),
        kill_pid,
        kill_s: kill.map(|k| k as f64 / 1e9),
        kill_command_ms: kill.map(|_| stats.kill_took_ns.load(Ordering::Relaxed) as f64 / 1e6),
        kill_error,
        reference: if kill.is_some() { "kill" } else { "down" },
        down: stats
            .down_ns
            .iter()
            .enumerate()
            .filter_map(|(n, d)| {
                let d = d.load(Ordering::Relaxed);
                (d > 0).then(|| rejoin::NodeDown {
                    node: inputs.nodes.url(n).to_owned(),
                    down_s: d as f64 / 1e9,
                    after_kill_ms: kill.map(|k| (d as f64 - k as f64) / 1e6),
                })
            })
            .collect(),
        rejoin_attempts: stats.attempts.load(Ordering::Relaxed),
        rejoin_failures: stats.failures.load(Ordering::Relaxed),
        missed_packets: counts.0,
        expected_outside: counts.1,
        counted_outside: counts.2,
        loss_ratio_outside: loss_ratio(counts.2, counts.1),
        stale_packets,
        late_consumers,
        ..FailoverReport::default()
    };
    let Some(links) = inputs.links else {
        return report;
    };
    let (mut rejoin_ns, mut back_ns) = (Vec::new(), Vec::new());
    for p in 0..links.len() {
        let (failed, rejoined, back, rejoins) = links.times(p);
        if failed == 0 && rejoins == 0 {
            continue;
        }
        let reference = kill.unwrap_or(failed);
        report.rejoins += u64::from(rejoins);
        if rejoins > 0 {
            rejoin_ns.push(rejoined.saturating_sub(reference));
            if plan.is_receiver(p) {
                report.subscribers_rejoined += 1;
            } else {
                report.publishers_rejoined += 1;
            }
        } else {
            report.never_rejoined += 1;
        }
        if !plan.is_receiver(p) {
            continue;
        }
        let back_ms = (rejoins > 0 && back > 0).then(|| {
            let ns = back.saturating_sub(reference);
            back_ns.push(ns);
            ns as f64 / 1e6
        });
        if back_ms.is_some() {
            report.subscribers_back += 1;
        } else {
            report.subscribers_never_back += 1;
        }
        report.subscribers.push(rejoin::SubscriberFailover {
            peer: p,
            rejoins,
            rejoined_ms: rejoined.saturating_sub(reference) as f64 / 1e6,
            back_ms,
        });
    }
    report.rejoin = Percentiles::of(rejoin_ns);
    report.back = Percentiles::of(back_ns);
    report
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    opts: &Options,
    plan: &Plan,
    shared: &Shared,
    requests: &sender::KeyframeRequests,
    mut outcome: Outcome,
    sockets: &[PeerSocket],
    cpu: Cpu<'_>,
    failover: Option<FailoverInputs<'_>>,
) -> Report {
    let sent = shared.tx.sent(plan);
    let duration_s = outcome.sent_for.duration_s.max(1e-9);
    let mut expected_total = 0;
    let mut worst: f64 = 0.0;
    // (missed in the failover, expected and counted outside it) of the
    // subscribers whose node went down.
    let mut fo = (0u64, 0u64, 0u64);
    let links = failover.as_ref().and_then(|f| f.links);
    for v in &outcome.per_viewer {
        let by_sent = plan.expected(v.viewer, &sent) + v.span;
        let affected = v.rejoined || links.is_some_and(|l| l.times(v.viewer).0 > 0);
        let expected = if affected {
            // Every consumer by its sequence number span, before the kill
            // and after the rejoin; what was sent outside the spans was
            // missed in the failover.
            fo.0 += by_sent.saturating_sub(v.all_span);
            fo.1 += v.all_span;
            fo.2 += v.counted;
            v.all_span
        } else {
            by_sent
        };
        expected_total += expected;
        worst = worst.max(loss_ratio(v.counted, expected));
    }
    let sum = |f: fn(&receiver::Shared) -> &std::sync::atomic::AtomicU64| -> u64 {
        shared.rx.iter().map(|r| r.load(f(r))).sum()
    };
    let rx_packets = sum(|r| &r.packets);
    let rx_bytes = sum(|r| &r.bytes);
    let rx_counted = sum(|r| &r.counted);
    let srtp_errors = sum(|r| &r.srtp_errors);
    let hist = shared.latency();
    let loadgen_cpu_seconds = cpu.loadgen.unwrap_or(f64::NAN);
    let (node_cpu_seconds, node_load) = cpu.node();
    let (mut video, mut audio) = (0, 0);
    for (s, n) in sent.total.iter().enumerate() {
        match plan.streams[s].kind {
            Kind::Video => video += n,
            Kind::Audio => audio += n,
        }
    }
    let target_tx_pps: f64 = plan
        .streams
        .iter()
        .map(|s| match s.kind {
            Kind::Audio => media::AUDIO_PPS as f64,
            Kind::Video => {
                let fps = s.cadence.per_second as f64;
                let bytes_per_frame = f64::from(s.kbps) * 1000.0 / 8.0 / fps;
                (bytes_per_frame / media::VIDEO_PAYLOAD as f64).ceil() * fps
            }
        })
        .sum();
    let expected_method = match &plan.switch {
        None if plan.talk.is_some() => "per viewer and consumer (last-N slot): every output \
             sequence number from its first to its last packet, summed; received = decrypted \
             packets attributed by their payload marker to another participant"
            .to_owned(),
        None if opts.simulcast => "per subscriber: every audio packet sent by every publisher \
             of its room, plus per video consumer (the layer the node chose) every output \
             sequence number from its first to its last packet, summed; received = RTP datagrams \
             from its consumer SSRCs"
            .to_owned(),
        None => "per subscriber: every packet sent by every publisher of its room \
                 (subscribe \"all\"), summed; received = RTP datagrams from its consumer SSRCs"
            .to_owned(),
        Some(sw) => format!(
            "per viewer: every packet of its 3 audio publishers, plus per speaker period the \
             video packets sent by that period's speaker (the next one when it is the viewer), \
             excluding video sent within [switch - {g} ms, switch + {b} ms + {g} ms) of each \
             switch (every {p} s) on both sides; received = decrypted packets attributed by their \
             payload marker (publisher, send time)",
            g = sw.timing.grace_ns / 1_000_000,
            b = sw.timing.budget_ns / 1_000_000,
            p = sw.timing.period_ns as f64 / 1e9,
        ),
    };
    let tx = &outcome.sent_for;
    let loss = loss_ratio(rx_counted, expected_total);
    let repair = RepairReport {
        enabled: opts.repair(),
        loss_percent: opts.loss_percent,
        publisher_loss_percent: opts.publisher_loss_percent,
        sim_lost_packets: sum(|r| &r.sim_lost),
        repaired_by_rtx: sum(|r| &r.rtx_repaired),
        late_filled: sum(|r| &r.late_filled),
        never_repaired: expected_total.saturating_sub(rx_counted),
        residual_loss_ratio: loss,
        subscriber_nacks: sum(|r| &r.nacks),
        subscriber_nacked_seqs: sum(|r| &r.nacked_seqs),
        subscriber_gave_up: sum(|r| &r.nack_gave_up),
        subscriber_untracked: sum(|r| &r.untracked),
        rtx_received: sum(|r| &r.rtx),
        duplicates: sum(|r| &r.rtx_duplicates),
        publisher_withheld: tx.withheld,
        publisher_nacks_in: tx.nacks_in,
        publisher_nacked_seqs: tx.nacked_seqs,
        publisher_rtx_sent: tx.rtx_sent,
        publisher_rtx_not_cached: tx.rtx_not_cached,
        node: Default::default(),
    };
    let simulcast = opts.simulcast.then(|| SimulcastReport {
        layer_kbps: plan::layer_kbps(opts.video_kbps()),
        keyframe_secs: opts.keyframe_secs,
        tx_keyframes: tx.keyframes,
        tx_keyframes_requested: tx.keyframes_requested,
        keyframe_requests_in: requests.received.load(Ordering::Relaxed),
        rx_layer_packets: [
            sum(|r| &r.layer_packets[0]),
            sum(|r| &r.layer_packets[1]),
            sum(|r| &r.layer_packets[2]),
        ],
        rx_keyframes: sum(|r| &r.keyframes),
        layer_switches: sum(|r| &r.layer_switches),
        switch_seq_gaps: sum(|r| &r.switch_seq_gaps),
        switches_not_on_keyframe: sum(|r| &r.switch_not_keyframe),
        picture_id_jumps: sum(|r| &r.picture_id_jumps),
        cap_steps: outcome.caps.steps,
        cap_requests: outcome.caps.requests,
        cap_errors: outcome.caps.errors,
        node: Default::default(),
    });
    let last_n = plan.talk.as_ref().map(|talk| {
        let [audio_ns, video_ns] = std::mem::take(&mut outcome.slot_switches.latency_ns);
        let sw = &outcome.slot_switches;
        LastNReport {
            participants: talk.participants,
            video_slots: opts.video_slots,
            audio_slots: opts.audio_slots,
            talkers: talk.talkers,
            period_s: talk.period_ns as f64 / 1e9,
            periods_measured: (0..talk.periods()).filter(|&k| talk.measured(k)).count(),
            video: SlotLatency::new(video_ns, sw.expected[1], sw.already_shown[1], sw.missed[1]),
            audio: SlotLatency::new(audio_ns, sw.expected[0], sw.already_shown[0], sw.missed[0]),
            self_received: sum(|r| &r.self_received),
            tx_keyframes: tx.keyframes,
            keyframe_requests_in: requests.received.load(Ordering::Relaxed),
            node: Default::default(),
        }
    });
    Report {
        scenario: opts.scenario.name(),
        profile: opts.profile.name(),
        rooms: plan.rooms,
        endpoints: plan.peers.len(),
        streams: plan.streams.len(),
        video_fps: opts.video_fps,
        duration_s,
        tx_packets: tx.packets,
        tx_video_packets: video,
        tx_audio_packets: audio,
        tx_bytes: tx.bytes,
        send_errors: tx.send_errors,
        target_tx_pps,
        tx_pps: tx.packets as f64 / duration_s,
        sender_late_us_max: tx.late_ns_max as f64 / 1e3,
        rx_packets,
        rx_bytes,
        rx_counted_packets: rx_counted,
        expected_rx_packets: expected_total,
        loss_ratio: loss,
        loss_ratio_worst_subscriber: worst,
        expected_method,
        rx_pps: rx_packets as f64 / duration_s,
        rx_bps: rx_bytes as f64 * 8.0 / duration_s,
        rx_rtcp_packets: sum(|r| &r.rtcp),
        rx_unexpected_packets: sum(|r| &r.unexpected),
        recv_errors: sum(|r| &r.recv_errors),
        verified_packets: sum(|r| &r.verified),
        integrity_errors: srtp_errors + sum(|r| &r.pattern_errors),
        srtp_errors,
        misrouted_packets: sum(|r| &r.misrouted),
        rx_excluded_packets: sum(|r| &r.excluded),
        out_of_order: sum(|r| &r.out_of_order),
        seq_gaps: sum(|r| &r.seq_gaps),
        unannounced_ssrcs: sum(|r| &r.unannounced),
        latency_samples: hist.count(),
        latency_us_p50: hist.quantile(0.5).map(ns_to_us),
        latency_us_p90: hist.quantile(0.9).map(ns_to_us),
        latency_us_p99: hist.quantile(0.99).map(ns_to_us),
        latency_us_max: (hist.count() > 0).then(|| ns_to_us(hist.max())),
        switches: outcome.switches.switches,
        switch_requests: outcome.switches.requests,
        switch_errors: outcome.switches.errors,
        switch_ms_max: outcome.switches.slowest_ns as f64 / 1e6,
        switch_overruns: outcome.switches.overruns,
        switch_request_ms_p50: quantile_ms(&outcome.switches.request_ns, 0.5),
        switch_request_ms_p99: quantile_ms(&outcome.switches.request_ns, 0.99),
        joins: 0,
        joins_s: 0.0,
        join_ms_p50: 0.0,
        join_ms_max: 0.0,
        node_cpu_utilisation: node_cpu_seconds.iter().map(|c| c / duration_s).collect(),
        node_cpu_seconds,
        node_load,
        loadgen_cpu_seconds,
        gso: plan
            .peers
            .iter()
            .zip(sockets)
            .filter(|(p, _)| !p.publishes.is_empty())
            .all(|(_, s)| lock(&s.socket).gso_enabled()),
        gro: plan
            .peers
            .iter()
            .zip(sockets)
            .filter(|(p, _)| p.receives != Receives::Nothing)
            .all(|(_, s)| lock(&s.socket).gro_enabled()),
        repair,
        simulcast,
        last_n,
        failover: failover.map(|inputs| {
            failover_report(
                plan,
                &inputs,
                fo,
                sum(|r| &r.stale),
                sum(|r| &r.late_consumers),
                opts.kill_pid,
            )
        }),
    }
}

/// Locks a peer's socket; a poisoned lock (a thread panicked while holding
/// it) still holds a usable socket.
fn lock(m: &Mutex<BatchSocket>) -> std::sync::MutexGuard<'_, BatchSocket> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// `1 − received / expected`, 0 when nothing was expected.
pub fn loss_ratio(received: u64, expected: u64) -> f64 {
    if expected == 0 {
        return 0.0;
    }
    (expected as f64 - received as f64) / expected as f64
}

/// Per worker (by its `worker` index): `cpu_seconds` after − before.
pub fn node_cpu_deltas(before: &serde_json::Value, after: &serde_json::Value) -> Vec<f64> {
    let workers = |v: &serde_json::Value| -> Vec<(u64, f64)> {
        v["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .enumerate()
                    .map(|(i, w)| {
                        (
                            w["worker"].as_u64().unwrap_or(i as u64),
                            w["cpu_seconds"].as_f64().unwrap_or(0.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = workers(before);
    let mut after = workers(after);
    after.sort_by_key(|&(w, _)| w);
    after
        .iter()
        .map(|&(w, cpu)| {
            let base = before
                .iter()
                .find(|&&(b, _)| b == w)
                .map_or(0.0, |&(_, c)| c);
            (cpu - base).max(0.0)
        })
        .collect()
}

struct SwitchConfig<'a> {
    plan: &'a Plan,
    switch: &'a plan::SwitchPlan,
    setups: &'a [PeerSetup],
    client: &'a ControlClient,
    origin: Instant,
    workers: usize,
    mode: SwitchMode,
    stop: &'a AtomicBool,
}

#[derive(Debug, Default)]
struct SwitchStats {
    switches: usize,
    requests: u64,
    errors: u64,
    slowest_ns: u64,
    overruns: u64,
    /// Each subscription change's round trip.
    request_ns: Vec<u64>,
}

/// At each switch time, re-points the video of every viewer whose speaker
/// changes, from `workers` parallel clients.
fn run_switches(cfg: SwitchConfig<'_>) -> SwitchStats {
    let mut stats = SwitchStats::default();
    let viewers: Vec<usize> = (0..cfg.plan.peers.len())
        .filter(|&v| {
            matches!(
                cfg.plan.peers[v].receives,
                Receives::Explicit {
                    follows_speaker: true,
                    ..
                }
            )
        })
        .collect();
    for k in 1..=cfg.switch.switches {
        let at = Duration::from_nanos(cfg.switch.switch_at(k));
        loop {
            if cfg.stop.load(Ordering::Relaxed) {
                return stats;
            }
            let now = cfg.origin.elapsed();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(50)));
        }
        let changed: Vec<usize> = viewers
            .iter()
            .copied()
            .filter(|&v| cfg.switch.speaker(k, v) != cfg.switch.speaker(k - 1, v))
            .collect();
        let results: Vec<(u64, u64, Vec<u64>)> = std::thread::scope(|s| {
            let chunk = changed.len().div_ceil(cfg.workers).max(1);
            let handles: Vec<_> = changed
                .chunks(chunk)
                .map(|part| {
                    let client = cfg.client.clone();
                    s.spawn(move || {
                        let (mut ok, mut err) = (0, 0);
                        let mut times = Vec::with_capacity(part.len());
                        if cfg.mode == SwitchMode::Batch {
                            // Requests stay under the node's 64 KiB body limit.
                            for batch in part.chunks(BATCH_CHANGES) {
                                let changes: Vec<(&str, Vec<u32>, Vec<u32>)> = batch
                                    .iter()
                                    .filter_map(|&v| {
                                        let (video, audio) = cfg.plan.subscription(v, k)?;
                                        Some((cfg.setups[v].id.as_str(), video, audio))
                                    })
                                    .collect();
                                let room = &cfg.setups[batch[0]].room;
                                let sent = Instant::now();
                                let result = client.set_subscriptions(room, &changes);
                                times.push(sent.elapsed().as_nanos() as u64);
                                match result {
                                    Ok(refused) => {
                                        err += refused as u64;
                                        ok += (changes.len() - refused) as u64;
                                    }
                                    Err(e) => {
                                        eprintln!("sfu-loadgen: switch {k}: {e:#}");
                                        err += changes.len() as u64;
                                    }
                                }
                            }
                            return (ok, err, times);
                        }
                        for &v in part {
                            let Some((video, audio)) = cfg.plan.subscription(v, k) else {
                                continue;
                            };
                            let setup = &cfg.setups[v];
                            let sent = Instant::now();
                            let result =
                                client.set_subscription(&setup.room, &setup.id, &video, &audio);
                            times.push(sent.elapsed().as_nanos() as u64);
                            match result {
                                Ok(_) => ok += 1,
                                Err(e) => {
                                    if err == 0 {
                                        eprintln!("sfu-loadgen: switch {k}, viewer {v}: {e:#}");
                                    }
                                    err += 1;
                                }
                            }
                        }
                        (ok, err, times)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or((0, 0, Vec::new())))
                .collect()
        });
        let took = cfg.origin.elapsed().saturating_sub(at).as_nanos() as u64;
        stats.switches += 1;
        stats.requests += results.iter().map(|r| r.0 + r.1).sum::<u64>();
        stats.errors += results.iter().map(|r| r.1).sum::<u64>();
        stats
            .request_ns
            .extend(results.into_iter().flat_map(|r| r.2));
        stats.slowest_ns = stats.slowest_ns.max(took);
        if took > cfg.switch.timing.budget_ns {
            stats.overruns += 1;
        }
    }
    stats
}

struct CapConfig<'a> {
    plan: &'a Plan,
    setups: &'a [PeerSetup],
    client: &'a ControlClient,
    origin: Instant,
    period: Duration,
    end: Duration,
    stop: &'a AtomicBool,
}

#[derive(Debug, Default)]
struct CapStats {
    steps: u64,
    requests: u64,
    errors: u64,
}

/// The caps of `--layer-cap-secs`, in turn: layer 0, layer 1, none.
const CAP_CYCLE: [Option<u8>; 3] = [Some(0), Some(1), None];

/// Every `period` until the end of sending, caps every subscriber's video
/// consumers at the next step of [`CAP_CYCLE`].
fn run_layer_caps(cfg: CapConfig<'_>) -> CapStats {
    let mut stats = CapStats::default();
    let subscribers: Vec<usize> = (0..cfg.plan.peers.len())
        .filter(|&v| cfg.plan.is_receiver(v))
        .collect();
    for step in 1u32.. {
        let at = cfg.period.saturating_mul(step);
        if at >= cfg.end {
            break;
        }
        loop {
            if cfg.stop.load(Ordering::Relaxed) {
                return stats;
            }
            let now = cfg.origin.elapsed();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(50)));
        }
        let cap = CAP_CYCLE[(step as usize - 1) % CAP_CYCLE.len()];
        for &v in &subscribers {
            let setup = &cfg.setups[v];
            for c in setup.consumers.iter().filter(|c| c.kind == Kind::Video) {
                stats.requests += 1;
                if let Err(e) = cfg
                    .client
                    .set_max_layer(&setup.room, &setup.id, c.slot, cap)
                {
                    if stats.errors == 0 {
                        eprintln!("sfu-loadgen: layer cap step {step}, viewer {v}: {e:#}");
                    }
                    stats.errors += 1;
                }
            }
        }
        stats.steps += 1;
    }
    stats
}

/// Pins the calling thread to `cpu`, if given (best effort).
fn pin(cpu: Option<usize>) {
    if let Some(id) = cpu
        && !core_affinity::set_for_current(core_affinity::CoreId { id })
    {
        eprintln!("sfu-loadgen: could not pin a thread to CPU {id}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[test]
    fn cli_parses_the_documented_flags() {
        let o = Options::try_parse_from([
            "sfu-loadgen",
            "--control",
            "http://127.0.0.1:7880",
            "--rooms",
            "2",
            "--publishers",
            "3",
            "--subscribers",
            "4",
            "--video-kbps",
            "2500",
            "--audio",
            "--duration",
            "5",
            "--json",
            "--profile",
            "AES_CM_128_HMAC_SHA1_80",
            "--scenario",
            "seed-meeting",
            "--bind",
            "127.0.0.1",
            "--cpu",
            "1",
        ])
        .expect("valid flags");
        assert_eq!(o.rooms, 2);
        assert_eq!(o.profile, Profile::Aes128CmHmacSha1_80);
        assert_eq!(o.scenario, Scenario::SeedMeeting);
        assert_eq!(o.cpu, Some(1));
        assert!(o.audio && o.json);
        assert!(Options::try_parse_from(["sfu-loadgen", "--profile", "NULL"]).is_err());
        let d = Options::default();
        assert_eq!(d.scenario, Scenario::Rooms);
        assert_eq!(d.sample_every, 16);
        assert!(validate(&d).is_ok());
        assert!(
            validate(&Options {
                duration: 0.0,
                ..d.clone()
            })
            .is_err()
        );
        assert!(
            validate(&Options {
                scenario: Scenario::SeedMeeting,
                switch_secs: 1.0,
                ..d
            })
            .is_err()
        );
    }

    #[test]
    fn loss_flags_turn_repair_on_unless_told_not_to() {
        let d = Options::default();
        assert_eq!((d.loss_percent, d.publisher_loss_percent), (0.0, 0.0));
        assert!(
            !d.repair(),
            "off by default: the README's runs are unchanged"
        );
        let o = Options::try_parse_from(["sfu-loadgen", "--loss-percent", "3"]).expect("valid");
        assert!(o.repair());
        let o = Options::try_parse_from([
            "sfu-loadgen",
            "--publisher-loss-percent",
            "2.5",
            "--nack",
            "false",
        ])
        .expect("valid");
        assert_eq!(o.publisher_loss_percent, 2.5);
        assert!(!o.repair());
        let o = Options::try_parse_from(["sfu-loadgen", "--nack"]).expect("valid");
        assert!(o.repair());
        assert!(validate(&o).is_ok());
        assert!(
            validate(&Options {
                scenario: Scenario::SeedMeeting,
                ..o.clone()
            })
            .is_err()
        );
        assert!(
            validate(&Options {
                loss_percent: 60.0,
                ..o
            })
            .is_err()
        );
    }

    #[test]
    fn simulcast_and_last_n_flags() {
        let o = Options::try_parse_from([
            "sfu-loadgen",
            "--simulcast",
            "--keyframe-secs",
            "2",
            "--layer-cap-secs",
            "1.5",
            "--video-kbps",
            "1500",
        ])
        .expect("valid flags");
        assert!(o.simulcast && o.polls_publishers() && !o.repair());
        assert_eq!((o.keyframe_secs, o.layer_cap_secs), (2.0, 1.5));
        assert_eq!(o.video_kbps(), 1500);
        assert!(validate(&o).is_ok());
        // Simulcast is a rooms option; caps need simulcast.
        for bad in [
            Options {
                scenario: Scenario::SeedMeeting,
                ..o.clone()
            },
            Options {
                simulcast: false,
                ..o.clone()
            },
            Options {
                keyframe_secs: -1.0,
                ..o.clone()
            },
            Options {
                layer_cap_secs: f64::NAN,
                ..o.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }

        let d = Options::default();
        assert_eq!((d.video_slots, d.audio_slots, d.talkers), (9, 3, 3));
        assert_eq!(d.video_kbps(), 2000);
        assert_eq!(d.keyframe_secs, 3.0);
        let l = Options::try_parse_from(["sfu-loadgen", "--scenario", "last-n"]).expect("valid");
        assert_eq!(l.scenario, Scenario::LastN);
        assert_eq!(l.scenario.name(), "last-n");
        assert_eq!((l.participants, l.video_kbps()), (500, 100));
        assert!(validate(&l).is_ok());
        for bad in [
            Options {
                talkers: 0,
                ..l.clone()
            },
            Options {
                talkers: 251,
                ..l.clone()
            },
            Options {
                video_slots: 0,
                ..l.clone()
            },
            Options {
                video_slots: 1000,
                audio_slots: 25,
                ..l.clone()
            },
            Options {
                switch_secs: 0.5,
                ..l.clone()
            },
            Options {
                loss_percent: 1.0,
                ..l.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slot_latency_quantiles() {
        let l = SlotLatency::new(vec![5_000_000, 1_000_000, 3_000_000, 2_000_000], 6, 1, 1);
        assert_eq!(
            (l.expected, l.measured, l.already_shown, l.missed),
            (6, 4, 1, 1)
        );
        assert_eq!(l.p50_ms, Some(3.0));
        assert_eq!(l.p99_ms, Some(5.0));
        assert_eq!(l.max_ms, Some(5.0));
        let empty = SlotLatency::new(Vec::new(), 0, 0, 0);
        assert_eq!((empty.p50_ms, empty.max_ms), (None, None));
    }

    #[test]
    fn node_cpu_deltas_per_worker() {
        let before = json!({"workers": [
            {"worker": 0, "cpu_seconds": 1.5}, {"worker": 1, "cpu_seconds": 2.0}
        ]});
        let after = json!({"workers": [
            {"worker": 1, "cpu_seconds": 5.0}, {"worker": 0, "cpu_seconds": 4.0}
        ]});
        assert_eq!(node_cpu_deltas(&before, &after), vec![2.5, 3.0]);
        assert_eq!(node_cpu_deltas(&json!(null), &after), vec![4.0, 5.0]);
        assert!(node_cpu_deltas(&before, &json!(null)).is_empty());
    }

    #[test]
    fn ssrc_base_in_decimal_or_hex() {
        let o = Options::try_parse_from(["sfu-loadgen", "--ssrc-base", "0x51f01000"])
            .expect("hex SSRC base");
        assert_eq!(o.ssrc_base, Some(0x51f0_1000));
        assert_eq!(parse_u32("4096"), Ok(4096));
        assert!(parse_u32("0x1_0000_0000").is_err());
        assert!(parse_u32("-1").is_err());
        assert_eq!(Options::default().ssrc_base, None);
    }

    #[test]
    fn cluster_flags_parse_and_validate() {
        let o = Options::try_parse_from([
            "sfu-loadgen",
            "--nodes",
            "http://127.0.0.1:7883,http://127.0.0.1:7881/",
            "--rejoin",
            "--kill-pid",
            "4242",
            "--kill-at",
            "5",
            "--duration",
            "15",
            "--room-prefix",
            "fo-4",
        ])
        .expect("valid flags");
        assert_eq!(
            o.node_urls(),
            vec!["http://127.0.0.1:7883", "http://127.0.0.1:7881"]
        );
        assert!(o.rejoin && o.watches_failover());
        assert_eq!((o.kill_pid, o.kill_at), (Some(4242), Some(5.0)));
        assert_eq!(o.rejoin_threads, 8);
        assert!(validate(&o).is_ok());
        let d = Options::default();
        assert_eq!(d.node_urls(), vec!["http://127.0.0.1:7880"]);
        assert!(!d.watches_failover() && d.room_prefix.is_none());
        // --kill-pid and --kill-at go together.
        assert!(Options::try_parse_from(["sfu-loadgen", "--kill-pid", "1"]).is_err());
        assert!(Options::try_parse_from(["sfu-loadgen", "--kill-at", "1"]).is_err());
        assert!(Options::try_parse_from(["sfu-loadgen", "--nodes", "127.0.0.1:1"]).is_err());
        for bad in [
            // One node has no other to rejoin through.
            Options {
                nodes: Some(NodeList(vec!["http://a".into()])),
                ..o.clone()
            },
            Options {
                nodes: None,
                ..o.clone()
            },
            Options {
                scenario: Scenario::SeedMeeting,
                ..o.clone()
            },
            Options {
                kill_at: Some(15.0),
                ..o.clone()
            },
            Options {
                kill_pid: Some(std::process::id()),
                ..o.clone()
            },
            Options {
                rejoin_threads: 0,
                ..o.clone()
            },
            Options {
                room_prefix: Some("a/b".into()),
                ..o.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        // A kill without rejoin is allowed (the outage is measured alone).
        assert!(
            validate(&Options {
                rejoin: false,
                nodes: None,
                ..o
            })
            .is_ok()
        );
    }

    fn three_nodes() -> Nodes {
        Nodes::new(
            (1..=3)
                .map(|i| {
                    ControlClient::new(
                        &format!("http://127.0.0.1:{i}"),
                        b"s",
                        Duration::from_secs(60),
                    )
                })
                .collect(),
            vec!["n1".into(), "n2".into(), "n3".into()],
        )
    }

    fn on_node(node: usize) -> Joined {
        Joined {
            node,
            media: SocketAddr::from(([127, 0, 0, 1], 7910 + 10 * node as u16)),
            node_master: vec![0; 28],
            consumers: Vec::new(),
        }
    }

    #[test]
    fn failover_is_timed_from_the_kill() {
        const MS: u64 = 1_000_000;
        // Peer 0 publishes, peers 1..=3 subscribe; all on node 0, which
        // is killed at 5 s and seen down 100 ms later.
        let plan = Plan::rooms(1, 1, 3, 500, false, false, 0x1000);
        let links = Links::new((0..4).map(|_| on_node(0)).collect());
        let stats = rejoin::Stats::new(3);
        stats.kill_ns.store(5000 * MS, Ordering::Relaxed);
        stats.kill_took_ns.store(2 * MS, Ordering::Relaxed);
        stats.down_ns[0].store(5100 * MS, Ordering::Relaxed);
        stats.attempts.store(9, Ordering::Relaxed);
        stats.failures.store(6, Ordering::Relaxed);
        assert!(
            failover_tick(&plan, &links, &stats).is_none(),
            "no one down yet"
        );
        assert_eq!(links.node_down(0, 5100 * MS), 4);
        links.swap(0, on_node(1), 6900 * MS);
        links.swap(1, on_node(1), 7000 * MS);
        links.swap(2, on_node(2), 7100 * MS);
        links.back(1, 7050 * MS);
        links.back(2, 7300 * MS);
        // Peer 3 never rejoins.
        let tick = failover_tick(&plan, &links, &stats).expect("a node is down");
        assert_eq!(
            (tick.flagged, tick.rejoined, tick.subscribers, tick.back),
            (4, 3, 2, 2)
        );
        assert_eq!(tick.back_p50_ms, Some(2300.0));
        let nodes = three_nodes();
        let inputs = FailoverInputs {
            nodes: &nodes,
            links: Some(&links),
            stats: &stats,
        };
        let r = failover_report(&plan, &inputs, (100, 1000, 990), 3, 1, Some(4242));
        assert_eq!((r.kill_s, r.kill_command_ms), (Some(5.0), Some(2.0)));
        assert_eq!(r.reference, "kill");
        assert_eq!(r.down.len(), 1);
        assert_eq!(r.down[0].node, "http://127.0.0.1:1");
        assert_eq!(r.down[0].after_kill_ms, Some(100.0));
        assert_eq!((r.publishers_rejoined, r.subscribers_rejoined), (1, 2));
        assert_eq!((r.rejoins, r.never_rejoined), (3, 1));
        assert_eq!((r.rejoin_attempts, r.rejoin_failures), (9, 6));
        assert_eq!((r.subscribers_back, r.subscribers_never_back), (2, 1));
        assert_eq!(
            (r.back.p50_ms, r.back.p99_ms, r.back.max_ms),
            (Some(2300.0), Some(2300.0), Some(2300.0))
        );
        assert_eq!(r.back_ms_of(1), Some(2050.0));
        assert_eq!(
            (r.rejoin.p50_ms, r.rejoin.max_ms),
            (Some(2000.0), Some(2100.0))
        );
        assert_eq!(r.subscribers.len(), 3);
        assert_eq!(r.subscribers[2].back_ms, None);
        assert_eq!((r.missed_packets, r.expected_outside), (100, 1000));
        assert!((r.loss_ratio_outside - 0.01).abs() < 1e-12);
        assert_eq!((r.stale_packets, r.late_consumers), (3, 1));
        let text = r.to_string();
        assert!(text.contains("kill -9 4242 at 5.000 s"), "{text}");
        assert!(
            text.contains("p50 2300 p99 2300 max 2300 ms (1 never)"),
            "{text}"
        );
        // Without a kill, from when the node was seen down.
        stats.kill_ns.store(0, Ordering::Relaxed);
        let r = failover_report(&plan, &inputs, (0, 0, 0), 0, 0, None);
        assert_eq!(r.reference, "down");
        assert_eq!(r.back_ms_of(1), Some(1950.0));
        assert_eq!(r.down[0].after_kill_ms, None);
    }

    #[test]
    fn node_cpu_of_several_nodes() {
        let before = [
            json!({"workers": [{"worker": 0, "cpu_seconds": 1.0}]}),
            json!({"workers": [{"worker": 0, "cpu_seconds": 2.0}]}),
        ];
        let cpu = Cpu {
            urls: vec!["http://a".into(), "http://b".into()],
            node_before: &before,
            node_after: vec![
                json!(null),
                json!({"workers": [{"worker": 0, "cpu_seconds": 2.5}]}),
            ],
            loadgen: None,
        };
        let (seconds, load) = cpu.node();
        assert_eq!(seconds, vec![0.5]);
        assert_eq!(load["http://a"], json!(null));
        assert_eq!(load["http://b"]["workers"][0]["cpu_seconds"], json!(2.5));
        let one = [json!({"workers": [{"worker": 0, "cpu_seconds": 1.0}]})];
        let cpu = Cpu {
            urls: vec!["http://a".into()],
            node_before: &one,
            node_after: vec![json!({"workers": [{"worker": 0, "cpu_seconds": 3.0}]})],
            loadgen: None,
        };
        let (seconds, load) = cpu.node();
        assert_eq!(seconds, vec![2.0]);
        assert_eq!(load["workers"][0]["cpu_seconds"], json!(3.0));
    }

    #[test]
    fn loss_ratio_edges() {
        assert_eq!(loss_ratio(0, 0), 0.0);
        assert_eq!(loss_ratio(90, 100), 0.1);
        assert!(loss_ratio(110, 100) < 0.0);
    }
}
