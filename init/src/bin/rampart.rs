//! rampart: the operator's CLI, a client of PID 1's control socket (logic in
//! `rampart_init::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = rampart_init::cli::main();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
