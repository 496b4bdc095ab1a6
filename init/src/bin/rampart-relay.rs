//! rampart-relay: carries the control protocol between the host channel (a virtio-serial
//! port) and PID 1's control socket, as a supervised service in the guest (logic in
//! `rampart_init::relay`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = rampart_init::relay::parse_args(&args).and_then(|o| rampart_init::relay::run(&o));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ rampart_init::relay::RelayError::Usage { .. }) => {
            eprintln!("rampart-relay: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("rampart-relay: error: {e}");
            ExitCode::from(1)
        }
    }
}
