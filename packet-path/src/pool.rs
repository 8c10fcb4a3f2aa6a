//! Send buffers allocated once, and the queue of datagrams written into them.
//!
//! A [`SendPool`] holds `buffers` × [`BUFFER_BYTES`] bytes in one allocation,
//! a free list of buffer indices and a queue of written datagrams, all with
//! their final capacity from [`SendPool::new`] on. It is the router's
//! [`Transmit`]: [`buffer`](Transmit::buffer) hands out the next free buffer
//! (or counts an exhaustion), [`send`](Transmit::send) queues
//! `(buffer, len, dst)`. [`SendPool::flush`] then sends the queue with GSO
//! trains and returns every buffer to the free list.
//!
//! # Trains
//! The flush sorts the queue by `(destination, order of queueing)` — an
//! in-place unstable sort on a unique key, so no allocation and per-destination
//! order is kept — and cuts each destination's run into trains of equal-size
//! datagrams (the last may be shorter), at most [`MAX_GSO_SEGMENTS`] and
//! [`MAX_GSO_BYTES`]. A train is one `sendmmsg` message with one iovec per
//! pool buffer and a `UDP_SEGMENT` cmsg: the kernel concatenates the iovecs
//! and cuts the segments, so payloads are never copied in user space. With
//! GSO off, or for a destination backing off after the kernel refused its
//! train (see [`crate::io`], "GSO fallback"), each datagram is its own
//! message; other destinations keep their trains.

use std::net::SocketAddr;

use sfu_core::router::Transmit;

use crate::backend::Backend;
use crate::io::{BatchSocket, MAX_GSO_BYTES, MAX_GSO_SEGMENTS, SendMessages};

/// Size of one send buffer: a full MTU-sized datagram plus SRTP tags.
pub const BUFFER_BYTES: usize = 2048;

/// One queued datagram.
#[derive(Debug, Clone, Copy)]
struct Queued {
    dst: SocketAddr,
    seq: u32,
    buf: u32,
    len: u32,
}

/// What one [`SendPool::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel accepted.
    pub datagrams: u64,
    /// `sendmmsg` messages they took (fewer than datagrams with GSO).
    pub messages: u64,
    /// Datagrams dropped because their send failed.
    pub failed: u64,
}

/// Preallocated send buffers with a free list and a send queue.
#[derive(Debug)]
pub struct SendPool {
    storage: Box<[u8]>,
    free: Vec<u32>,
    queue: Vec<Queued>,
    /// Buffer handed out by the last `buffer()` and not yet queued.
    current: Option<u32>,
    next_seq: u32,
    exhausted: u64,
}

impl SendPool {
    /// Allocates `buffers` send buffers (at least 1, at most `u32::MAX`)
    /// and the free list and queue for them. Nothing allocates afterwards.
    pub fn new(buffers: usize) -> Self {
        let n = buffers.clamp(1, u32::MAX as usize);
        Self {
            storage: vec![0u8; n * BUFFER_BYTES].into_boxed_slice(),
            // Popped from the end: buffer 0 is handed out first.
            free: (0..n as u32).rev().collect(),
            queue: Vec::with_capacity(n),
            current: None,
            next_seq: 0,
            exhausted: 0,
        }
    }

    /// Number of buffers.
    pub fn capacity(&self) -> usize {
        self.storage.len() / BUFFER_BYTES
    }

    /// Buffers not on the free list (queued, or handed out and not queued).
    pub fn in_use(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// Datagrams queued for the next flush.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// How many `buffer()` calls found no free buffer, since creation.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// The queued datagrams, in queueing order until the next flush sorts
    /// them: `(destination, bytes)`.
    pub fn iter_queued(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.queue.iter().map(|q| (q.dst, self.bytes(q)))
    }

    fn bytes(&self, q: &Queued) -> &[u8] {
        &self.storage[q.buf as usize * BUFFER_BYTES..][..q.len as usize]
    }

    /// Sends every queued datagram through `socket` (GSO trains per
    /// destination, see the module doc), then returns all their buffers to
    /// the free list. A message the kernel refuses (other than a GSO
    /// refusal, which the socket handles by resending that destination's
    /// datagrams unsegmented) is dropped and counted in [`Flushed::failed`].
    /// Does not allocate.
    pub fn flush(&mut self, socket: &mut BatchSocket) -> Flushed {
        self.flush_via(socket)
    }

    /// [`flush`](Self::flush) through either backend (the worker's): with
    /// io_uring, every send has completed when this returns, so freeing the
    /// buffers is safe. Does not allocate.
    pub fn flush_backend(&mut self, backend: &mut Backend) -> Flushed {
        self.flush_via(backend)
    }

    fn flush_via(&mut self, socket: &mut impl SendMessages) -> Flushed {
        let n = self.queue.len();
        let mut out = Flushed::default();
        if n == 0 {
            return out;
        }
        self.queue.sort_unstable_by_key(|q| (q.dst, q.seq));
        let queue = &self.queue;
        let storage = &self.storage[..];
        let bytes = |q: &Queued| &storage[q.buf as usize * BUFFER_BYTES..][..q.len as usize];
        let mut pos = 0;
        while pos < n {
            let mut messages = 0;
            let r = socket.send_messages((pos, 0), (n, 0), |(i, _), gso, batch| {
                let end = if gso.allows(&queue[i].dst) {
                    train_end(queue, i)
                } else {
                    i + 1
                };
                let seg = (end - i > 1).then_some(queue[i].len as u16);
                if !batch.push(&queue[i].dst, seg, queue[i..end].iter().map(bytes)) {
                    return (i, 0);
                }
                messages += 1;
                (end, 0)
            });
            match r {
                Ok(()) => {
                    out.datagrams += (n - pos) as u64;
                    pos = n;
                }
                Err(failure) => {
                    // Skip the refused message; everything before it went out.
                    let (i, end) = (failure.at.0, failure.next.0.max(failure.at.0 + 1));
                    out.datagrams += (i - pos) as u64;
                    out.failed += (end - i) as u64;
                    pos = end;
                }
            }
            // `messages` counts pushes; a GSO fallback re-pushes, which is rare.
            out.messages += messages;
        }
        self.release_queued();
        out
    }

    /// Drops every queued datagram without sending it.
    pub fn clear(&mut self) {
        self.release_queued();
    }

    fn release_queued(&mut self) {
        for q in self.queue.drain(..) {
            self.free.push(q.buf);
        }
        self.next_seq = 0;
    }
}

/// End (exclusive) of the GSO train starting at `queue[i]`: following
/// datagrams to the same destination with the same length, or one shorter
/// datagram that ends the train, within the GSO limits.
fn train_end(queue: &[Queued], i: usize) -> usize {
    let first = &queue[i];
    let seg = first.len as usize;
    if seg == 0 || seg > usize::from(u16::MAX) {
        return i + 1;
    }
    let mut total = seg;
    let mut j = i + 1;
    while j < queue.len() && j - i < MAX_GSO_SEGMENTS {
        let q = &queue[j];
        let len = q.len as usize;
        if q.dst != first.dst || len > seg || len == 0 || total + len > MAX_GSO_BYTES {
            break;
        }
        total += len;
        j += 1;
        if len < seg {
            break;
        }
    }
    j
}

impl Transmit for SendPool {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        let idx = match self.current {
            Some(i) => i,
            None => match self.free.pop() {
                Some(i) => {
                    self.current = Some(i);
                    i
                }
                None => {
                    self.exhausted += 1;
                    return None;
                }
            },
        };
        Some(&mut self.storage[idx as usize * BUFFER_BYTES..][..BUFFER_BYTES])
    }

    fn send(&mut self, len: usize, dst: SocketAddr) {
        // A `send` without a preceding `buffer` has nothing to queue.
        let Some(buf) = self.current.take() else {
            return;
        };
        self.queue.push(Queued {
            dst,
            seq: self.next_seq,
            buf,
            len: len.min(BUFFER_BYTES) as u32,
        });
        self.next_seq = self.next_seq.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(dst: u16, len: u32) -> Queued {
        Queued {
            dst: SocketAddr::from(([127, 0, 0, 1], dst)),
            seq: 0,
            buf: 0,
            len,
        }
    }

    /// A queue as (port, len), and where its trains start.
    type TrainCase<'a> = (&'a [(u16, u32)], &'a [usize]);

    #[test]
    fn trains() {
        let cases: &[TrainCase<'_>] = &[
            (&[(1, 1200)], &[0]),
            (&[(1, 1200), (1, 1200), (1, 1200)], &[0]),
            (&[(1, 1200), (1, 1200), (1, 700), (1, 1200)], &[0, 3]),
            (&[(1, 1200), (1, 1300)], &[0, 1]),
            (&[(1, 1200), (2, 1200)], &[0, 1]),
            (&[(1, 0), (1, 0)], &[0, 1]),
        ];
        for (queue, starts) in cases {
            let queue: Vec<Queued> = queue.iter().map(|&(d, l)| q(d, l)).collect();
            let mut got = Vec::new();
            let mut i = 0;
            while i < queue.len() {
                got.push(i);
                i = train_end(&queue, i);
            }
            assert_eq!(&got, starts, "{queue:?}");
        }
        // 65,507 / 1228 = 53 segments per train; 64 small ones.
        let big = vec![q(1, 1228); 200];
        assert_eq!(train_end(&big, 0), 53);
        let small = vec![q(1, 100); 200];
        assert_eq!(train_end(&small, 0), 64);
    }

    #[test]
    fn buffer_without_send_is_reused() {
        let mut p = SendPool::new(2);
        let a = p.buffer().unwrap().as_ptr();
        let b = p.buffer().unwrap().as_ptr();
        assert_eq!(a, b);
        assert_eq!(p.in_use(), 1);
        p.send(10, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(p.queued(), 1);
        // A stray send queues nothing.
        p.send(10, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(p.queued(), 1);
        p.clear();
        assert_eq!(p.in_use(), 0);
    }
}
