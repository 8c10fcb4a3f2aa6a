//! Parsers of the kernel's text files and of `ethtool`'s output. Each one
//! is fallible and bounded: no input makes one panic or allocate more than
//! its input's size (CPU numbers are capped at [`MAX_CPUS`]).

use std::fmt::Write as _;

/// CPUs beyond this number are refused (the kernel's own `NR_CPUS` limit),
/// so that a list like `0-4294967295` is an error, not a huge allocation.
pub(crate) const MAX_CPUS: usize = 8192;

/// A CPU list as the kernel and sfu.toml write it: `0,2-5`; empty text is
/// the empty list. The order of the items is kept and repeats are dropped
/// (worker `i` runs on `cpus[i % len]`).
///
/// # Errors
/// A message naming the bad item.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let text = text.trim();
    let mut cpus: Vec<usize> = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    let number = |item: &str, part: &str| -> Result<usize, String> {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad CPU list item {:?}", shorten(item)));
        }
        match part.parse::<usize>() {
            Ok(n) if n < MAX_CPUS => Ok(n),
            _ => Err(format!("CPU {} out of range (< {MAX_CPUS})", shorten(part))),
        }
    };
    for item in text.split(',') {
        let item = item.trim();
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (number(item, a)?, number(item, b)?),
            None => {
                let n = number(item, item)?;
                (n, n)
            }
        };
        if first > last {
            return Err(format!("backwards CPU range {:?}", shorten(item)));
        }
        for cpu in first..=last {
            if !cpus.contains(&cpu) {
                cpus.push(cpu);
            }
        }
    }
    Ok(cpus)
}

/// The kernel's form of a CPU list, ranges joined: `[0, 1, 2, 5]` is `0-2,5`
/// (sorted; the empty list is the empty string).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

/// A CPU bitmap in the kernel's hex form (`rps_cpus`, `smp_affinity`):
/// 32-bit groups of hex digits separated by commas, most significant first,
/// e.g. `00000000,0000000f`. Returns the CPUs set and the number of groups.
pub(crate) fn parse_hex_mask(text: &str) -> Result<(Vec<usize>, usize), String> {
    let text = text.trim();
    let bad = || format!("not a hex CPU mask: {:?}", shorten(text));
    if text.is_empty() {
        return Err("empty CPU mask".to_owned());
    }
    let groups: Vec<&str> = text.split(',').collect();
    if groups.len() > MAX_CPUS / 32 {
        return Err(format!("CPU mask names a CPU >= {MAX_CPUS}"));
    }
    let mut cpus = Vec::new();
    for (index, group) in groups.iter().rev().enumerate() {
        if group.is_empty() || group.len() > 8 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let word = u32::from_str_radix(group, 16).map_err(|_| bad())?;
        cpus.extend(
            (0..32)
                .filter(|bit| word & (1 << bit) != 0)
                .map(|bit| index * 32 + bit),
        );
    }
    Ok((cpus, groups.len()))
}

/// The hex form of a CPU set in at least `groups` 32-bit groups (the form
/// the kernel printed, so a written file reads back the same).
pub(crate) fn format_hex_mask(cpus: &[usize], groups: usize) -> String {
    let needed = cpus.iter().map(|&c| c / 32 + 1).max().unwrap_or(1);
    let groups = groups.max(needed).max(1);
    let mut words = vec![0u32; groups];
    for &cpu in cpus {
        words[groups - 1 - cpu / 32] |= 1 << (cpu % 32);
    }
    words
        .iter()
        .map(|w| format!("{w:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One unsigned decimal number (a sysctl file).
pub(crate) fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse::<u64>()
        .map_err(|_| format!("not a number: {:?}", shorten(t)))
}

/// `net.ipv4.udp_mem`: three numbers of pages, min, pressure, max.
pub(crate) fn parse_triple(text: &str) -> Result<[u64; 3], String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() != 3 {
        return Err(format!("not three numbers: {:?}", shorten(text.trim())));
    }
    Ok([
        parse_u64(parts[0])?,
        parse_u64(parts[1])?,
        parse_u64(parts[2])?,
    ])
}

/// A resource limit: `None` is unlimited.
pub(crate) type Limit = Option<u64>;

/// The soft and hard value of one line of `/proc/PID/limits`, e.g.
/// `Max open files            1024                 524288               files`.
pub(crate) fn parse_limit(text: &str, name: &str) -> Result<(Limit, Limit), String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .ok_or_else(|| format!("no {name:?} line"))?;
    let mut rest = line[name.len()..].split_whitespace();
    let mut value = |which: &str| -> Result<Limit, String> {
        match rest.next() {
            Some("unlimited") => Ok(None),
            Some(v) => parse_u64(v).map(Some),
            None => Err(format!("{name:?} has no {which} limit")),
        }
    };
    let soft = value("soft")?;
    let hard = value("hard")?;
    Ok((soft, hard))
}

/// The IRQs of `/proc/interrupts`: number and the last field of the line
/// (the device or queue name, e.g. `eth0-TxRx-0`, `virtio2-input.0`).
/// Lines that are not numbered IRQs (`NMI:`, `LOC:`) are skipped.
pub(crate) fn parse_interrupts(text: &str) -> Vec<(u32, String)> {
    let mut lines = text.lines();
    let cpus = lines
        .next()
        .map_or(0, |header| header.split_whitespace().count());
    let mut irqs = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Number, one count per CPU, then at least the name.
        if fields.len() < cpus + 2 {
            continue;
        }
        let Some(Ok(number)) = fields[0].strip_suffix(':').map(str::parse::<u32>) else {
            continue;
        };
        irqs.push((number, fields[fields.len() - 1].to_owned()));
    }
    irqs
}

/// Whether `field` names `device`: it contains the name with no letter or
/// digit right before or after it (`eth0-TxRx-0` names `eth0`,
/// `i40e-eth0-TxRx-1` too, `eth01-rx` does not).
pub(crate) fn names_device(field: &str, device: &str) -> bool {
    if device.is_empty() {
        return false;
    }
    let bytes = field.as_bytes();
    let mut from = 0;
    while let Some(at) = field[from..].find(device) {
        let start = from + at;
        let end = start + device.len();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after_ok = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
        while !field.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

/// A route of `/proc/net/route` (IPv4; addresses in network byte order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) iface: String,
    pub(crate) destination: [u8; 4],
    pub(crate) mask: [u8; 4],
    pub(crate) up: bool,
}

/// The routes of `/proc/net/route`; malformed lines are skipped.
pub(crate) fn parse_routes(text: &str) -> Vec<Route> {
    // The kernel prints each __be32 as a native u32 in hex.
    let addr = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            Some(Route {
                iface: f[0].to_owned(),
                destination: addr(f[1])?,
                mask: addr(f[7])?,
                up: flags & 1 != 0,
            })
        })
        .collect()
}

/// Ring sizes from `ethtool -g`: the maxima and the current sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Rings {
    pub(crate) rx_max: Option<u64>,
    pub(crate) tx_max: Option<u64>,
    pub(crate) rx: Option<u64>,
    pub(crate) tx: Option<u64>,
}

/// Parses `ethtool -g IFACE`: the `RX:` and `TX:` lines of the
/// "Pre-set maximums" and "Current hardware settings" sections (`n/a` is
/// no value).
pub(crate) fn parse_rings(text: &str) -> Result<Rings, String> {
    #[derive(PartialEq)]
    enum Section {
        None,
        Max,
        Current,
    }
    let mut section = Section::None;
    let mut rings = Rings::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Pre-set maximums") {
            section = Section::Max;
            continue;
        }
        if line.starts_with("Current hardware settings") {
            section = Section::Current;
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = parse_u64(value).ok();
        match (&section, key.trim()) {
            (Section::Max, "RX") => rings.rx_max = value,
            (Section::Max, "TX") => rings.tx_max = value,
            (Section::Current, "RX") => rings.rx = value,
            (Section::Current, "TX") => rings.tx = value,
            _ => {}
        }
    }
    if rings.rx.is_none() && rings.tx.is_none() {
        return Err("no ring sizes in the output of ethtool -g".to_owned());
    }
    Ok(rings)
}

/// One line of `ethtool -k IFACE`: `tx-udp-segmentation: off [fixed]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Feature {
    pub(crate) name: String,
    pub(crate) on: bool,
    pub(crate) fixed: bool,
}

/// The features of `ethtool -k IFACE`.
pub(crate) fn parse_features(text: &str) -> Vec<Feature> {
    text.lines()
        .filter_map(|line| {
            let (name, state) = line.trim().split_once(':')?;
            let mut words = state.split_whitespace();
            let on = match words.next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            Some(Feature {
                name: name.trim().to_owned(),
                on,
                fixed: state.contains("[fixed]"),
            })
        })
        .collect()
}

/// At most 40 characters of `text`, for error messages about file contents.
pub(crate) fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if text.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip_and_refuse_nonsense() {
        assert_eq!(parse_cpu_list("0,2-5").unwrap(), vec![0, 2, 3, 4, 5]);
        assert_eq!(parse_cpu_list(" 5,2 ,2\n").unwrap(), vec![5, 2]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert_eq!(format_cpu_list(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpu_list(&[]), "");
        for bad in [
            "0-4294967295",
            "3-1",
            "a",
            "1,,2",
            "-",
            "99999999999999999999999",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_masks_round_trip() {
        assert_eq!(parse_hex_mask("f\n").unwrap(), (vec![0, 1, 2, 3], 1));
        assert_eq!(
            parse_hex_mask("00000001,00000003").unwrap(),
            (vec![0, 1, 32], 2)
        );
        assert_eq!(parse_hex_mask("0").unwrap(), (vec![], 1));
        assert_eq!(format_hex_mask(&[0, 1, 32], 2), "00000001,00000003");
        assert_eq!(format_hex_mask(&[], 1), "00000000");
        assert_eq!(format_hex_mask(&[33], 1), "00000002,00000000");
        assert!(parse_hex_mask("xyz").is_err());
        assert!(parse_hex_mask("").is_err());
        assert!(parse_hex_mask(&"f".repeat(5000)).is_err());
        assert!(parse_hex_mask(&"0,".repeat(5000)).is_err());
        assert!(parse_hex_mask("ff,,ff").is_err());
        assert!(parse_hex_mask("-1").is_err());
    }

    #[test]
    fn limits_lines() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 524288               files     \n\
                    Max locked memory         unlimited            unlimited            bytes     \n";
        assert_eq!(
            parse_limit(text, "Max open files").unwrap(),
            (Some(1024), Some(524288))
        );
        assert_eq!(
            parse_limit(text, "Max locked memory").unwrap(),
            (None, None)
        );
        assert!(parse_limit(text, "Max processes").is_err());
        assert!(parse_limit("Max open files  x y", "Max open files").is_err());
    }

    #[test]
    fn interrupts_and_device_names() {
        let text = "           CPU0       CPU1\n \
                    26:          0         13  IO-APIC   4-edge      ttyS0\n \
                    38:          0      15198 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
                    NMI:          0          0   Non-maskable interrupts\n \
                    ERR:          0\n";
        assert_eq!(
            parse_interrupts(text),
            vec![(26, "ttyS0".to_owned()), (38, "virtio2-input.0".to_owned())]
        );
        assert!(names_device("virtio2-input.0", "virtio2"));
        assert!(!names_device("virtio20-input.0", "virtio2"));
        assert!(names_device("i40e-eth0-TxRx-1", "eth0"));
        assert!(names_device("eth0", "eth0"));
        assert!(!names_device("eth01-rx", "eth0"));
        assert!(!names_device("veth0", "eth0"));
        assert!(!names_device("x", ""));
    }

    #[test]
    fn routes() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    junk\n";
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 2);
        if cfg!(target_endian = "little") {
            assert_eq!(routes[1].destination, [192, 0, 2, 0]);
            assert_eq!(routes[1].mask, [255, 255, 255, 0]);
        }
        assert!(routes[0].up);
    }

    #[test]
    fn ethtool_output() {
        let rings = "Ring parameters for eth0:\nPre-set maximums:\nRX:\t\t\t4096\nRX Mini:\t\tn/a\n\
                     RX Jumbo:\t\tn/a\nTX:\t\t\t4096\nCurrent hardware settings:\nRX:\t\t\t256\n\
                     RX Mini:\t\tn/a\nRX Jumbo:\t\tn/a\nTX:\t\t\t512\nRX Buf Len:\t\tn/a\n";
        assert_eq!(
            parse_rings(rings).unwrap(),
            Rings {
                rx_max: Some(4096),
                tx_max: Some(4096),
                rx: Some(256),
                tx: Some(512)
            }
        );
        assert!(parse_rings("garbage").is_err());
        let features = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: on\n\
                        \ttx-checksum-ipv4: off [fixed]\ngeneric-receive-offload: on\n\
                        tx-udp-segmentation: off [fixed]\nrx-udp-gro-forwarding: off\n";
        let f = parse_features(features);
        assert_eq!(f.len(), 6);
        assert!(
            f.iter()
                .any(|f| f.name == "tx-udp-segmentation" && !f.on && f.fixed)
        );
        assert!(
            f.iter()
                .any(|f| f.name == "generic-receive-offload" && f.on)
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("212992\n").unwrap(), 212_992);
        assert!(parse_u64("").is_err());
        assert!(parse_u64("99999999999999999999999999").is_err());
        assert!(parse_u64("-1").is_err());
        assert_eq!(parse_triple("1 2\t3\n").unwrap(), [1, 2, 3]);
        assert!(parse_triple("1 2").is_err());
    }
}
