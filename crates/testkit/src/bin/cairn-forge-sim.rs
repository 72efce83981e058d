//! The test forge as a process, for `bench/git.sh`: serves every bare
//! repository under `ROOT/OWNER` as an organisation on a GitHub-shaped
//! API and over git's smart HTTP, prints its URL, and runs until killed.
//!
//!     cairn-forge-sim ROOT OWNER

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: cairn-forge-sim ROOT OWNER");
        std::process::exit(2);
    }
    let forge = cairn_testkit::forge::Forge::start(std::path::Path::new(&args[1]), &args[2], true);
    let n = forge.add_existing();
    println!("{} {n}", forge.url);
    loop {
        std::thread::park();
    }
}
