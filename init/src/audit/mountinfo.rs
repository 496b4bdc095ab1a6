//! A `/proc/PID/mountinfo` parser (proc(5)): mount point, per-mount options, file system type.

/// One mount as `/proc/PID/mountinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point (field 5, octal escapes decoded).
    pub mount_point: String,
    /// Per-mount options (field 6), e.g. `rw,nosuid,nodev,noexec,relatime`.
    pub options: Vec<String>,
    /// The file system type (first field after `-`).
    pub fstype: String,
    /// The source (second field after `-`).
    pub source: String,
    /// Super block options (third field after `-`).
    pub super_options: String,
}

impl MountEntry {
    /// Whether a per-mount option is set (`ro`, `nosuid`, ...).
    pub fn has(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }
}

/// Decodes the kernel's `\ooo` octal escapes (space, tab, newline, backslash).
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0usize;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes.get(i) == Some(&b'\\') && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes.get(i).copied().unwrap_or(b'?'));
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let dash = fields.iter().position(|f| *f == "-")?;
    if dash < 6 {
        return None;
    }
    let mount_point = unescape(fields.get(4)?);
    let options = fields.get(5)?.split(',').map(str::to_owned).collect();
    Some(MountEntry {
        mount_point,
        options,
        fstype: (*fields.get(dash + 1)?).to_owned(),
        source: unescape(fields.get(dash + 2)?),
        super_options: fields
            .get(dash + 3)
            .map_or_else(String::new, |s| (*s).to_owned()),
    })
}

/// The mount that is visible at `target`: the last entry for it (later mounts stack on top).
pub fn visible<'a>(entries: &'a [MountEntry], target: &str) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / ro,nosuid,nodev,relatime shared:1 - tmpfs rootfs ro,size=100k
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 22 0:23 / /tmp rw,relatime - tmpfs tmp rw
25 24 0:24 / /tmp rw,nosuid,nodev,noexec,relatime - tmpfs tmp rw,size=262144k
26 22 0:25 / /mnt/with\\040space rw - tmpfs a\\134b rw
bad line
";

    #[test]
    fn parses_fields_and_escapes() {
        let e = parse(SAMPLE);
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].mount_point, "/");
        assert!(e[0].has("ro") && e[0].has("nosuid") && !e[0].has("noexec"));
        assert_eq!(e[1].fstype, "proc");
        assert_eq!(e[4].mount_point, "/mnt/with space");
        assert_eq!(e[4].source, "a\\b");
        assert_eq!(e[3].super_options, "rw,size=262144k");
    }

    #[test]
    fn the_top_mount_is_visible() {
        let e = parse(SAMPLE);
        let tmp = visible(&e, "/tmp").unwrap();
        assert!(tmp.has("noexec"));
        assert!(visible(&e, "/var").is_none());
    }

    #[test]
    fn unescape_cases() {
        let cases = [
            ("a\\040b", "a b"),
            ("a\\011b", "a\tb"),
            ("a\\\\b", "a\\\\b"),
            ("\\12", "\\12"),
            ("plain", "plain"),
        ];
        for (i, want) in cases {
            assert_eq!(unescape(i), want, "{i}");
        }
    }
}
