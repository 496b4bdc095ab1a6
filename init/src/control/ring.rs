//! PID 1's in-memory log ring: every line PID 1 logs, every line a service writes, every
//! lifecycle event and every audit line, bounded by total bytes.
//!
//! The [`Ring`] is plain data (tests build their own); PID 1 uses one process-global instance
//! through [`record`], [`record_service_line`], [`record_init`] and [`with_ring`]. The ring is
//! bounded by the bytes of its entries ([`entry_size`]): pushing past the capacity evicts the
//! oldest entries first and counts them ([`Ring::evicted`]). A message is at most
//! [`MAX_MESSAGE`] bytes (longer ones are cut, with [`CUT_MARK`]).
//!
//! Classification ([`classify`]): a service's output line is of kind [`EntryKind::Log`],
//! except the lines of the service [`EVENTS_SOURCE`] (and of no other) that start with
//! [`EVENT_PREFIX`] or [`AUDIT_PREFIX`]: those are [`EntryKind::Event`] and
//! [`EntryKind::Audit`] entries, the prefix stripped. Another service printing the same prefix
//! writes a plain log line: it cannot forge events.
//!
//! PID 1 is single-threaded; the global ring is behind a mutex anyway (tests are not), whose
//! poisoning is recovered from. Nothing that logs runs while the lock is held, and the tracing
//! path uses `try_lock` ([`record_init`]), so a reentrant call drops its line instead of
//! deadlocking.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::proto::{EntryKind, LogEntry};

/// The ring's size until the config says otherwise: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// The longest message kept, in bytes; longer ones are cut and marked with [`CUT_MARK`].
pub const MAX_MESSAGE: usize = 8 * 1024;
/// What marks a cut message.
pub const CUT_MARK: &str = " [cut]";
/// The bytes an entry counts for besides its source and message (its other fields and the
/// bookkeeping).
pub const ENTRY_OVERHEAD: usize = 64;
/// The source of PID 1's own entries.
pub const INIT_SOURCE: &str = "rampart-init";
/// The only service whose prefixed lines become events and audit entries.
pub const EVENTS_SOURCE: &str = rampart_config::operate::EVENTS_SERVICE;
/// A line of [`EVENTS_SOURCE`] starting with this is an [`EntryKind::Event`].
pub const EVENT_PREFIX: &str = "@rampart-event ";
/// A line of [`EVENTS_SOURCE`] starting with this is an [`EntryKind::Audit`] entry.
pub const AUDIT_PREFIX: &str = "@rampart-audit ";
/// The severity of a service's output line (informational).
pub const SERVICE_SEVERITY: u8 = 6;

/// The bytes an entry of this source and message counts for.
#[must_use]
pub fn entry_size(source: &str, message: &str) -> usize {
    ENTRY_OVERHEAD
        .saturating_add(source.len())
        .saturating_add(message.len())
}

/// The message cut to [`MAX_MESSAGE`] bytes (on a character boundary) with [`CUT_MARK`].
#[must_use]
pub fn bound_message(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_MESSAGE {
        return Cow::Borrowed(message);
    }
    let mut end = MAX_MESSAGE.saturating_sub(CUT_MARK.len());
    while end > 0 && !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = String::with_capacity(end.saturating_add(CUT_MARK.len()));
    cut.push_str(message.get(..end).unwrap_or_default());
    cut.push_str(CUT_MARK);
    Cow::Owned(cut)
}

/// The kind of a service's output line and the message it records: only [`EVENTS_SOURCE`]'s
/// prefixed lines are events or audit entries.
#[must_use]
pub fn classify<'a>(source: &str, line: &'a str) -> (EntryKind, &'a str) {
    if source == EVENTS_SOURCE {
        if let Some(rest) = line.strip_prefix(EVENT_PREFIX) {
            return (EntryKind::Event, rest);
        }
        if let Some(rest) = line.strip_prefix(AUDIT_PREFIX) {
            return (EntryKind::Audit, rest);
        }
    }
    (EntryKind::Log, line)
}

/// Which entries a reader wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// Only this source; all when `None`.
    pub source: Option<String>,
    /// Only entries at or after this wall-clock time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only events and audit entries (the `events` request); every kind otherwise.
    pub events_only: bool,
}

impl Filter {
    /// Whether `entry` passes.
    #[must_use]
    pub fn matches(&self, entry: &LogEntry) -> bool {
        self.source.as_deref().is_none_or(|s| s == entry.source)
            && self.since_ms.is_none_or(|t| entry.time_ms >= t)
            && (!self.events_only || entry.kind != EntryKind::Log)
    }
}

/// What [`Ring::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOutcome {
    /// Entries between the cursor and the oldest kept one that were evicted before they
    /// could be read.
    pub skipped: u64,
    /// `each` asked to stop (the reader is full).
    pub stopped: bool,
}

/// The log ring.
#[derive(Debug)]
pub struct Ring {
    entries: VecDeque<LogEntry>,
    bytes: usize,
    capacity: usize,
    next_seq: u64,
    evicted: u64,
}

impl Ring {
    /// An empty ring of `capacity` bytes.
    #[must_use]
    pub const fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            capacity,
            next_seq: 0,
            evicted: 0,
        }
    }

    /// Changes the capacity, evicting the oldest entries if the ring is now too full.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_to(capacity);
    }

    /// The capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes the kept entries count for.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries evicted to make room since the ring was made.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The sequence number the next entry gets.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sequence number of the oldest kept entry (`next_seq` when empty).
    #[must_use]
    pub fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }

    /// Appends an entry (its message bounded by [`bound_message`]), evicting the oldest
    /// entries to stay within the capacity (the newest entry is always kept); returns its
    /// sequence number.
    pub fn push(
        &mut self,
        time_ms: i64,
        source: &str,
        kind: EntryKind,
        severity: u8,
        message: &str,
    ) -> u64 {
        let message = bound_message(message).into_owned();
        let size = entry_size(source, &message);
        self.evict_to(self.capacity.saturating_sub(size));
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.entries.push_back(LogEntry {
            seq,
            time_ms,
            source: source.to_owned(),
            kind,
            severity: severity.min(7),
            message,
        });
        self.bytes = self.bytes.saturating_add(size);
        seq
    }

    fn evict_to(&mut self, limit: usize) {
        while self.bytes > limit {
            let Some(old) = self.entries.pop_front() else {
                self.bytes = 0;
                break;
            };
            self.bytes = self
                .bytes
                .saturating_sub(entry_size(&old.source, &old.message));
            self.evicted = self.evicted.saturating_add(1);
        }
    }

    /// The entry with this sequence number, if kept.
    #[must_use]
    pub fn get(&self, seq: u64) -> Option<&LogEntry> {
        let index = usize::try_from(seq.checked_sub(self.first_seq())?).ok()?;
        self.entries.get(index)
    }

    /// Where a reader of the last `tail` entries matching `filter` before `end` starts: the
    /// sequence number of the first of them (`first_seq` without a tail).
    #[must_use]
    pub fn tail_start(&self, filter: &Filter, tail: Option<u32>, end: u64) -> u64 {
        let Some(tail) = tail else {
            return self.first_seq();
        };
        if tail == 0 {
            return end;
        }
        let mut found = 0u32;
        for entry in self.entries.iter().rev().filter(|e| e.seq < end) {
            if filter.matches(entry) {
                found = found.saturating_add(1);
                if found >= tail {
                    return entry.seq;
                }
            }
        }
        self.first_seq()
    }

    /// Moves a cursor that points before the oldest kept entry (and before `end`) up to it;
    /// returns how many evicted entries it passed.
    pub fn catch_up(&self, cursor: &mut u64, end: Option<u64>) -> u64 {
        let end = end.unwrap_or(self.next_seq).min(self.next_seq);
        let target = self.first_seq().min(end);
        if *cursor >= target {
            return 0;
        }
        let skipped = target.saturating_sub(*cursor);
        *cursor = target;
        skipped
    }

    /// Reads the entries from `*cursor` up to `end` (exclusive; to the newest when `None`)
    /// that match `filter`, oldest first, passing each to `each` until it returns `false`.
    /// Moves the cursor past every entry looked at (matching or not) and past evicted ones
    /// (counted in [`ReadOutcome::skipped`]).
    pub fn read(
        &self,
        cursor: &mut u64,
        end: Option<u64>,
        filter: &Filter,
        mut each: impl FnMut(&LogEntry) -> bool,
    ) -> ReadOutcome {
        let mut outcome = ReadOutcome {
            skipped: self.catch_up(cursor, end),
            stopped: false,
        };
        let end = end.unwrap_or(self.next_seq).min(self.next_seq);
        while *cursor < end {
            let Some(entry) = self.get(*cursor) else {
                break;
            };
            if filter.matches(entry) && !each(entry) {
                outcome.stopped = true;
                break;
            }
            *cursor = cursor.saturating_add(1);
        }
        outcome
    }
}

static RING: Mutex<Ring> = Mutex::new(Ring::new(DEFAULT_CAPACITY));

fn lock() -> MutexGuard<'static, Ring> {
    RING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on the process-global ring. `f` must not log (the lock is held).
pub fn with_ring<R>(f: impl FnOnce(&mut Ring) -> R) -> R {
    f(&mut lock())
}

/// Wall-clock milliseconds since the Unix epoch (0 before 1970, as on a host without RTC).
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Records an entry in the global ring, now.
pub fn record(source: &str, kind: EntryKind, severity: u8, message: &str) {
    let time = now_ms();
    with_ring(|ring| ring.push(time, source, kind, severity, message));
}

/// Records one output line of `service` (classified by [`classify`]; invalid UTF-8 replaced;
/// `cut` appends [`CUT_MARK`]).
pub fn record_service_line(service: &str, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let text: Cow<'_, str> = if cut {
        Cow::Owned(format!("{text}{CUT_MARK}"))
    } else {
        text
    };
    let (kind, message) = classify(service, &text);
    record(service, kind, SERVICE_SEVERITY, message);
}

/// Attempts of [`record_init`] on a busy ring before it gives the line up.
pub const TRY_LOCK_ATTEMPTS: u32 = 64;

/// Records a line of PID 1's own log at `severity`. Uses `try_lock`: if the ring stays busy
/// for [`TRY_LOCK_ATTEMPTS`] attempts (a reentrant call, which PID 1's single thread could
/// never finish waiting for, or another thread in tests), the line is not recorded.
pub fn record_init(severity: u8, message: &str) {
    let time = now_ms();
    for _ in 0..TRY_LOCK_ATTEMPTS {
        let mut guard = match RING.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                std::thread::yield_now();
                continue;
            }
        };
        guard.push(time, INIT_SOURCE, EntryKind::Log, severity, message);
        return;
    }
}

/// Sets the global ring's capacity (from `[logs] buffer`).
pub fn set_capacity(bytes: usize) {
    with_ring(|ring| ring.set_capacity(bytes));
}

/// Entries the global ring evicted so far.
#[must_use]
pub fn evicted() -> u64 {
    with_ring(|ring| ring.evicted())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(ring: &mut Ring, time: i64, source: &str, message: &str) -> u64 {
        ring.push(time, source, EntryKind::Log, 6, message)
    }

    fn collect(ring: &Ring, cursor: &mut u64, end: Option<u64>, filter: &Filter) -> Vec<String> {
        let mut out = Vec::new();
        ring.read(cursor, end, filter, |e| {
            out.push(e.message.clone());
            true
        });
        out
    }

    #[test]
    fn eviction_is_by_bytes_oldest_first_and_counted() {
        let size = entry_size("svc", "0123456789");
        let mut ring = Ring::new(size * 3);
        for i in 0..3 {
            push(&mut ring, i, "svc", &format!("012345678{i}"));
        }
        assert_eq!((ring.len(), ring.bytes(), ring.evicted()), (3, size * 3, 0));
        push(&mut ring, 3, "svc", "0123456783");
        assert_eq!((ring.len(), ring.evicted(), ring.first_seq()), (3, 1, 1));
        // A big entry evicts as many as it needs.
        let big = "x".repeat(size * 2);
        push(&mut ring, 4, "svc", &big);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.evicted(), 4);
        assert_eq!(ring.first_seq(), 4);
        assert!(ring.bytes() <= ring.capacity() || ring.len() == 1);
        // Shrinking evicts too; growing keeps everything.
        let mut ring = Ring::new(size * 10);
        for i in 0..10 {
            push(&mut ring, i, "svc", "0123456789");
        }
        ring.set_capacity(size * 4);
        assert_eq!((ring.len(), ring.evicted(), ring.first_seq()), (4, 6, 6));
        ring.set_capacity(size * 100);
        assert_eq!(ring.len(), 4);
    }

    #[test]
    fn messages_are_bounded_on_a_char_boundary() {
        let cases = [
            ("short".to_string(), "short".to_string()),
            ("a".repeat(MAX_MESSAGE), "a".repeat(MAX_MESSAGE)),
        ];
        for (input, want) in cases {
            assert_eq!(bound_message(&input), want);
        }
        let long = "é".repeat(MAX_MESSAGE);
        let cut = bound_message(&long);
        assert!(cut.len() <= MAX_MESSAGE, "{}", cut.len());
        assert!(cut.ends_with(CUT_MARK));
        let mut ring = Ring::new(1 << 20);
        push(&mut ring, 0, "svc", &long);
        assert!(ring.get(0).unwrap().message.len() <= MAX_MESSAGE);
    }

    #[test]
    fn only_rampart_events_classifies() {
        let cases = [
            (
                "rampart-events",
                "@rampart-event container start id=1",
                EntryKind::Event,
                "container start id=1",
            ),
            (
                "rampart-events",
                "@rampart-audit shim allow id=1",
                EntryKind::Audit,
                "shim allow id=1",
            ),
            ("rampart-events", "plain line", EntryKind::Log, "plain line"),
            (
                "rampart-events",
                " @rampart-event indented",
                EntryKind::Log,
                " @rampart-event indented",
            ),
            (
                "rampart-events",
                "@rampart-eventx",
                EntryKind::Log,
                "@rampart-eventx",
            ),
            (
                "containerd",
                "@rampart-event forged",
                EntryKind::Log,
                "@rampart-event forged",
            ),
            (
                "web",
                "@rampart-audit forged",
                EntryKind::Log,
                "@rampart-audit forged",
            ),
            (
                "rampart-init",
                "@rampart-audit forged",
                EntryKind::Log,
                "@rampart-audit forged",
            ),
        ];
        for (source, line, kind, message) in cases {
            assert_eq!(classify(source, line), (kind, message), "{source}: {line}");
        }
    }

    #[test]
    fn filters_by_source_time_and_kind() {
        let mut ring = Ring::new(1 << 20);
        push(&mut ring, 100, "a", "a1");
        push(&mut ring, 200, "b", "b1");
        ring.push(300, "a", EntryKind::Event, 6, "started pid=1");
        ring.push(
            400,
            "rampart-init",
            EntryKind::Audit,
            6,
            "control op=status",
        );
        push(&mut ring, 500, "a", "a2");
        let f = |source: Option<&str>, since: Option<i64>, events: bool| Filter {
            source: source.map(str::to_owned),
            since_ms: since,
            events_only: events,
        };
        let cases = [
            (
                f(None, None, false),
                vec!["a1", "b1", "started pid=1", "control op=status", "a2"],
            ),
            (f(Some("a"), None, false), vec!["a1", "started pid=1", "a2"]),
            (f(Some("b"), None, false), vec!["b1"]),
            (f(Some("nobody"), None, false), vec![]),
            (
                f(None, Some(300), false),
                vec!["started pid=1", "control op=status", "a2"],
            ),
            (
                f(None, None, true),
                vec!["started pid=1", "control op=status"],
            ),
            (f(Some("a"), Some(250), true), vec!["started pid=1"]),
        ];
        for (filter, want) in cases {
            let mut cursor = ring.first_seq();
            assert_eq!(
                collect(&ring, &mut cursor, None, &filter),
                want,
                "{filter:?}"
            );
            assert_eq!(cursor, ring.next_seq());
        }
    }

    #[test]
    fn tail_counts_matching_entries_before_the_end() {
        let mut ring = Ring::new(1 << 20);
        for i in 0..10 {
            push(
                &mut ring,
                i,
                if i % 2 == 0 { "even" } else { "odd" },
                &i.to_string(),
            );
        }
        let even = Filter {
            source: Some("even".into()),
            ..Filter::default()
        };
        let all = Filter::default();
        let end = ring.next_seq();
        let cases: [(&Filter, Option<u32>, Vec<&str>); 6] = [
            (&all, None, (0..10).map(|_| "").collect()),
            (&all, Some(3), vec!["7", "8", "9"]),
            (&even, Some(2), vec!["6", "8"]),
            (&even, Some(50), vec!["0", "2", "4", "6", "8"]),
            (&even, Some(0), vec![]),
            (&all, Some(1), vec!["9"]),
        ];
        for (filter, tail, want) in cases {
            let mut cursor = ring.tail_start(filter, tail, end);
            let got = collect(&ring, &mut cursor, Some(end), filter);
            if tail.is_none() {
                assert_eq!(got.len(), 10);
            } else {
                assert_eq!(got, want, "{filter:?} {tail:?}");
            }
        }
    }

    #[test]
    fn a_fixed_end_excludes_later_entries() {
        let mut ring = Ring::new(1 << 20);
        push(&mut ring, 0, "s", "before");
        let end = ring.next_seq();
        push(&mut ring, 1, "s", "after");
        let mut cursor = 0;
        assert_eq!(
            collect(&ring, &mut cursor, Some(end), &Filter::default()),
            ["before"]
        );
        assert_eq!(cursor, end);
        // Following (no end) picks up later entries from where it was.
        assert_eq!(
            collect(&ring, &mut cursor, None, &Filter::default()),
            ["after"]
        );
    }

    #[test]
    fn a_lagging_reader_skips_evicted_entries_and_can_stop() {
        let size = entry_size("s", "m0");
        let mut ring = Ring::new(size * 4);
        let mut cursor = 0;
        for i in 0..10 {
            push(&mut ring, i, "s", &format!("m{i}"));
        }
        let mut got = Vec::new();
        let outcome = ring.read(&mut cursor, None, &Filter::default(), |e| {
            got.push(e.message.clone());
            got.len() < 2
        });
        assert_eq!(outcome.skipped, 6);
        assert!(outcome.stopped);
        assert_eq!(got, ["m6", "m7"]);
        // The entry that did not fit is read again next time.
        assert_eq!(cursor, 7);
        let rest = collect(&ring, &mut cursor, None, &Filter::default());
        assert_eq!(rest, ["m7", "m8", "m9"]);
    }

    #[test]
    fn service_lines_are_recorded_and_classified_globally() {
        record_service_line("ring-test-svc", b"hello \xff", false);
        record_service_line("ring-test-svc", b"long", true);
        record_service_line(EVENTS_SOURCE, b"@rampart-event ring-test-event", false);
        record_init(4, "ring-test-init");
        let entries = with_ring(|ring| {
            let mut cursor = ring.first_seq();
            let mut out = Vec::new();
            ring.read(&mut cursor, None, &Filter::default(), |e| {
                if e.message.contains("ring-test") || e.source == "ring-test-svc" {
                    out.push(e.clone());
                }
                true
            });
            out
        });
        let summary: Vec<(&str, EntryKind, u8, &str)> = entries
            .iter()
            .map(|e| (e.source.as_str(), e.kind, e.severity, e.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("ring-test-svc", EntryKind::Log, 6, "hello \u{fffd}"),
                ("ring-test-svc", EntryKind::Log, 6, "long [cut]"),
                (EVENTS_SOURCE, EntryKind::Event, 6, "ring-test-event"),
                (INIT_SOURCE, EntryKind::Log, 4, "ring-test-init"),
            ]
        );
        assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
    }
}
