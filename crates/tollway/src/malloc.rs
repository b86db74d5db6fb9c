//! glibc's allocator, tuned for the gateway: a larger per-thread cache of freed blocks.
//!
//! A request allocates and frees about a hundred small blocks (header maps, the JSON it decodes,
//! the ledger row), several of the same size at once. glibc keeps at most 7 freed blocks per size
//! in a thread's cache (`tcache`); the rest go back to the arena's bins, and the next allocations
//! of that size take glibc's slow path. With room for [`TCACHE_COUNT`] blocks per size, a request
//! with everything on costs about 4% fewer instructions (callgrind, `bench/callgrind.sh`; see
//! `bench/RESULTS.md`). Wall-clock runs on the shared benchmark machine could not tell it apart
//! from their noise.
//!
//! glibc reads that setting only from the environment (`GLIBC_TUNABLES`), when a process starts,
//! so `tollway serve` runs itself again with it set ([`tune`]), before it starts any thread. The
//! process keeps its id, arguments and environment. It does nothing when the variable already
//! names a tcache count (the user's own choice, or this process after its restart), when
//! `TOLLWAY_MALLOC_TUNING=off`, or on a system without glibc.

use std::ffi::{OsStr, OsString};

/// Freed blocks kept per size class and thread (glibc's default: 7). The cache holds only sizes
/// up to 1,032 bytes, and only as many as a thread had in use at once, so the memory it keeps is
/// bounded by the thread's own peak of small blocks.
pub const TCACHE_COUNT: u32 = 128;

const TUNABLES: &str = "GLIBC_TUNABLES";
const TCACHE_KEY: &str = "glibc.malloc.tcache_count";
/// Set to `off` (or `0`, `false`, `no`) to leave glibc's defaults alone.
pub const OPT_OUT: &str = "TOLLWAY_MALLOC_TUNING";

/// The `GLIBC_TUNABLES` value to restart with, given the current one and the opt-out variable;
/// `None`: nothing to do.
pub fn wanted(current: Option<&OsStr>, opt_out: Option<&OsStr>) -> Option<OsString> {
    if let Some(v) = opt_out.and_then(OsStr::to_str) {
        if matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        ) {
            return None;
        }
    }
    let setting = format!("{TCACHE_KEY}={TCACHE_COUNT}");
    match current {
        None => Some(setting.into()),
        Some(v) if v.is_empty() => Some(setting.into()),
        Some(v) => {
            // not UTF-8: not ours to edit
            let v = v.to_str()?;
            if v.split(':')
                .any(|t| t.split('=').next() == Some(TCACHE_KEY))
            {
                return None;
            }
            Some(format!("{v}:{setting}").into())
        }
    }
}

/// Restarts this process with the tuned allocator (see the module docs), or returns when there is
/// nothing to do or the restart failed (the gateway then runs with glibc's defaults). Call it
/// first thing, while the process has one thread.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let Some(value) = wanted(
            std::env::var_os(TUNABLES).as_deref(),
            std::env::var_os(OPT_OUT).as_deref(),
        ) else {
            return;
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        // `exec` returns only if it failed
        let err = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env(TUNABLES, value)
            .exec();
        eprintln!(
            "note: could not restart with a tuned allocator ({err}); running with glibc's defaults"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(current: Option<&str>, opt_out: Option<&str>) -> Option<String> {
        wanted(current.map(OsStr::new), opt_out.map(OsStr::new))
            .map(|v| v.to_string_lossy().into_owned())
    }

    #[test]
    fn sets_the_tcache_count_once_and_keeps_the_users_tunables() {
        let ours = format!("glibc.malloc.tcache_count={TCACHE_COUNT}");
        assert_eq!(w(None, None).as_deref(), Some(ours.as_str()));
        assert_eq!(w(Some(""), None).as_deref(), Some(ours.as_str()));
        // the user's other tunables are kept, ours appended
        assert_eq!(
            w(Some("glibc.malloc.arena_max=2"), None),
            Some(format!("glibc.malloc.arena_max=2:{ours}"))
        );
        // the restarted process (or a user who chose a count) is left alone: no restart loop
        assert_eq!(w(Some(&ours), None), None);
        assert_eq!(
            w(
                Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=7"),
                None
            ),
            None
        );
        // a tunable whose name only starts like ours is not ours
        assert!(w(Some("glibc.malloc.tcache_count_x=1"), None).is_some());
    }

    #[test]
    fn the_opt_out_leaves_glibc_alone() {
        for off in ["off", "OFF", "0", "false", "no", " off "] {
            assert_eq!(w(None, Some(off)), None, "{off:?}");
        }
        assert!(w(None, Some("on")).is_some());
    }
}
