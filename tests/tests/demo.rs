//! The demonstration, in one QEMU boot of `examples/host.toml` exactly as `scripts/demo.sh`
//! builds it: containerd becomes ready, the `demo` service imports the OCI archive that
//! `rampart-image` built from `rampart-demo` (`[[image.oci]]`), runs it with `ctr run --rm`
//! through rampart-runc, relays the container's hello line, its `NoNewPrivs` and `Seccomp`
//! lines, and the host powers off by itself (`rampart-image boot` exits 0).

use rampart_tests::containerd as ctd;
use rampart_tests::harness;

#[test]
fn demo_runs_a_container_and_powers_off() {
    if !harness::qemu_or_skip("demo_runs_a_container_and_powers_off").unwrap() {
        return;
    }
    let env = match harness::env() {
        Ok(env) => env,
        Err(e) => panic!("harness setup failed: {e}"),
    };
    let image = env.out_dir.join("demo-image");
    let _ = std::fs::remove_dir_all(&image);
    let built = harness::build(env, &env.example, &image).unwrap();
    assert!(
        built.status.success(),
        "rampart-image build failed:\n{}",
        built.combined()
    );
    let boot = ctd::boot(env, &image, "demo").unwrap();
    let console = boot.console();
    let tail = || boot.tail(60);
    let output: Vec<&str> = console
        .lines()
        .filter_map(|l| {
            l.split_once("demo: container output: ")
                .map(|(_, r)| r.trim())
        })
        .collect();
    // (what, expected container output line)
    let expected = [
        ("hello line", "hello from a container under containerd"),
        ("no_new_privs", "NoNewPrivs: 1"),
        ("seccomp filter mode", "Seccomp: 2"),
    ];
    for (what, line) in expected {
        assert!(
            output.contains(&line),
            "no {what} ({line:?}) in the container's output {output:?}\n{}",
            tail()
        );
    }
    assert!(
        output.iter().any(|l| l.starts_with("CapEff:")),
        "no CapEff line in {output:?}\n{}",
        tail()
    );
    assert!(
        console.contains("demo: success"),
        "the demo did not succeed\n{}",
        tail()
    );
    assert!(
        console.contains("rampart-init: poweroff"),
        "the guest did not power off by itself\n{}",
        tail()
    );
    assert!(
        boot.output.status.success(),
        "rampart-image boot exited with {}\n{}",
        boot.output.status,
        tail()
    );
}
