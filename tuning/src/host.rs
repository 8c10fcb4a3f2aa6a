//! The host as files under a root: every `/proc` and `/sys` path is read
//! (and written) below [`Host::root`], so a test's fixture tree stands in
//! for the machine. The only program run is `ethtool`.

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::parse;

/// Files larger than this are not read (a `/proc/interrupts` of thousands
/// of CPUs is well below it).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// The machine `check` reads and `apply` writes: a root directory (`/` for
/// this host, a fixture tree in tests) and how to run `ethtool`.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    ethtool: Option<PathBuf>,
}

impl Host {
    /// The host whose `/proc`, `/sys` and `/etc` are under `root`. Under a
    /// root other than `/` the NIC's ring sizes and offloads are not read
    /// (`ethtool` would ask the running kernel, not the tree) unless
    /// [`Host::with_ethtool`] names a program.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            ethtool: None,
        }
    }

    /// This machine: root `/`.
    pub fn system() -> Self {
        Self::new("/")
    }

    /// Runs `program` as `ethtool` (with the same arguments), under any root:
    /// an `ethtool` outside `PATH`, or a test's stand-in.
    #[must_use]
    pub fn with_ethtool(mut self, program: impl Into<PathBuf>) -> Self {
        self.ethtool = Some(program.into());
        self
    }

    /// The root every path is read under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root is `/` (this machine).
    pub fn is_system(&self) -> bool {
        self.root.components().all(|c| c == Component::RootDir)
            && self.root.components().next().is_some()
    }

    /// The interface the kernel routes `to` through, from `/proc/net/route`:
    /// the up route with the longest mask containing `to` (the default
    /// route when `to` is `None`, loopback or unspecified); `lo` is skipped.
    pub fn route_iface(&self, to: Option<Ipv4Addr>) -> Option<String> {
        let routes = parse::parse_routes(&self.read("/proc/net/route").ok()?);
        let to = to.filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
        routes
            .iter()
            .filter(|r| r.up && r.iface != "lo")
            .filter(|r| match to {
                None => r.mask == [0; 4],
                Some(ip) => {
                    let ip = ip.octets();
                    (0..4).all(|i| ip[i] & r.mask[i] == r.destination[i] & r.mask[i])
                }
            })
            .max_by_key(|r| u32::from_be_bytes(r.mask).count_ones())
            .map(|r| r.iface.clone())
    }

    /// `abs` (an absolute path of the host, e.g. `/proc/sys/...`) under the root.
    pub(crate) fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// The text of the host file `abs`; the error names the path and why.
    pub(crate) fn read(&self, abs: &str) -> Result<String, String> {
        let mut bytes = Vec::new();
        std::fs::File::open(self.path(abs))
            .and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut bytes))
            .map_err(|e| format!("{abs}: {}", io_reason(&e)))?;
        String::from_utf8(bytes).map_err(|_| format!("{abs}: not text"))
    }

    /// Whether the host path `abs` exists.
    pub(crate) fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// The names in the host directory `abs`, sorted.
    pub(crate) fn list(&self, abs: &str) -> Result<Vec<String>, String> {
        let entries =
            std::fs::read_dir(self.path(abs)).map_err(|e| format!("{abs}: {}", io_reason(&e)))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The last component of the symlink `abs` points to (a device's name).
    pub(crate) fn link_name(&self, abs: &str) -> Option<String> {
        let target = std::fs::read_link(self.path(abs)).ok()?;
        target.file_name()?.to_str().map(str::to_owned)
    }

    /// Writes `text` into the existing file `abs` (a `/proc/sys` or `/sys`
    /// attribute: never created).
    pub(crate) fn write_existing(&self, abs: &str, text: &str) -> Result<(), String> {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(abs))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{abs}: {}", io_reason(&e)))
    }

    /// Creates or replaces the file `abs` (and its directories), whole or
    /// not at all: the text goes to a new file beside it (never through a
    /// symlink), synced, then renamed over `abs`, which replaces a symlink
    /// there rather than writing where it points.
    pub(crate) fn write_file(&self, abs: &str, text: &str) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let err = |e: std::io::Error| format!("{abs}: {}", io_reason(&e));
        let path = self.path(abs);
        let dir = path
            .parent()
            .ok_or_else(|| format!("{abs}: no directory"))?;
        std::fs::create_dir_all(dir).map_err(err)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.unwrap_or_default(),
            std::process::id()
        ));
        // A crashed earlier run of the same pid may have left it.
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(err)?;
        // The rename itself survives a crash once the directory is synced.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)
    }

    /// The output of `ethtool ARGS`, or why it was not run or failed.
    pub(crate) fn ethtool(&self, args: &[&str]) -> Result<String, String> {
        let program = match &self.ethtool {
            Some(p) => p.clone(),
            None if !self.is_system() => return Err("not read under --root".to_owned()),
            None => find_program("ethtool").ok_or_else(|| "ethtool not installed".to_owned())?,
        };
        let out = Command::new(&program)
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("{}: {}", program.display(), io_reason(&e)))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "ethtool {} failed: {}",
                args.join(" "),
                parse::shorten(err.trim())
            ));
        }
        String::from_utf8(out.stdout).map_err(|_| format!("ethtool {}: not text", args.join(" ")))
    }
}

/// `name` in `PATH` or the sbin directories (`ethtool` lives in `/usr/sbin`,
/// often outside a user's `PATH`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// An I/O error without the "(os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_root() {
        assert!(Host::system().is_system());
        assert!(Host::new("//").is_system());
        assert!(!Host::new("/tmp/x").is_system());
        assert!(!Host::new("").is_system());
        assert_eq!(
            Host::new("/tmp/x").path("/proc/sys/net/core/rmem_max"),
            PathBuf::from("/tmp/x/proc/sys/net/core/rmem_max")
        );
    }
}
