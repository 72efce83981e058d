//! `cairn`: the command-line front end. Each verb lives in `cmd/<verb>.rs`
//! and turns flags into one library call; nothing here decides anything
//! about the repository.

mod args;
mod cmd;
mod ctx;
mod exit;
mod malloc;
mod output;

use clap::Parser;

fn main() {
    malloc::fix_threshold();
    let args = args::Cli::parse();
    let code = match cmd::run(args) {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    };
    std::process::exit(code);
}
