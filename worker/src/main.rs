//! `vephys-worker`: the virtual electrode. Lists a model's layers, measures how every filter of
//! a layer responds to images, and synthesizes the image that drives each filter hardest.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
