//! What goes on the wire to a collector: an entry of PID 1's ring rendered as an RFC 5424
//! syslog message (sent alone in a UDP datagram, or octet-counted per RFC 6587 over TCP), or
//! as one JSON line. Pure functions, no I/O.

use serde::Serialize;

use crate::control::proto::{EntryKind, LogEntry};

/// The largest syslog message sent in one UDP datagram, in bytes (RFC 5426 asks receivers to
/// accept at least 2048).
pub const UDP_MAX: usize = 2048;

/// The private enterprise number of the structured data element (`rampart@32473`; 32473 is the
/// number RFC 5612 reserves for documentation).
pub const SD_ID: &str = "rampart@32473";

/// The longest APP-NAME RFC 5424 allows.
pub const APP_NAME_MAX: usize = 48;

/// The longest HOSTNAME RFC 5424 allows.
pub const HOSTNAME_MAX: usize = 255;

/// Syslog facility `daemon`, used for log and event entries.
pub const FACILITY_DAEMON: u8 = 3;

/// Syslog facility `authpriv`, used for audit entries.
pub const FACILITY_AUTHPRIV: u8 = 10;

/// The kind's name, as MSGID, in the structured data and in JSON.
#[must_use]
pub fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Log => "log",
        EntryKind::Event => "event",
        EntryKind::Audit => "audit",
    }
}

/// The syslog facility of an entry kind.
#[must_use]
pub fn facility(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Log | EntryKind::Event => FACILITY_DAEMON,
        EntryKind::Audit => FACILITY_AUTHPRIV,
    }
}

/// PRI = facility * 8 + severity (a severity above 7 counts as 7).
#[must_use]
pub fn pri(kind: EntryKind, severity: u8) -> u8 {
    facility(kind)
        .saturating_mul(8)
        .saturating_add(severity.min(7))
}

/// Days since 1970-01-01 to a (year, month, day) date of the proleptic Gregorian calendar.
fn date_of_days(days: i64) -> (i64, i64, i64) {
    // Shift the epoch to 0000-03-01 so a leap day is the last day of its year; 146097 days are
    // one 400-year cycle.
    let shifted = days + 719_468;
    let cycle = shifted.div_euclid(146_097);
    let day_of_cycle = shifted.rem_euclid(146_097);
    let year_of_cycle = (day_of_cycle - day_of_cycle / 1_460 + day_of_cycle / 36_524
        - day_of_cycle / 146_096)
        / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_cycle + cycle * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-11-28T18:00:00.123Z`); times before the epoch print as the epoch.
#[must_use]
pub fn rfc3339_ms(time_ms: i64) -> String {
    let ms = time_ms.max(0);
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = date_of_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A header field of RFC 5424: printable US-ASCII (33 to 126) only, at most `max` bytes;
/// other characters become `_`, an empty value is the NILVALUE `-`.
#[must_use]
pub fn header_field(value: &str, max: usize) -> String {
    let out: String = value
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() {
        "-".to_owned()
    } else {
        out
    }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped by a backslash (RFC 5424 section 6.3.3).
#[must_use]
pub fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
#[must_use]
pub fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// An entry as an RFC 5424 message:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [rampart@32473 seq="N" kind="K"] MSG`.
/// `hostname` is the host's name (empty: `-`).
#[must_use]
pub fn syslog(entry: &LogEntry, hostname: &str) -> String {
    let kind = kind_name(entry.kind);
    format!(
        "<{}>1 {} {} {} - {} [{SD_ID} seq=\"{}\" kind=\"{}\"] {}",
        pri(entry.kind, entry.severity),
        rfc3339_ms(entry.time_ms),
        header_field(hostname, HOSTNAME_MAX),
        header_field(&entry.source, APP_NAME_MAX),
        kind,
        entry.seq,
        sd_escape(kind),
        entry.message
    )
}

/// The syslog message of an entry for one UDP datagram: cut at [`UDP_MAX`] bytes on a
/// character boundary.
#[must_use]
pub fn syslog_datagram(entry: &LogEntry, hostname: &str) -> String {
    let mut msg = syslog(entry, hostname);
    let keep = cut_at_char_boundary(&msg, UDP_MAX).len();
    msg.truncate(keep);
    msg
}

/// RFC 6587 octet-counting: `LEN SP MSG`, LEN the message's length in bytes.
#[must_use]
pub fn octet_counted(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len().saturating_add(8));
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
    out
}

/// The JSON form of an entry, fields in this order.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    host: &'a str,
    source: &'a str,
    kind: &'static str,
    severity: u8,
    seq: u64,
    message: &'a str,
}

/// An entry as one JSON line with its newline:
/// `{"time":..,"host":..,"source":..,"kind":..,"severity":..,"seq":..,"message":..}`.
#[must_use]
pub fn json_line(entry: &LogEntry, hostname: &str) -> String {
    let line = JsonLine {
        time: rfc3339_ms(entry.time_ms),
        host: hostname,
        source: &entry.source,
        kind: kind_name(entry.kind),
        severity: entry.severity,
        seq: entry.seq,
        message: &entry.message,
    };
    // Serialising a struct of strings and integers cannot fail; an empty line is the fallback.
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, severity: u8, source: &str, message: &str) -> LogEntry {
        LogEntry {
            seq: 42,
            time_ms: 1_795_888_800_123,
            source: source.into(),
            kind,
            severity,
            message: message.into(),
        }
    }

    #[test]
    fn timestamps() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (-5, "1970-01-01T00:00:00.000Z"),
            (951_782_400_007, "2000-02-29T00:00:00.007Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (1_795_888_800_123, "2026-11-28T18:00:00.123Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
            (1_735_689_599_000, "2024-12-31T23:59:59.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(rfc3339_ms(*ms), *want, "{ms}");
        }
    }

    #[test]
    fn pri_values() {
        let cases: &[(EntryKind, u8, u8)] = &[
            (EntryKind::Log, 6, 30),
            (EntryKind::Log, 3, 27),
            (EntryKind::Event, 5, 29),
            (EntryKind::Audit, 6, 86),
            (EntryKind::Audit, 4, 84),
            (EntryKind::Log, 0, 24),
            (EntryKind::Log, 200, 31),
        ];
        for (kind, sev, want) in cases {
            assert_eq!(pri(*kind, *sev), *want, "{kind:?} {sev}");
        }
    }

    #[test]
    fn syslog_golden() {
        let cases: &[(LogEntry, &str, &str)] = &[
            (
                entry(EntryKind::Log, 6, "containerd", "level=info msg=\"started\""),
                "node-1",
                "<30>1 2026-11-28T18:00:00.123Z node-1 containerd - log [rampart@32473 seq=\"42\" kind=\"log\"] level=info msg=\"started\"",
            ),
            (
                entry(EntryKind::Audit, 4, "rampart-runc", "refused: privileged"),
                "",
                "<84>1 2026-11-28T18:00:00.123Z - rampart-runc - audit [rampart@32473 seq=\"42\" kind=\"audit\"] refused: privileged",
            ),
            (
                entry(EntryKind::Event, 5, "rampart-init", "service containerd started"),
                "h",
                "<29>1 2026-11-28T18:00:00.123Z h rampart-init - event [rampart@32473 seq=\"42\" kind=\"event\"] service containerd started",
            ),
            (
                entry(EntryKind::Log, 7, "we ird\tnamé", "é ] \" \\"),
                "h",
                "<31>1 2026-11-28T18:00:00.123Z h we_ird_nam_ - log [rampart@32473 seq=\"42\" kind=\"log\"] é ] \" \\",
            ),
            (
                entry(EntryKind::Log, 6, "", ""),
                "h",
                "<30>1 2026-11-28T18:00:00.123Z h - - log [rampart@32473 seq=\"42\" kind=\"log\"] ",
            ),
        ];
        for (e, host, want) in cases {
            assert_eq!(syslog(e, host), *want);
        }
    }

    #[test]
    fn app_name_is_cut_at_48() {
        let long = "a".repeat(60);
        let msg = syslog(&entry(EntryKind::Log, 6, &long, "x"), "h");
        assert!(
            msg.contains(&format!(" h {} - log ", "a".repeat(48))),
            "{msg}"
        );
        assert_eq!(header_field(&"é".repeat(60), 48), "_".repeat(48));
    }

    #[test]
    fn sd_values_are_escaped() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("a]b", "a\\]b"),
            ("[x]", "[x\\]"),
            ("é\"", "é\\\""),
        ];
        for (raw, want) in cases {
            assert_eq!(sd_escape(raw), *want, "{raw}");
        }
    }

    #[test]
    fn datagram_is_cut_on_a_char_boundary() {
        // Short messages are whole.
        let e = entry(EntryKind::Log, 6, "s", "short");
        assert_eq!(syslog_datagram(&e, "h"), syslog(&e, "h"));
        // A message of 3-byte characters is cut below 2048 bytes, never inside one.
        let e = entry(EntryKind::Log, 6, "s", &"€".repeat(2000));
        let d = syslog_datagram(&e, "h");
        assert!(d.len() <= UDP_MAX && d.len() > UDP_MAX - 3, "{}", d.len());
        assert!(d.ends_with('€'));
        assert!(syslog(&e, "h").starts_with(&d));
        // Every cut point of a mixed string lands on a boundary.
        let text = "aé€😀".repeat(10);
        for max in 0..text.len() + 2 {
            let cut = cut_at_char_boundary(&text, max);
            assert!(cut.len() <= max && text.starts_with(cut));
            assert!(max >= text.len() || cut.len() + 4 > max);
        }
    }

    #[test]
    fn octet_counting() {
        assert_eq!(octet_counted("<30>1 x"), b"7 <30>1 x".to_vec());
        assert_eq!(octet_counted(""), b"0 ".to_vec());
        // The count is in bytes, not characters.
        assert_eq!(octet_counted("é"), "2 é".as_bytes().to_vec());
        let e = entry(EntryKind::Log, 6, "containerd", "hello");
        let msg = syslog(&e, "node-1");
        let framed = octet_counted(&msg);
        assert_eq!(framed, format!("{} {msg}", msg.len()).into_bytes());
    }

    #[test]
    fn json_golden() {
        let e = entry(EntryKind::Audit, 4, "rampart-runc", "refused \"x\"\n\u{1}");
        assert_eq!(
            json_line(&e, "node-1"),
            "{\"time\":\"2026-11-28T18:00:00.123Z\",\"host\":\"node-1\",\"source\":\"rampart-runc\",\"kind\":\"audit\",\"severity\":4,\"seq\":42,\"message\":\"refused \\\"x\\\"\\n\\u0001\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(json_line(&e, "h").trim_end()).unwrap();
        assert_eq!(v["message"], "refused \"x\"\n\u{1}");
    }
}
