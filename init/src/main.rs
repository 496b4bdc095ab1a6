//! rampart-init entry point: the PID 1 of a rampart image (see the library's `boot` module).

fn main() {
    rampart_init::log::install();
    rampart_init::boot::run()
}
