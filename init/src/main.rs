//! rampart-init entry point: the PID 1 of a rampart image (see the library's `boot` module).

fn main() {
    rampart_init::log::install();
    // `rampart-init audit [--json]`: the compliance self-check (never taken as PID 1).
    if let Some(code) = rampart_init::audit::cli::run_if_asked() {
        std::process::exit(code);
    }
    rampart_init::boot::run()
}
