//! CPU limits (`resources.limits.cpu`) for Wasm containers, in the manner of the CFS
//! bandwidth controller: in every 100 ms period a container may run `limit × 100 ms` of
//! guest code, summed over all its stores (a service's concurrent requests share it).
//! Accounting happens in the epoch callback, which runs every tick (10 ms) a store spends
//! executing: each callback charges the time since the previous one, at most one tick.
//! When the period's quota is spent, the store yields until the next period (throttled),
//! leaving the CPU to everything else. Without a limit usage is only counted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The CFS default period.
pub const PERIOD: Duration = Duration::from_millis(100);

/// A container's CPU quota and usage counters.
#[derive(Debug)]
pub struct CpuQuota {
    /// Guest time allowed per period; `None` = unlimited.
    quota: Option<Duration>,
    /// The epoch tick: the most one callback charges.
    tick: Duration,
    period: Mutex<(Instant, Duration)>,
    used_ns: AtomicU64,
    throttled: AtomicU64,
}

/// What a container has used (like cgroup `cpu.stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStats {
    /// Guest execution time charged.
    pub usage: Duration,
    /// Periods in which the container hit its quota and waited.
    pub nr_throttled: u64,
}

impl CpuQuota {
    /// `millis`: the limit in millicores (`500m` → 500).
    pub fn new(millis: Option<u64>, tick: Duration) -> CpuQuota {
        CpuQuota {
            tick,
            quota: millis.map(|m| PERIOD * (m.min(1_000_000) as u32) / 1000),
            period: Mutex::new((Instant::now(), Duration::ZERO)),
            used_ns: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// Charges `ran` of execution; returns how long to wait if the quota is spent.
    pub fn charge(&self, ran: Duration) -> Option<Duration> {
        let ran = ran.min(self.tick);
        self.used_ns
            .fetch_add(ran.as_nanos() as u64, Ordering::Relaxed);
        let quota = self.quota?;
        let now = Instant::now();
        let mut p = self.period.lock().expect("cpu period lock");
        if now.duration_since(p.0) >= PERIOD {
            *p = (now, Duration::ZERO);
        }
        p.1 += ran;
        if p.1 < quota {
            return None;
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let next = p.0 + PERIOD;
        // Everyone who arrives in this period waits for the next one.
        Some(next.saturating_duration_since(now))
    }

    pub fn stats(&self) -> CpuStats {
        CpuStats {
            usage: Duration::from_nanos(self.used_ns.load(Ordering::Relaxed)),
            nr_throttled: self.throttled.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_per_period_and_counts_throttling() {
        let q = CpuQuota::new(Some(200), Duration::from_millis(10)); // 20 ms per 100 ms
        assert_eq!(q.charge(Duration::from_millis(10)), None);
        let wait = q.charge(Duration::from_millis(10)).expect("quota spent");
        assert!(wait <= PERIOD);
        assert_eq!(
            q.stats(),
            CpuStats {
                usage: Duration::from_millis(20),
                nr_throttled: 1
            }
        );
        let unlimited = CpuQuota::new(None, Duration::from_millis(10));
        for _ in 0..100 {
            assert_eq!(unlimited.charge(Duration::from_millis(10)), None);
        }
        assert_eq!(unlimited.stats().nr_throttled, 0);
        assert_eq!(unlimited.stats().usage, Duration::from_secs(1));
    }
}
