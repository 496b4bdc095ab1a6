//! rampart-events: containerd's container and task events and rampart-runc's audit log as
//! `@rampart-event` and `@rampart-audit` lines for PID 1, run by rampart-init as a supervised
//! service (logic in `rampart_init::ctrevents`).

use std::process::ExitCode;

fn main() -> ExitCode {
    rampart_init::logfwd::init_logging("rampart-events");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = rampart_init::ctrevents::parse_args(&args)
        .and_then(|opts| rampart_init::ctrevents::run(&opts));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-events: error: {e}");
            ExitCode::from(1)
        }
    }
}
