//! rampart-dhcp: the DHCPv4 client of one interface, run by rampart-init as a supervised
//! service (logic in `rampart_init::dhcp`).

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = rampart_init::dhcp::parse_args(&args).and_then(|opts| {
        rampart_init::dhcp::run(&opts, Path::new(rampart_init::network::SYS_CLASS_NET))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-dhcp: error: {e}");
            ExitCode::from(1)
        }
    }
}
