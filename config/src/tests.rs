//! Parsing and every validation error path, table-driven.

use super::*;

fn ok(text: &str) -> HostConfig {
    match parse(text, Path::new("/cfg/host.toml")) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, Path::new("/cfg/host.toml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn empty_file_gives_defaults() {
    let c = ok("");
    assert_eq!(c.host.hostname, "rampart");
    assert_eq!(c.boot.failure_action, Action::Poweroff);
    assert_eq!(c.boot.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(c.boot.cmdline, DEFAULT_CMDLINE);
    assert!(c.kernel.sysctl_baseline);
    assert!(c.kernel.lock_modules);
    assert!(c.kernel.modules.is_empty());
    assert_eq!(c.mounts.run_size.bytes(), 64 << 20);
    assert_eq!(c.mounts.tmp_size.bytes(), 256 << 20);
    assert_eq!(c.mounts.var_size.bytes(), 1 << 30);
    assert!(c.services.is_empty());
}

#[test]
fn full_file() {
    let c = ok(r#"
[host]
hostname = "Node-1"

[boot]
failure_action = "reboot"
shutdown_timeout = 3
cmdline = ["console=ttyS0", "quiet"]

[kernel]
modules = ["nf_tables", "crc32c-generic"]
sysctl_baseline = false
lock_modules = false
[kernel.sysctl]
"kernel.yama.ptrace_scope" = 3
"net.ipv4.ip_forward" = "1"

[mounts]
run_size = "32M"
tmp_size = 1048576
var_size = "2G"

[image]
kernel = "../.cache/kernel/vmlinuz"
modules = "/abs/modules"
[[image.files]]
source = "bin/hello"
target = "/usr/bin/hello"
mode = 0o755

[[service]]
name = "hello"
exec = ["/usr/bin/hello", "--loud"]
env = { GREETING = "hi" }
restart = "on-failure"
on_exit = "poweroff"

[[service]]
name = "second"
exec = ["/bin/true"]
"#);
    assert_eq!(c.host.hostname, "node-1");
    assert_eq!(c.boot.failure_action, Action::Reboot);
    assert_eq!(c.boot.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(c.boot.cmdline, ["console=ttyS0", "quiet"]);
    let mods: Vec<&str> = c.kernel.modules.iter().map(ModuleName::as_str).collect();
    assert_eq!(mods, ["nf_tables", "crc32c_generic"]);
    assert!(!c.kernel.sysctl_baseline && !c.kernel.lock_modules);
    let sysctl: Vec<(&str, &str)> = c
        .kernel
        .sysctl
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        sysctl,
        [
            ("kernel.yama.ptrace_scope", "3"),
            ("net.ipv4.ip_forward", "1")
        ]
    );
    assert_eq!(c.mounts.run_size.bytes(), 32 << 20);
    assert_eq!(c.mounts.tmp_size.bytes(), 1 << 20);
    assert_eq!(c.mounts.var_size.bytes(), 2 << 30);
    assert_eq!(
        c.image.kernel,
        Some(PathBuf::from("/cfg/../.cache/kernel/vmlinuz"))
    );
    assert_eq!(c.image.modules, Some(PathBuf::from("/abs/modules")));
    assert_eq!(c.image.files.len(), 1);
    assert_eq!(c.image.files[0].source, PathBuf::from("/cfg/bin/hello"));
    assert_eq!(c.image.files[0].target, PathBuf::from("/usr/bin/hello"));
    assert_eq!(c.image.files[0].mode, Some(0o755));
    assert_eq!(c.services.len(), 2);
    let s = &c.services[0];
    assert_eq!(s.name.as_str(), "hello");
    assert_eq!(s.exec, ["/usr/bin/hello", "--loud"]);
    assert_eq!(s.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(s.restart, Restart::OnFailure);
    assert_eq!(s.on_exit, Some(Action::Poweroff));
    assert_eq!(c.services[1].restart, Restart::Never);
    assert_eq!(c.services[1].on_exit, None);
}

/// Each bad input and the (key, line, column, part of the message) it must produce.
#[test]
fn every_error_names_key_line_and_reason() {
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        // serde-level errors: unknown keys and wrong types.
        ("[host]\nname = \"x\"\n", "host.name", 2, 1, "unknown field"),
        ("bogus = 1\n", "bogus", 1, 1, "unknown field"),
        ("[boot]\nfailure_action = \"explode\"\n", "boot.failure_action", 2, 18, "unknown variant"),
        ("[boot]\nshutdown_timeout = \"ten\"\n", "boot.shutdown_timeout", 2, 20, "invalid type"),
        ("[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrestart = \"sometimes\"\n", "service[0].restart", 4, 11, "unknown variant"),
        ("[[service]]\nname = \"a\"\n", "service[0]", 1, 1, "missing field `exec`"),
        ("[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service]]\nname = \"b\"\nexec = [\"/b\"]\nusr = \"x\"\n", "service[1].usr", 7, 1, "unknown field"),
        ("[kernel\n", "kernel", 1, 8, "unclosed table"),
        // validation errors.
        ("[host]\nhostname = \"-bad\"\n", "host.hostname", 2, 12, "not a host name"),
        ("[boot]\nshutdown_timeout = 0\n", "boot.shutdown_timeout", 2, 20, "1 to 600"),
        ("[boot]\ncmdline = [\"a b\"]\n", "boot.cmdline[0]", 2, 12, "one command-line item"),
        ("[kernel]\nmodules = [\"a/b\"]\n", "kernel.modules[0]", 2, 12, "not a module name"),
        ("[kernel]\nmodules = [\"nf-tables\", \"nf_tables\"]\n", "kernel.modules[1]", 2, 25, "listed twice"),
        ("[kernel.sysctl]\n\"kernel..x\" = 1\n", "kernel.sysctl.\"kernel..x\"", 2, 1, "empty part"),
        ("[kernel.sysctl]\n\"kernel/x\" = 1\n", "kernel.sysctl.\"kernel/x\"", 2, 1, "contains `/`"),
        ("[kernel.sysctl]\n\"kernel.x\" = \"\"\n", "kernel.sysctl.\"kernel.x\"", 2, 14, "must not be empty"),
        ("[kernel.sysctl]\n\"kernel.x\" = \"a\\nb\"\n", "kernel.sysctl.\"kernel.x\"", 2, 14, "one line"),
        ("[mounts]\nrun_size = \"12T\"\n", "mounts.run_size", 2, 12, "unknown unit"),
        ("[mounts]\ntmp_size = 12\n", "mounts.tmp_size", 2, 12, "less than one page"),
        ("[mounts]\nvar_size = -5\n", "mounts.var_size", 2, 12, "not a size"),
        ("[image]\nkernel = \"\"\n", "image.kernel", 2, 10, "must not be empty"),
        ("[[image.files]]\nsource = \"a\"\ntarget = \"rel/path\"\n", "image.files[0].target", 3, 10, "absolute"),
        ("[[image.files]]\nsource = \"a\"\ntarget = \"/a/../b\"\n", "image.files[0].target", 3, 10, "`..`"),
        ("[[image.files]]\nsource = \"a\"\ntarget = \"/sbin/init\"\n", "image.files[0].target", 3, 10, "rampart-image itself"),
        ("[[image.files]]\nsource = \"a\"\ntarget = \"/x\"\n[[image.files]]\nsource = \"b\"\ntarget = \"/x\"\n", "image.files[1].target", 6, 10, "another entry"),
        ("[[image.files]]\nsource = \"a\"\ntarget = \"/x\"\nmode = 0o17777\n", "image.files[0].mode", 4, 8, "file mode"),
        ("[[service]]\nname = \"Bad\"\nexec = [\"/a\"]\n", "service[0].name", 2, 8, "not a service name"),
        ("[[service]]\nname = \"a\"\nexec = []\n", "service[0].exec", 3, 8, "non-empty"),
        ("[[service]]\nname = \"a\"\nexec = [\"a\"]\n", "service[0].exec[0]", 3, 9, "absolute path"),
        ("[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service]]\nname = \"a\"\nexec = [\"/b\"]\n", "service[1].name", 5, 8, "defined twice"),
        ("[[service]]\nname = \"a\"\nexec = [\"/a\"]\nenv = { \"1X\" = \"v\" }\n", "service[0].env.1X", 4, 9, "environment variable name"),
    ];
    for (text, key, line, column, msg) in cases {
        let ps = problems(text);
        let p = &ps[0];
        assert_eq!(
            (p.key.as_str(), p.line, p.column),
            (*key, *line, *column),
            "for input:\n{text}\ngot {p:?}"
        );
        assert!(
            p.message.contains(msg),
            "for input:\n{text}\nmessage {:?} lacks {msg:?}",
            p.message
        );
    }
}

#[test]
fn several_problems_are_reported_at_once() {
    let ps = problems("[host]\nhostname = \"-x\"\n[boot]\nshutdown_timeout = 0\n[[service]]\nname = \"a\"\nexec = [\"rel\"]\n");
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "host.hostname",
            "boot.shutdown_timeout",
            "service[0].exec[0]"
        ]
    );
}

#[test]
fn display_lists_file_line_column_key_reason() {
    let e = parse("[boot]\nshutdown_timeout = 0\n", Path::new("host.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "host.toml:2:20: boot.shutdown_timeout: must be a number of seconds from 1 to 600"
    );
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let c = parse("[image]\nkernel = \"k\"\n", Path::new("host.toml")).unwrap();
    assert_eq!(c.image.kernel, Some(PathBuf::from("./k")));
}

#[test]
fn read_error_names_the_file() {
    let e = load(Path::new("/nonexistent/host.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read config /nonexistent/host.toml: "),
        "{e}"
    );
}
