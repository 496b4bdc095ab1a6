//! containerd end to end, in one QEMU boot of the default host with test services: containerd
//! becomes ready; the probe's OCI image (made here, no registry) is imported with `ctr image
//! import`; `ctr run --rm` runs it under rampart-runc with the policy's capabilities, seccomp
//! and no_new_privs; every forbidden operation fails inside the container; `--privileged`, a
//! bind mount of `/` and `--runc-binary` to the real runc are refused; a fork bomb stops at
//! `pids.max`; a memory hog is OOM-killed in its cgroup; containerd SIGKILLed is restarted by
//! PID 1 and a running container survives it; a crash-looping service backs off; the AppArmor
//! profiles are loaded in enforce mode, containerd runs under `rampart-containerd` and a
//! container under `rampart-default`.
//!
//! A second boot, `containerd_benchmark` (ignored; `scripts/bench-containerd.sh` runs it),
//! times `ctr run --rm` through rampart-runc against plain runc with a test-only executable
//! copy of runc that only that image carries.

use std::path::PathBuf;
use std::sync::OnceLock;

use rampart_tests::containerd::{self as ctd, PROBE_ARCHIVE_IN_IMAGE};
use rampart_tests::harness::{self, scratch, test_env as env, Boot};

/// The probe's capabilities under the default policy: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
/// SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT AUDIT_WRITE SETFCAP.
const POLICY_CAPS: &str = "00000000a00405fb";

/// The guest side of the main test (busybox sh). Every result is a `CTD-TEST KEY=VALUE` line.
const SCRIPT: &str = r#"
B=/bin/busybox; C=/usr/bin/ctr; I=rampart.test/probe:latest
say() { echo "CTD-TEST $*"; }
up() { $B cut -d' ' -f1 /proc/uptime; }
say ready_uptime=$(up)
$C image import /usr/share/rampart-test/probe.tar >/dev/null 2>&1; say import=$?
say import_done=$(up)
$C run --rm $I t-status /rampart-probe status; say status_exit=$?
$C run --rm $I t-all /rampart-probe all; say all_exit=$?
out=$($C run --rm --privileged $I t-priv /rampart-probe status 2>&1); say privileged_exit=$?
say privileged_msg=$(echo "$out" | $B tr '\n' ' ')
out=$($C run --rm --mount type=bind,src=/,dst=/host,options=rbind:ro $I t-bind /rampart-probe status 2>&1); say bind_exit=$?
say bind_msg=$(echo "$out" | $B tr '\n' ' ')
out=$($C run --rm --runc-binary /usr/lib/rampart/runc $I t-bypass /rampart-probe status 2>&1); say bypass_exit=$?
say bypass_msg=$(echo "$out" | $B tr '\n' ' ')
$C run --rm $I t-fork /rampart-probe forkbomb 20000; say fork_exit=$?
$C run --rm --memory-limit 67108864 $I t-mem /rampart-probe memhog 1024; say mem_exit=$?
$C run -d $I t-long /rampart-probe sleep 3000 >/dev/null 2>&1; say long_start=$?
$B sleep 1
old=
for p in $($B cat /sys/fs/cgroup/services/containerd/cgroup.procs); do
  [ "$($B cat /proc/$p/comm 2>/dev/null)" = containerd ] && old=$p
done
say old_pid=$old
say containerd_attr=$($B cat /proc/$old/attr/current 2>&1)
lp=$($C task ls 2>/dev/null | $B awk '$1=="t-long"{print $2}')
say container_attr=$($B cat /proc/$lp/attr/current 2>&1)
say aa_profiles=$($B grep rampart- /sys/kernel/security/apparmor/profiles | $B sort | $B tr '\n' ';')
$B kill -9 $old; say kill_exit=$?
n=0; while [ $n -lt 120 ]; do $B sleep 0.5; $C version >/dev/null 2>&1 && break; n=$((n+1)); done
say back_after_halfseconds=$n
new=
for p in $($B cat /sys/fs/cgroup/services/containerd/cgroup.procs); do
  [ "$($B cat /proc/$p/comm 2>/dev/null)" = containerd ] && new=$p
done
say new_pid=$new
say tasks=$($C task ls 2>&1 | $B tr '\n' ';')
$C task kill t-long >/dev/null 2>&1; $B sleep 1; $C task delete -f t-long >/dev/null 2>&1; $C container delete t-long >/dev/null 2>&1
say pid1_alive=$($B cat /proc/1/comm)
say audit_lines=$($B wc -l < /var/log/rampart/audit.log)
say done=1
"#;

struct MainBoot {
    boot: Boot,
}

fn main_boot(test: &str) -> Option<&'static MainBoot> {
    if !harness::qemu_or_skip(test).unwrap() {
        return None;
    }
    static BOOT: OnceLock<MainBoot> = OnceLock::new();
    Some(BOOT.get_or_init(|| {
        let env = env();
        let dir = scratch("containerd");
        let probe = env.bin_dir.join("rampart-probe");
        let archive = ctd::probe_archive(&probe, &dir.join("oci")).unwrap();
        let mut crashy = toml::Table::new();
        crashy.insert("name".into(), "crashy".into());
        crashy.insert(
            "exec".into(),
            toml::Value::Array(vec!["/bin/busybox".into(), "false".into()]),
        );
        crashy.insert("restart".into(), "always".into());
        crashy.insert("restart_delay".into(), "200ms".into());
        crashy.insert("restart_delay_max".into(), "5s".into());
        let mut cl = toml::Table::new();
        cl.insert("restarts".into(), toml::Value::Integer(3));
        cl.insert("window".into(), "60s".into());
        crashy.insert("crash_loop".into(), toml::Value::Table(cl));
        let mut script = ctd::script_service("ctdtest", SCRIPT);
        // Reading /proc/PID/attr/current of containerd and of a container needs ptrace read
        // access to processes with more capabilities than the script.
        if let Some(caps) = script
            .get_mut("capabilities")
            .and_then(toml::Value::as_array_mut)
        {
            caps.push("CAP_SYS_PTRACE".into());
        }
        let text = ctd::host_with_containerd(
            env,
            vec![script, crashy],
            &[(archive, PROBE_ARCHIVE_IN_IMAGE, 0o644)],
        )
        .unwrap();
        let image = harness::build_host(env, &dir, &text)
            .unwrap_or_else(|e| panic!("{e}"))
            .image;
        let boot = ctd::boot(env, &image, "containerd").unwrap();
        MainBoot { boot }
    }))
}

#[test]
fn containerd_end_to_end() {
    let Some(m) = main_boot("containerd_end_to_end") else {
        return;
    };
    let console = m.boot.console();
    let tail = || m.boot.tail(80);
    let r = ctd::results(&console);
    let get = |k: &str| r.get(k).map_or("", String::as_str);
    assert_eq!(
        get("done"),
        "1",
        "the guest script did not finish\n{}",
        tail()
    );
    // Ready, imported, a container ran with the policy's privileges.
    assert_eq!(get("import"), "0", "ctr image import failed\n{}", tail());
    assert_eq!(get("status_exit"), "0", "ctr run failed\n{}", tail());
    let status = ctd::probe_lines(&console, "status");
    let s = status
        .first()
        .unwrap_or_else(|| panic!("no status line\n{}", tail()));
    assert_eq!(s["CapEff"], POLICY_CAPS, "{s}");
    assert_eq!(s["CapBnd"], POLICY_CAPS, "{s}");
    assert_eq!(s["Seccomp"], "2", "{s}");
    assert_eq!(s["NoNewPrivs"], "1", "{s}");
    // Every forbidden operation failed.
    let all = ctd::probe_lines(&console, "all");
    let all = all
        .first()
        .unwrap_or_else(|| panic!("no probe report\n{}", tail()));
    let not_blocked = all["not_blocked"].as_array().cloned().unwrap_or_default();
    assert!(
        not_blocked.is_empty(),
        "not blocked: {not_blocked:?}\n{all}"
    );
    assert!(
        all["probes"].as_array().is_some_and(|p| p.len() >= 20),
        "{all}"
    );
    // Refusals, with the rule named.
    assert_ne!(get("privileged_exit"), "0", "{}", tail());
    assert!(
        get("privileged_msg").contains("refused by the host's container policy"),
        "{}",
        get("privileged_msg")
    );
    assert!(
        get("privileged_msg").contains("devices:"),
        "{}",
        get("privileged_msg")
    );
    assert_ne!(get("bind_exit"), "0");
    assert!(get("bind_msg").contains("mounts:"), "{}", get("bind_msg"));
    assert_ne!(get("bypass_exit"), "0");
    assert!(
        get("bypass_msg").contains("permission denied"),
        "{}",
        get("bypass_msg")
    );
    // A fork bomb stops at pids.max, a memory hog is OOM-killed in its own cgroup.
    let fork = ctd::probe_lines(&console, "forkbomb");
    let fork = fork
        .first()
        .unwrap_or_else(|| panic!("no forkbomb line\n{}", tail()));
    let spawned = fork["spawned"].as_u64().unwrap_or(u64::MAX);
    assert!(spawned < 1024, "{fork}");
    assert_eq!(fork["stopped_by"], "EAGAIN", "{fork}");
    assert_eq!(
        get("mem_exit"),
        "137",
        "memhog was not OOM-killed\n{}",
        tail()
    );
    // containerd restarted by PID 1, the running container survived.
    assert_eq!(get("long_start"), "0", "{}", tail());
    assert_ne!(get("old_pid"), "");
    assert_ne!(get("new_pid"), "");
    assert_ne!(get("old_pid"), get("new_pid"));
    assert!(
        get("tasks").contains("t-long") && get("tasks").contains("RUNNING"),
        "{}\n{}",
        get("tasks"),
        tail()
    );
    assert_eq!(get("pid1_alive"), "init");
    // AppArmor: both profiles loaded in enforce mode, containerd under its profile, a
    // container that named none under rampart-default.
    assert_eq!(
        get("aa_profiles"),
        "rampart-containerd (enforce);rampart-default (enforce);",
        "{}",
        tail()
    );
    assert_eq!(
        get("containerd_attr"),
        "rampart-containerd (enforce)",
        "{}",
        tail()
    );
    assert_eq!(
        get("container_attr"),
        "rampart-default (enforce)",
        "{}",
        tail()
    );
    // A crash-looping service backs off.
    assert!(
        console.contains("CrashLoop"),
        "no CrashLoop line\n{}",
        tail()
    );
    assert!(console.contains("rampart-init: poweroff"), "{}", tail());
    eprintln!(
        "containerd ready at {}s, probe image imported at {}s (uptime)",
        get("ready_uptime"),
        get("import_done")
    );
}

/// Runs of each kind in the benchmark.
const BENCH_RUNS: usize = 8;

/// The benchmark's guest script: `ctr run --rm` through rampart-runc and through plain runc
/// (a test-only executable copy, `--runc-binary`), interleaved, timed in centiseconds.
fn bench_script() -> String {
    format!(
        r#"
B=/bin/busybox; C=/usr/bin/ctr; I=rampart.test/probe:latest
say() {{ echo "CTD-TEST $*"; }}
cs() {{ $B cut -d' ' -f1 /proc/uptime | $B tr -d .; }}
say ready_uptime=$($B cut -d' ' -f1 /proc/uptime)
$C image import /usr/share/rampart-test/probe.tar >/dev/null 2>&1; say import=$?
$C run --rm $I warm-w /rampart-probe sleep 0 >/dev/null 2>&1
$C run --rm --runc-binary /usr/lib/rampart-test/runc-plain $I warm-p /rampart-probe sleep 0 >/dev/null 2>&1
i=1
while [ $i -le {BENCH_RUNS} ]; do
  t0=$(cs); $C run --rm $I w$i /rampart-probe sleep 0 >/dev/null 2>&1; e=$?; t1=$(cs); say wrapped_$i=$((t1-t0)) exit=$e
  t0=$(cs); $C run --rm --runc-binary /usr/lib/rampart-test/runc-plain $I p$i /rampart-probe sleep 0 >/dev/null 2>&1; e=$?; t1=$(cs); say plain_$i=$((t1-t0)) exit=$e
  i=$((i+1))
done
say done=1
"#
    )
}

#[test]
#[ignore = "a benchmark boot: scripts/bench-containerd.sh"]
fn containerd_benchmark() {
    if !harness::qemu_or_skip("containerd_benchmark").unwrap() {
        return;
    }
    let env = env();
    let dir = scratch("containerd-bench");
    let archive = ctd::probe_archive(&env.bin_dir.join("rampart-probe"), &dir.join("oci")).unwrap();
    let text = ctd::host_with_containerd(
        env,
        vec![ctd::script_service("bench", &bench_script())],
        &[
            (archive, PROBE_ARCHIVE_IN_IMAGE, 0o644),
            // Only this image carries an executable real runc.
            (
                PathBuf::from("/usr/sbin/runc"),
                "/usr/lib/rampart-test/runc-plain",
                0o755,
            ),
        ],
    )
    .unwrap();
    let image = harness::build_host(env, &dir, &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .image;
    let boot = ctd::boot(env, &image, "containerd-bench").unwrap();
    let console = boot.console();
    let r = ctd::results(&console);
    assert_eq!(
        r.get("done").map(String::as_str),
        Some("1"),
        "{}",
        boot.tail(60)
    );
    let series = |kind: &str| -> Vec<f64> {
        (1..=BENCH_RUNS)
            .filter_map(|i| r.get(&format!("{kind}_{i}")))
            .filter(|v| v.ends_with("exit=0"))
            .filter_map(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|cs| cs / 100.0)
            .collect()
    };
    let (w, p) = (series("wrapped"), series("plain"));
    assert_eq!(w.len(), BENCH_RUNS, "{r:?}");
    assert_eq!(p.len(), BENCH_RUNS, "{r:?}");
    let (mw, mp) = (ctd::median(&w), ctd::median(&p));
    let started = console
        .lines()
        .find_map(|l| l.strip_prefix("rampart-init: services started at "))
        .unwrap_or("?");
    println!("BENCH services started at {started}");
    println!(
        "BENCH containerd ready (bench service started) at {}s",
        r.get("ready_uptime").map_or("?", String::as_str)
    );
    println!("BENCH ctr run --rm via rampart-runc: {w:?} median {mw:.2}s");
    println!("BENCH ctr run --rm via plain runc:   {p:?} median {mp:.2}s");
    println!("BENCH ratio rampart-runc / plain runc: {:.3}", mw / mp);
}
