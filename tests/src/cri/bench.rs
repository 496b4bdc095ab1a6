//! `rampart-cri bench`: a pod's start latency through rampart-runc against plain runc, run
//! inside a guest whose containerd has a second, benchmark-only CRI runtime handler (see
//! `tests/tests/cri.rs`, `cri_pod_benchmark`).
//!
//! Each round runs one pod through the default handler (`runc`, whose `BinaryName` is
//! rampart-runc) and one through the plain handler (an executable copy of runc), the order
//! swapped every round so neither kind always goes first; one warm-up pod of each comes
//! before the rounds. A pod is what the kubelet does for a one-container pod on the CNI
//! network: `RunPodSandbox`, `CreateContainer`, `StartContainer` (the pod's start latency),
//! then `ContainerStatus` every 20 ms until the container (`rampart-probe sleep 0`) has exited,
//! then `StopPodSandbox` and `RemovePodSandbox`. Every figure is a `CRI-TEST` line:
//! `KIND_N=START_MS EXITED_MS REMOVED_MS` (milliseconds from `RunPodSandbox`), or
//! `KIND_N=error: ...`.

use std::time::{Duration, Instant};

use super::api::{ContainerSpec, Cri, CriError, Pod};
use super::scenario::{say, wait_for_image, wait_for_runtime, Options, POD_LOG_ROOT, PROBE};

/// The benchmark's options: the scenario's (`--socket`, `--image`, `--pause-image`,
/// `--namespace` for the pods' namespace, `--wait`) and its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// The options it shares with the tier-1 scenario.
    pub cri: Options,
    /// The runtime handler of the plain-runc pods.
    pub plain_handler: String,
    /// Rounds (one pod of each kind per round).
    pub runs: u32,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            cri: Options::default(),
            plain_handler: "plain".to_owned(),
            runs: 8,
        }
    }
}

impl BenchOptions {
    /// Parses `--plain-handler NAME --runs N` and the scenario's options (each optional).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        for (flag, value) in crate::guest::flag_pairs(args)? {
            match flag {
                "--plain-handler" if value.is_empty() => {
                    return Err("--plain-handler must name a runtime handler".to_owned())
                }
                "--plain-handler" => o.plain_handler = value.to_owned(),
                "--runs" => {
                    o.runs = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| format!("--runs {value}: a whole number from 1 to 100"))?;
                }
                _ => o.cri.set(flag, value)?,
            }
        }
        Ok(o)
    }
}

/// The two kinds of pod: (label, runtime handler).
fn kinds(o: &BenchOptions) -> [(&'static str, &str); 2] {
    [("wrapped", ""), ("plain", &o.plain_handler)]
}

/// The kinds in round `round`'s order: wrapped first in odd rounds, plain first in even ones.
pub fn round_order(round: u32) -> [usize; 2] {
    if round % 2 == 1 {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// One pod's figures, in milliseconds from `RunPodSandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodTimes {
    /// `StartContainer` returned.
    pub started: u128,
    /// `ContainerStatus` first reported the container exited.
    pub exited: u128,
    /// `RemovePodSandbox` returned.
    pub removed: u128,
}

impl PodTimes {
    /// The result line's value: `START EXITED REMOVED`.
    pub fn value(&self) -> String {
        format!("{} {} {}", self.started, self.exited, self.removed)
    }
}

fn message(what: &str, e: &CriError) -> String {
    let m = e
        .runtime_message()
        .map_or_else(|| e.to_string(), str::to_owned);
    format!("{what}: {m}")
}

/// Runs one pod to its end through `handler`; the sandbox is removed whatever happened.
fn one_pod(cri: &Cri, o: &BenchOptions, label: &str, handler: &str) -> Result<PodTimes, String> {
    let uid = format!("rampart-bench-{label}");
    let pod = Pod {
        name: label.to_owned(),
        namespace: o.cri.plain_namespace.clone(),
        uid: uid.clone(),
        host_network: false,
        privileged: false,
        log_directory: format!("{POD_LOG_ROOT}/{}_{label}_{uid}", o.cri.plain_namespace),
        cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
        runtime_handler: handler.to_owned(),
    };
    let c = ContainerSpec {
        name: "probe".to_owned(),
        image: o.cri.image.clone(),
        command: vec![PROBE.to_owned()],
        args: vec!["sleep".to_owned(), "0".to_owned()],
        log_path: "probe/0.log".to_owned(),
        privileged: false,
        mounts: Vec::new(),
    };
    let _ = std::fs::create_dir_all(&pod.log_directory);
    let t = Instant::now();
    let sandbox = cri
        .run_pod_sandbox(&pod)
        .map_err(|e| message("RunPodSandbox", &e))?;
    let ran = (|| {
        let id = cri
            .create_container(&sandbox, &c, &pod)
            .map_err(|e| message("CreateContainer", &e))?;
        cri.start_container(&id)
            .map_err(|e| message("StartContainer", &e))?;
        let started = t.elapsed().as_millis();
        let deadline = Instant::now() + o.cri.wait;
        loop {
            let s = cri
                .container_status(&id)
                .map_err(|e| message("ContainerStatus", &e))?;
            if s.state == 2 {
                if s.exit_code != 0 {
                    return Err(format!("the probe exited {}", s.exit_code));
                }
                return Ok((started, t.elapsed().as_millis()));
            }
            if Instant::now() >= deadline {
                return Err(format!("the probe still runs after {:?}", o.cri.wait));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })();
    let stopped = cri
        .stop_pod_sandbox(&sandbox)
        .map_err(|e| message("StopPodSandbox", &e));
    let removed = cri
        .remove_pod_sandbox(&sandbox)
        .map_err(|e| message("RemovePodSandbox", &e));
    let (started, exited) = ran?;
    stopped?;
    removed?;
    Ok(PodTimes {
        started,
        exited,
        removed: t.elapsed().as_millis(),
    })
}

/// Runs the benchmark; returns the number of pods that failed.
pub fn run(o: &BenchOptions) -> u32 {
    let c = &o.cri;
    let cri = Cri::new(&c.socket, c.wait);
    let mut failures = 0;
    let ready = wait_for_runtime(&cri, c.wait)
        .map_err(|e| format!("the runtime never answered: {e}"))
        .and_then(|_| {
            [&c.pause_image, &c.image].iter().try_for_each(|image| {
                wait_for_image(&cri, image, c.wait)
                    .map(drop)
                    .map_err(|e| format!("{image}: {e}"))
            })
        });
    if let Err(e) = ready {
        say("bench_error", e);
        say("done", "1");
        return 1;
    }
    // One pod of `kind` labelled `{kind}-{tag}`, its result line keyed `{kind}_{tag}`.
    let mut pod = |kind: &str, handler: &str, tag: &str| {
        let value = match one_pod(&cri, o, &format!("{kind}-{tag}"), handler) {
            Ok(t) => t.value(),
            Err(e) => {
                failures += 1;
                format!("error: {e}")
            }
        };
        say(&format!("{kind}_{tag}"), value);
    };
    let kinds = kinds(o);
    for (kind, handler) in kinds {
        pod(kind, handler, "warm");
    }
    for round in 1..=o.runs {
        for (kind, handler) in round_order(round).iter().filter_map(|k| kinds.get(*k)) {
            pod(kind, handler, &round.to_string());
        }
    }
    say("failures", failures.to_string());
    say("done", "1");
    failures
}

/// Reads a result value (`START EXITED REMOVED`) back: `None` for an error.
pub fn parse_value(v: &str) -> Option<PodTimes> {
    let mut it = v.split_whitespace().map(str::parse::<u128>);
    let (Some(Ok(started)), Some(Ok(exited)), Some(Ok(removed)), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return None;
    };
    Some(PodTimes {
        started,
        exited,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let given = ["--runs", "3", "--plain-handler", "p", "--namespace", "n"].map(String::from);
        let o = BenchOptions::parse(&given).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((o.runs, o.plain_handler.as_str()), (3, "p"));
        assert_eq!(o.cri.plain_namespace, "n");
        assert_eq!(o.cri.wait, Duration::from_secs(120));
        // (arguments, what the error names)
        let bad: &[(&[&str], &str)] = &[
            (&["--runs", "0"], "a whole number from 1 to 100"),
            (&["--runs", "x"], "a whole number from 1 to 100"),
            (&["--runs"], "needs a value"),
            (&["--plain-handler", ""], "must name"),
            (&["--wait", "-1"], "not a number of seconds"),
            (&["--bogus", "1"], "unknown option"),
        ];
        for (a, want) in bad {
            let given: Vec<String> = a.iter().map(|s| (*s).to_owned()).collect();
            let e = BenchOptions::parse(&given).unwrap_err();
            assert!(e.contains(want), "{a:?}: {e}");
        }
    }

    #[test]
    fn rounds_alternate() {
        assert_eq!(round_order(1), [0, 1]);
        assert_eq!(round_order(2), [1, 0]);
        let o = BenchOptions::default();
        assert_eq!(kinds(&o), [("wrapped", ""), ("plain", "plain")]);
    }

    #[test]
    fn values_round_trip() {
        let t = PodTimes {
            started: 812,
            exited: 1003,
            removed: 1650,
        };
        assert_eq!(t.value(), "812 1003 1650");
        assert_eq!(parse_value(&t.value()), Some(t));
        for bad in ["error: RunPodSandbox: x", "1 2", "1 2 3 4", "a b c", ""] {
            assert_eq!(parse_value(bad), None, "{bad}");
        }
    }
}
