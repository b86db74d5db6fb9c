//! Serving lanes. The gateway binary serves on one single-threaded runtime per core (a *lane*), so
//! that a request is read, routed, sent upstream and answered on one thread, waking no other.
//!
//! hyper-util's pooled client drives each upstream connection with a task on the runtime that
//! opened it. One pool shared by all lanes would hand lane A a connection driven by lane B, and
//! every request would then cross threads twice. So each provider keeps one pool per lane (and one
//! for everything outside a lane: start-up, probes, tests), and [`Lanes::pick`] chooses by the
//! calling thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static LANES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Declares how many lanes serve requests; call once, before providers are built. Providers built
/// earlier keep a single pool.
pub fn set_lanes(n: usize) {
    LANES.store(n, Ordering::Relaxed);
}

/// Marks the calling thread as lane `i` (for the rest of its life).
pub fn enter_lane(i: usize) {
    LANE.with(|l| l.set(Some(i)));
}

/// The calling thread's lane, if it is one.
pub fn current_lane() -> Option<usize> {
    LANE.with(Cell::get)
}

/// One `T` per lane, and one for callers outside the lanes.
pub(crate) struct Lanes<T> {
    per_lane: Box<[T]>,
    other: T,
}

impl<T> Lanes<T> {
    /// As many as [`set_lanes`] declared (none when it was never called).
    pub(crate) fn new(mut make: impl FnMut() -> Result<T, String>) -> Result<Self, String> {
        Self::with_count(LANES.load(Ordering::Relaxed), &mut make)
    }

    fn with_count(n: usize, make: &mut impl FnMut() -> Result<T, String>) -> Result<Self, String> {
        let per_lane = (0..n).map(|_| make()).collect::<Result<Vec<_>, _>>()?;
        Ok(Lanes {
            per_lane: per_lane.into_boxed_slice(),
            other: make()?,
        })
    }

    /// The calling thread's own.
    pub(crate) fn pick(&self) -> &T {
        self.for_lane(current_lane())
    }

    fn for_lane(&self, lane: Option<usize>) -> &T {
        lane.and_then(|i| self.per_lane.get(i))
            .unwrap_or(&self.other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two lanes holding 1 and 2, and 3 for everyone else.
    fn numbered() -> Lanes<i32> {
        let mut next = 0;
        Lanes::with_count(2, &mut || {
            next += 1;
            Ok::<_, String>(next)
        })
        .expect("built")
    }

    #[test]
    fn each_lane_gets_its_own_and_others_share_one() {
        let lanes = numbered();
        assert_eq!(*lanes.for_lane(Some(0)), 1);
        assert_eq!(*lanes.for_lane(Some(1)), 2);
        assert_eq!(*lanes.for_lane(None), 3);
        // a lane beyond the declared count (declared after the provider was built) is "other"
        assert_eq!(*lanes.for_lane(Some(7)), 3);
    }

    #[test]
    fn the_calling_thread_picks_by_its_lane() {
        let lanes = numbered();
        // this thread is no lane: it gets the one for everything else
        assert_eq!(current_lane(), None);
        assert_eq!(*lanes.pick(), 3);
        let lanes = std::sync::Arc::new(lanes);
        let picked = |lane: usize| {
            let lanes = lanes.clone();
            std::thread::spawn(move || {
                enter_lane(lane);
                assert_eq!(current_lane(), Some(lane));
                *lanes.pick()
            })
            .join()
            .expect("thread")
        };
        assert_eq!(picked(0), 1);
        assert_eq!(picked(1), 2);
        // entering a lane on one thread changes nothing on another
        assert_eq!(*lanes.pick(), 3);
    }

    #[test]
    fn a_failure_to_build_one_is_the_error() {
        let mut n = 0;
        let r = Lanes::with_count(3, &mut || {
            n += 1;
            if n == 2 {
                Err("no TLS".to_string())
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.err().as_deref(), Some("no TLS"));
    }
}
