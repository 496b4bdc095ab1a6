//! rampart-logd: forwards PID 1's log ring to the collectors of `[logs] forward`, run by
//! rampart-init as a supervised service (logic in `rampart_init::logfwd`).

use std::process::ExitCode;

fn main() -> ExitCode {
    rampart_init::logfwd::init_logging("rampart-logd");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result =
        rampart_init::logfwd::parse_args(&args).and_then(|opts| rampart_init::logfwd::run(&opts));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-logd: error: {e}");
            ExitCode::from(1)
        }
    }
}
