//! rampart-runc entry point.
fn main() {
    eprintln!("rampart-runc: not implemented yet");
    std::process::exit(1);
}
