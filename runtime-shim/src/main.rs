//! rampart-runc: the OCI runtime containerd calls as runc. It holds each container to the
//! host's `[container_policy]` and then execs the real runc with the same arguments.

use std::ffi::OsString;

fn main() {
    if let Some(level) = std::env::var_os(rampart_runc::ENV_TRACE)
        .and_then(|l| l.into_string().ok())
        .and_then(|l| l.parse::<tracing::Level>().ok())
    {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let settings = rampart_runc::Settings::from_env();
    match rampart_runc::run(&args, &settings) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("rampart-runc: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
