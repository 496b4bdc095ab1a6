//! rampart-mount: the `mount` and `umount` kubelet executes (logic in
//! `rampart_init::kubemount`). Exits 0 when done, 1 when the syscall failed, 2 on arguments
//! it does not support.

use std::process::ExitCode;

use rampart_init::kubemount::{self, KubeMountError};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match kubemount::run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(if matches!(e, KubeMountError::Usage(_)) {
                2
            } else {
                1
            })
        }
    }
}
