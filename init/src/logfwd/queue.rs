//! The bounded queue in front of each collector, its counter of dropped lines (reported at
//! most once per [`REPORT_EVERY`]) and the reconnection backoff.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::control::proto::LogEntry;

/// Dropped lines are reported at most this often per collector.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The first reconnection pause.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// The longest reconnection pause.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff: [`BACKOFF_FIRST`], doubling up to [`BACKOFF_MAX`]; reset after a
/// success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BACKOFF_FIRST, BACKOFF_MAX)
    }
}

impl Backoff {
    /// A backoff from `first` doubling to `max`.
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            first,
            max,
        }
    }

    /// The pause to take now; the next one is twice as long (up to the maximum).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        pause
    }

    /// Starts over from the first pause.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Counts dropped lines and decides when to report them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounter {
    /// Dropped since the last report.
    pending: u64,
    /// Dropped in all.
    total: u64,
    /// When the last report was made.
    last_report: Option<Instant>,
}

impl DropCounter {
    /// Counts one dropped line.
    pub fn drop_one(&mut self) {
        self.pending = self.pending.saturating_add(1);
        self.total = self.total.saturating_add(1);
    }

    /// Lines dropped in all.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The number of lines to report now, if any were dropped since the last report and the
    /// last report is at least [`REPORT_EVERY`] old (the first report is immediate).
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self.pending == 0 {
            return None;
        }
        let ready = self
            .last_report
            .is_none_or(|last| now.saturating_duration_since(last) >= REPORT_EVERY);
        if !ready {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// What [`Queue::push`] did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full: the line was dropped and counted.
    Dropped,
    /// The queue is closed.
    Closed,
}

#[derive(Debug)]
struct State {
    lines: VecDeque<Arc<LogEntry>>,
    capacity: usize,
    drops: DropCounter,
    closed: bool,
}

/// A bounded queue of entries with one consumer (the collector's sender thread); when full,
/// new lines are dropped and counted.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Queue {
    /// A queue of at most `capacity` lines (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new((
                Mutex::new(State {
                    lines: VecDeque::with_capacity(capacity.min(4096)),
                    capacity,
                    drops: DropCounter::default(),
                    closed: false,
                }),
                Condvar::new(),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A sender thread never panics while holding the lock; recover the state if one did.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a line, or drops and counts it when the queue is full.
    pub fn push(&self, entry: Arc<LogEntry>) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed;
        }
        if state.lines.len() >= state.capacity {
            state.drops.drop_one();
            return Pushed::Dropped;
        }
        state.lines.push_back(entry);
        drop(state);
        self.inner.1.notify_one();
        Pushed::Queued
    }

    /// The next line, waiting at most `wait` for one; `None` on timeout, or when the queue is
    /// closed and empty.
    pub fn pop(&self, wait: Duration) -> Option<Arc<LogEntry>> {
        let mut state = self.lock();
        let deadline = Instant::now().checked_add(wait);
        loop {
            if let Some(line) = state.lines.pop_front() {
                return Some(line);
            }
            if state.closed {
                return None;
            }
            let left = deadline.map_or(wait, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return None;
            }
            state = match self.inner.1.wait_timeout(state, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Lines waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Whether no line is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines dropped in all.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.lock().drops.total()
    }

    /// The dropped lines to report now (see [`DropCounter::due`]).
    #[must_use]
    pub fn drops_due(&self, now: Instant) -> Option<u64> {
        self.lock().drops.due(now)
    }

    /// Refuses new lines and wakes the consumer; lines already queued can still be popped.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }

    /// Whether [`Queue::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::EntryKind;

    fn entry(seq: u64) -> Arc<LogEntry> {
        Arc::new(LogEntry {
            seq,
            time_ms: 0,
            source: "s".into(),
            kind: EntryKind::Log,
            severity: 6,
            message: format!("line {seq}"),
        })
    }

    #[test]
    fn backoff_sequence() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..8).map(|_| b.next_pause().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_secs(1));
        assert_eq!(b.next_pause(), Duration::from_secs(2));
    }

    #[test]
    fn overflow_is_counted_and_order_kept() {
        let q = Queue::new(3);
        let results: Vec<Pushed> = (1..=5).map(|s| q.push(entry(s))).collect();
        assert_eq!(
            results,
            vec![
                Pushed::Queued,
                Pushed::Queued,
                Pushed::Queued,
                Pushed::Dropped,
                Pushed::Dropped
            ]
        );
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.len(), 3);
        let seqs: Vec<u64> = std::iter::from_fn(|| q.pop(Duration::ZERO))
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        // Room again.
        assert_eq!(q.push(entry(6)), Pushed::Queued);
        assert_eq!(q.dropped(), 2);
        q.close();
        assert_eq!(q.push(entry(7)), Pushed::Closed);
        assert_eq!(q.pop(Duration::from_secs(5)).map(|e| e.seq), Some(6));
        // Closed and empty: no wait.
        assert!(q.pop(Duration::from_secs(5)).is_none());
    }

    #[test]
    fn drop_reports_are_rate_limited() {
        let t0 = Instant::now();
        let mut d = DropCounter::default();
        assert_eq!(d.due(t0), None);
        d.drop_one();
        d.drop_one();
        assert_eq!(d.due(t0), Some(2));
        d.drop_one();
        assert_eq!(d.due(t0 + Duration::from_secs(9)), None);
        d.drop_one();
        assert_eq!(d.due(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(d.due(t0 + Duration::from_secs(30)), None);
        d.drop_one();
        assert_eq!(d.due(t0 + Duration::from_secs(30)), Some(1));
        assert_eq!(d.total(), 5);
    }

    #[test]
    fn pop_waits_for_a_push() {
        let q = Queue::new(4);
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop(Duration::from_secs(10)).map(|e| e.seq));
        std::thread::sleep(Duration::from_millis(50));
        q.push(entry(9));
        assert_eq!(t.join().unwrap(), Some(9));
        assert_eq!(q.pop(Duration::from_millis(10)), None);
    }
}
