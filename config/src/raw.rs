//! The host file as serde sees it: unknown keys are refused, values keep their spans so that
//! validation can point at them.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    #[serde(default)]
    pub host: RawHostSection,
    #[serde(default)]
    pub boot: RawBoot,
    #[serde(default)]
    pub kernel: RawKernel,
    #[serde(default)]
    pub mounts: RawMounts,
    #[serde(default)]
    pub image: RawImage,
    #[serde(default, rename = "service")]
    pub services: Vec<crate::service::RawService>,
    #[serde(default)]
    pub firewall: crate::firewall::RawFirewall,
    #[serde(default)]
    pub container_policy: crate::policy::RawContainerPolicy,
    #[serde(default)]
    pub network: crate::network::RawNetwork,
    #[serde(default)]
    pub hardening: crate::hardening::RawHardening,
    #[serde(default)]
    pub containerd: Option<crate::containerd::RawContainerd>,
    #[serde(default)]
    pub control: crate::operate::RawControl,
    #[serde(default)]
    pub logs: crate::operate::RawLogs,
    #[serde(default)]
    pub metrics: crate::operate::RawMetrics,
    #[serde(default)]
    pub kubelet: Option<Spanned<crate::kubelet::RawKubelet>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHostSection {
    pub hostname: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawAction {
    Poweroff,
    Reboot,
    Halt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawRestart {
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBoot {
    pub failure_action: Option<RawAction>,
    pub shutdown_timeout: Option<Spanned<i64>>,
    pub cmdline: Option<Vec<Spanned<String>>>,
}

/// A sysctl value may be written as a TOML string or integer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSysctlValue {
    Int(i64),
    Str(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKernel {
    pub modules: Option<Vec<Spanned<String>>>,
    pub sysctl_baseline: Option<bool>,
    pub lock_modules: Option<bool>,
    pub sysctl: Option<BTreeMap<Spanned<String>, Spanned<RawSysctlValue>>>,
}

/// A size is a number of bytes or a string such as `"64M"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMounts {
    pub run_size: Option<Spanned<RawSize>>,
    pub tmp_size: Option<Spanned<RawSize>>,
    pub var_size: Option<Spanned<RawSize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImage {
    pub kernel: Option<Spanned<String>>,
    pub modules: Option<Spanned<String>>,
    #[serde(default)]
    pub files: Vec<RawImageFile>,
    #[serde(default)]
    pub oci: Vec<crate::oci::RawOciImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImageFile {
    pub source: Spanned<String>,
    pub target: Spanned<String>,
    pub mode: Option<Spanned<i64>>,
}
