//! The hub's clock, injected everywhere time is read. Production runs on the system clock;
//! simulations and tests on a [`ManualClock`] that only moves when told to, and only forward.

use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// The manual clock behind this one, if it is one.
    fn as_manual(&self) -> Option<&ManualClock> {
        None
    }
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A simulated clock: it stands still until advanced, and never goes backwards.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock { micros: AtomicI64::new(start.as_microsecond()) }
    }

    /// Set the time outright: only when resuming a saved simulation, before anything reads it.
    pub fn resume_at(&self, at: Timestamp) {
        self.micros.store(at.as_microsecond(), Ordering::SeqCst);
    }

    /// Move to `to` if it is not before now; returns the time now.
    pub fn advance_to(&self, to: Timestamp) -> Timestamp {
        let to = to.as_microsecond();
        let prev = self.micros.fetch_max(to, Ordering::SeqCst);
        Timestamp::from_microsecond(prev.max(to)).expect("stays in range")
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_microsecond(self.micros.load(Ordering::SeqCst)).expect("stays in range")
    }

    fn as_manual(&self) -> Option<&ManualClock> {
        Some(self)
    }
}
