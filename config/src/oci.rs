//! `[[image.oci]]`: OCI image archives that `rampart-image` builds at image-build time from
//! one static binary and puts into the image, for `ctr image import` on the host (no
//! registry needed). Every key is documented in `docs/config.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::Validator;

/// Where a binary that becomes a one-file container image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciBinary {
    /// A bare file name (no `/`): a rampart program taken from beside `rampart-image` (like
    /// `rampart-dhcp`); it also goes into the image at `/usr/bin/NAME` so a service can run it.
    Beside(String),
    /// A path on the build machine (resolved relative to the host file).
    Path(PathBuf),
}

/// One `[[image.oci]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    /// The image reference, `NAME:TAG` (e.g. `rampart.demo/hello:latest`).
    pub name: String,
    /// The static ELF binary that is the image's only file, at `/BASENAME`.
    pub binary: OciBinary,
    /// Arguments after the binary in the image's entrypoint.
    pub args: Vec<String>,
    /// Where the archive goes in the image (absolute, normalised).
    pub target: PathBuf,
}

impl OciImage {
    /// The tag part of [`OciImage::name`] (after the last `:` following the last `/`).
    pub fn tag(&self) -> &str {
        let last = self.name.rsplit('/').next().unwrap_or(&self.name);
        last.rsplit_once(':').map_or("latest", |(_, t)| t)
    }

    /// The binary's file name, which is its path inside the container image (`/NAME`).
    pub fn binary_name(&self) -> String {
        match &self.binary {
            OciBinary::Beside(n) => n.clone(),
            OciBinary::Path(p) => p
                .file_name()
                .map_or_else(|| "bin".to_owned(), |n| n.to_string_lossy().into_owned()),
        }
    }
}

/// One `[[image.oci]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOciImage {
    pub name: Spanned<String>,
    pub binary: Spanned<String>,
    #[serde(default)]
    pub args: Vec<String>,
    pub target: Spanned<String>,
}

/// A reference with a tag: printable, no quotes or backslashes, `NAME:TAG`.
fn reference(s: &str) -> Result<String, String> {
    let printable = !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '\'');
    let last = s.rsplit('/').next().unwrap_or(s);
    let tagged = last
        .split_once(':')
        .is_some_and(|(n, t)| !n.is_empty() && !t.is_empty() && !t.contains(':'));
    if printable && tagged && !s.contains('@') {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not an image reference NAME:TAG (printable, no quotes, backslashes or `@`)"
        ))
    }
}

impl Validator<'_> {
    /// Validates `[[image.oci]]`; relative binary paths are resolved against `base`.
    pub(crate) fn oci(&mut self, raw: &[RawOciImage], base: &Path) -> Vec<OciImage> {
        let mut out: Vec<OciImage> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let name = self.check(&format!("image.oci[{i}].name"), &r.name, reference);
            let binary = self.check(&format!("image.oci[{i}].binary"), &r.binary, |s| {
                if s.is_empty() || s.ends_with('/') {
                    Err(format!("`{s}` is not a file"))
                } else if !s.contains('/') {
                    Ok(OciBinary::Beside(s.to_owned()))
                } else if Path::new(s).is_absolute() {
                    Ok(OciBinary::Path(PathBuf::from(s)))
                } else {
                    Ok(OciBinary::Path(base.join(s)))
                }
            });
            let tkey = format!("image.oci[{i}].target");
            let target = self.check(&tkey, &r.target, crate::types::image_path);
            if let Some(t) = &target {
                if out.iter().any(|o| o.target == *t) {
                    self.report(
                        &tkey,
                        r.target.span(),
                        format!("`{}` is the target of another entry", t.display()),
                    );
                    continue;
                }
            }
            if let (Some(name), Some(binary), Some(target)) = (name, binary, target) {
                out.push(OciImage {
                    name,
                    binary,
                    args: r.args.clone(),
                    target,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn oci(text: &str) -> Result<Vec<OciImage>, String> {
        parse(text, Path::new("/cfg/host.toml"))
            .map(|c| c.image.oci)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn entries() {
        let text =
            "[[image.oci]]\nname = \"rampart.demo/hello:latest\"\nbinary = \"rampart-demo\"\n\
                    args = [\"inside\"]\ntarget = \"/usr/share/rampart/demo.oci.tar\"\n\
                    [[image.oci]]\nname = \"localhost:5000/x:v1\"\nbinary = \"bin/x\"\n\
                    target = \"/usr/share/x.tar\"\n";
        let got = oci(text).unwrap();
        assert_eq!(
            got,
            [
                OciImage {
                    name: "rampart.demo/hello:latest".into(),
                    binary: OciBinary::Beside("rampart-demo".into()),
                    args: vec!["inside".into()],
                    target: PathBuf::from("/usr/share/rampart/demo.oci.tar"),
                },
                OciImage {
                    name: "localhost:5000/x:v1".into(),
                    binary: OciBinary::Path(PathBuf::from("/cfg/bin/x")),
                    args: vec![],
                    target: PathBuf::from("/usr/share/x.tar"),
                },
            ]
        );
        assert_eq!(got[0].tag(), "latest");
        assert_eq!(got[1].tag(), "v1");
        assert_eq!(got[1].binary_name(), "x");
        assert!(oci("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_reported() {
        // (text, expected fragment of the message)
        let cases = [
            (
                "[[image.oci]]\nname = \"hello\"\nbinary = \"b\"\ntarget = \"/t\"\n",
                "host.toml:2:8: image.oci[0].name: `hello` is not an image reference",
            ),
            (
                "[[image.oci]]\nname = \"a:b\"\nbinary = \"b\"\ntarget = \"t\"\n",
                "image.oci[0].target: `t` is not an absolute path",
            ),
            (
                "[[image.oci]]\nname = \"a:b\"\nbinary = \"\"\ntarget = \"/t\"\n",
                "image.oci[0].binary: `` is not a file",
            ),
            (
                "[[image.oci]]\nname = \"a:b\"\nbinary = \"b\"\ntarget = \"/t\"\n\
                 [[image.oci]]\nname = \"c:d\"\nbinary = \"b\"\ntarget = \"/t\"\n",
                "image.oci[1].target: `/t` is the target of another entry",
            ),
            (
                "[[image.oci]]\nname = \"a:b\"\nbinary = \"b\"\n",
                "missing field `target`",
            ),
        ];
        for (text, want) in cases {
            let err = oci(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
