//! Validated values: each type can only hold a value that passed its checks.

use std::fmt;
use std::path::PathBuf;

/// What PID 1 does when it shuts the host down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Power the machine off.
    Poweroff,
    /// Restart the machine.
    Reboot,
    /// Halt without powering off.
    Halt,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Poweroff => "poweroff",
            Action::Reboot => "reboot",
            Action::Halt => "halt",
        })
    }
}

/// When the supervisor restarts a service that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Never: the service is a oneshot.
    Never,
    /// Only when it exits with a non-zero status or a signal.
    OnFailure,
    /// Whenever it exits.
    Always,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restart::Never => "never",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        })
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::try_from(s.as_str())
            }
        }
    };
}

string_newtype!(
    /// A kernel module name, normalised with `-` replaced by `_`.
    ModuleName
);
string_newtype!(
    /// A sysctl key in dotted form (`kernel.kptr_restrict`): no empty segment, no `..`, no `/`.
    SysctlKey
);
string_newtype!(
    /// A sysctl value: one line of printable text.
    SysctlValue
);
string_newtype!(
    /// A service name: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
    ServiceName
);
string_newtype!(
    /// A host name: dot-separated RFC 1123 labels.
    Hostname
);

impl TryFrom<&str> for ModuleName {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 55 {
            return Err("a module name has 1 to 55 characters".into());
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "`{s}` is not a module name (letters, digits, `_` and `-` only)"
            ));
        }
        Ok(ModuleName(s.replace('-', "_")))
    }
}

impl TryFrom<&str> for SysctlKey {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 256 {
            return Err("a sysctl key has 1 to 256 characters".into());
        }
        if s.contains('/') {
            return Err(format!("`{s}` contains `/`: write sysctl keys with dots"));
        }
        let segments: Vec<&str> = s.split('.').collect();
        if segments.len() < 2 {
            return Err(format!(
                "`{s}` is not a sysctl key (expected at least two dotted parts)"
            ));
        }
        if segments.iter().any(|seg| seg.is_empty()) {
            return Err(format!(
                "`{s}` has an empty part (`..` or a leading or trailing dot)"
            ));
        }
        if !segments.iter().all(|seg| {
            seg.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(format!(
                "`{s}` has a character other than letters, digits, `_`, `-` and `.`"
            ));
        }
        Ok(SysctlKey(s.to_owned()))
    }
}

impl SysctlKey {
    /// The key's file relative to `/proc/sys` (dots become slashes).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(self.0.replace('.', "/"))
    }
}

impl TryFrom<&str> for SysctlValue {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a sysctl value must not be empty".into());
        }
        if s.len() > 4096 {
            return Err("a sysctl value has at most 4096 characters".into());
        }
        if s.chars().any(|c| c.is_control() && c != '\t') {
            return Err("a sysctl value must be one line of printable text".into());
        }
        Ok(SysctlValue(s.to_owned()))
    }
}

impl TryFrom<&str> for ServiceName {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !first_ok
            || s.len() > 63
            || !s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(format!(
                "`{s}` is not a service name (1 to 63 of a-z, 0-9, `-`, `_`, starting with a letter or digit)"
            ));
        }
        Ok(ServiceName(s.to_owned()))
    }
}

impl TryFrom<&str> for Hostname {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if s.is_empty() || s.len() > 64 || !s.split('.').all(label_ok) {
            return Err(format!(
                "`{s}` is not a host name (dot-separated labels of letters, digits and inner `-`, at most 64 characters)"
            ));
        }
        Ok(Hostname(s.to_ascii_lowercase()))
    }
}

/// A size in bytes, at least one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

impl Size {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// A size of `n` MiB (at least 1 MiB): always valid.
    pub const fn from_mib(n: u64) -> Self {
        if n == 0 {
            Size(1 << 20)
        } else {
            Size(n.saturating_mul(1 << 20))
        }
    }

    /// A size from a byte count, checked the same way as a configured one.
    pub fn from_bytes(bytes: u64) -> Result<Self, String> {
        if bytes < 4096 {
            return Err(format!("{bytes} bytes is less than one page (4096)"));
        }
        Ok(Size(bytes))
    }

    /// Parses `"64M"`, `"1G"`, `"512k"` or a plain number of bytes.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (digits, mult) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_lowercase() {
                    'k' => 1 << 10,
                    'm' => 1 << 20,
                    'g' => 1 << 30,
                    _ => return Err(format!("`{s}` has an unknown unit (use k, M or G)")),
                };
                (t.get(..i).unwrap_or(""), m)
            }
            _ => (t, 1),
        };
        let n: u64 = digits.parse().map_err(|_| {
            format!("`{s}` is not a size (a number of bytes, or a number with k, M or G)")
        })?;
        let bytes = n
            .checked_mul(mult)
            .ok_or_else(|| format!("`{s}` is too large"))?;
        Size::from_bytes(bytes)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Checks that `s` is an absolute, normalised path inside an image (no `.`, `..`, `//` or
/// trailing `/`, not `/` itself).
pub fn image_path(s: &str) -> Result<PathBuf, String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path"));
    }
    if s == "/" || s.ends_with('/') || s.contains("//") || s.contains('\0') {
        return Err(format!("`{s}` is not a normalised file path"));
    }
    if s.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("`{s}` must not contain `.` or `..`"));
    }
    Ok(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys() {
        let cases: &[(&str, bool)] = &[
            ("kernel.kptr_restrict", true),
            ("kernel.ctrl-alt-del", true),
            ("net.ipv4.conf.all.rp_filter", true),
            ("kernel", false),
            ("kernel..x", false),
            (".kernel.x", false),
            ("kernel.x.", false),
            ("kernel/x", false),
            ("kernel.x y", false),
            ("", false),
        ];
        for (k, ok) in cases {
            assert_eq!(SysctlKey::try_from(*k).is_ok(), *ok, "{k}");
        }
        let k = SysctlKey::try_from("net.ipv4.tcp_syncookies").unwrap();
        assert_eq!(k.proc_path(), PathBuf::from("net/ipv4/tcp_syncookies"));
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("64M", Some(64 << 20)),
            ("64m", Some(64 << 20)),
            ("1G", Some(1 << 30)),
            ("512k", Some(512 << 10)),
            ("8192", Some(8192)),
            ("12", None),
            ("12T", None),
            ("M", None),
            ("-1M", None),
            ("99999999999999999999G", None),
        ];
        for (s, want) in cases {
            assert_eq!(Size::parse(s).ok().map(Size::bytes), *want, "{s}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            ModuleName::try_from("crc32c-generic").unwrap().as_str(),
            "crc32c_generic"
        );
        assert!(ModuleName::try_from("a/b").is_err());
        assert!(ServiceName::try_from("containerd").is_ok());
        assert!(ServiceName::try_from("Containerd").is_err());
        assert!(ServiceName::try_from("-x").is_err());
        assert!(ServiceName::try_from("").is_err());
        assert!(Hostname::try_from("node-1.example").is_ok());
        assert!(Hostname::try_from("-node").is_err());
        assert!(Hostname::try_from("a..b").is_err());
    }

    #[test]
    fn image_paths() {
        assert!(image_path("/usr/bin/x").is_ok());
        for bad in ["usr/bin", "/", "/a/", "/a//b", "/a/../b", "/a/./b"] {
            assert!(image_path(bad).is_err(), "{bad}");
        }
    }
}
