//! rampart-pause: the process of a pod's sandbox container, packed by `rampart-image` as the
//! CRI pause image (logic in `rampart_init::pause`). Exits 0 on `SIGTERM` or `SIGINT`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match rampart_init::pause::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-pause: error: {e}");
            ExitCode::from(1)
        }
    }
}
