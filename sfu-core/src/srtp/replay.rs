//! Sliding replay window over packet indices (RFC 3711 §3.3.2).

use super::SrtpError;

/// The largest replay window a context supports, in packets.
pub const MAX_REPLAY_WINDOW: u32 = 1024;
const WORDS: usize = (MAX_REPLAY_WINDOW / 64) as usize;

/// Which of the last `size` packet indices below the highest one were
/// accepted. A ring of bits indexed by `index % MAX_REPLAY_WINDOW`, so
/// advancing by one packet clears one bit instead of shifting the whole map.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    bits: [u64; WORDS],
    top: Option<u64>,
    size: u64,
}

impl ReplayWindow {
    /// A window that accepts indices at most `size - 1` below the highest
    /// accepted one. `size` is clamped to 1..=[`MAX_REPLAY_WINDOW`].
    pub fn new(size: u32) -> Self {
        Self {
            bits: [0; WORDS],
            top: None,
            size: u64::from(size.clamp(1, MAX_REPLAY_WINDOW)),
        }
    }

    /// Whether `index` may be accepted. Does not change the window.
    pub fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(top) = self.top else {
            return Ok(());
        };
        if index > top {
            return Ok(());
        }
        if top - index >= self.size {
            return Err(SrtpError::TooOld);
        }
        if self.bit(index) {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records `index` as accepted; call only after [`ReplayWindow::check`]
    /// passed and the packet authenticated.
    pub fn accept(&mut self, index: u64) {
        match self.top {
            Some(top) if index <= top => {}
            Some(top) => {
                // Forget the indices the window slides over.
                let advance = index - top;
                if advance >= u64::from(MAX_REPLAY_WINDOW) {
                    self.bits = [0; WORDS];
                } else {
                    for i in top + 1..=index {
                        self.clear(i);
                    }
                }
                self.top = Some(index);
            }
            None => {
                self.bits = [0; WORDS];
                self.top = Some(index);
            }
        }
        self.set(index);
    }

    fn slot(index: u64) -> (usize, u64) {
        let i = (index % u64::from(MAX_REPLAY_WINDOW)) as usize;
        (i / 64, 1 << (i % 64))
    }

    fn bit(&self, index: u64) -> bool {
        let (w, m) = Self::slot(index);
        self.bits[w] & m != 0
    }

    fn set(&mut self, index: u64) {
        let (w, m) = Self::slot(index);
        self.bits[w] |= m;
    }

    fn clear(&mut self, index: u64) {
        let (w, m) = Self::slot(index);
        self.bits[w] &= !m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_new_rejects_duplicates_and_old() {
        let mut w = ReplayWindow::new(128);
        for i in [10u64, 12, 11, 200] {
            assert_eq!(w.check(i), Ok(()), "{i}");
            w.accept(i);
        }
        assert_eq!(w.check(200), Err(SrtpError::Replayed));
        assert_eq!(w.check(12), Err(SrtpError::TooOld), "200 - 12 >= 128");
        assert_eq!(w.check(73), Ok(()), "200 - 73 = 127 is inside");
        assert_eq!(w.check(72), Err(SrtpError::TooOld));
        w.accept(150);
        assert_eq!(w.check(150), Err(SrtpError::Replayed));
        assert_eq!(w.check(151), Ok(()));
    }

    #[test]
    fn slots_are_cleared_when_the_window_slides() {
        let mut w = ReplayWindow::new(1024);
        w.accept(5);
        // 5 + 1024 maps to the same slot as 5; it is new, not a replay.
        assert_eq!(w.check(5 + 1024), Ok(()));
        w.accept(5 + 1024);
        assert_eq!(w.check(5 + 1023), Ok(()));
        assert_eq!(w.check(5 + 1024), Err(SrtpError::Replayed));
        assert_eq!(w.check(5), Err(SrtpError::TooOld));
        // A jump beyond the window forgets everything.
        w.accept(100_000);
        assert_eq!(w.check(100_000 - 1), Ok(()));
        assert_eq!(w.check(5 + 1024), Err(SrtpError::TooOld));
    }

    #[test]
    fn every_index_in_a_shuffled_run_is_accepted_once() {
        let mut w = ReplayWindow::new(1024);
        // Reorder within blocks of 64, well inside the window.
        let mut seen = 0;
        for block in 0..100u64 {
            for j in (0..64u64).rev() {
                let i = block * 64 + (j * 37) % 64;
                assert_eq!(w.check(i), Ok(()));
                w.accept(i);
                assert_eq!(w.check(i), Err(SrtpError::Replayed));
                seen += 1;
            }
        }
        assert_eq!(seen, 6400);
    }
}
