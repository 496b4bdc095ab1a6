//! rampart-metrics: the Prometheus endpoint of `[metrics]`, run by rampart-init as a
//! supervised service (logic in `rampart_init::metrics`).

use std::process::ExitCode;

fn main() -> ExitCode {
    rampart_init::logfwd::init_logging("rampart-metrics");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result =
        rampart_init::metrics::parse_args(&args).and_then(|opts| rampart_init::metrics::run(&opts));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-metrics: error: {e}");
            ExitCode::from(1)
        }
    }
}
