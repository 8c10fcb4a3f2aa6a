//! The load generator's own CPU time, from `/proc/self/stat` (no `libc`:
//! the bench crate has no `unsafe`).

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of this process so far, or `None` where
/// `/proc/self/stat` is missing or unreadable.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds.
/// The command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first, so utime (14) is the 12th.
    let mut fields = after.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_hostile_name() {
        let line = "4242 (sfu (load) gen) R 1 4242 4242 0 -1 4194304 1000 0 0 0 250 75 0 0 20 0 5 0 123 0 0";
        assert_eq!(parse_cpu_seconds(line), Some(3.25));
        assert_eq!(parse_cpu_seconds("4242 (x) R 1"), None);
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn reads_our_own() {
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}
