//! The `skybridge` binary: one executable for every node role and the operator's tools.
//! See `skybridge --help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

// Every tunnelled connection allocates and frees buffers and stream state on each hop; glibc's
// allocator spent about a tenth of a relay's CPU on that in the new-connections benchmark
// (`_int_malloc`, `malloc_consolidate`, `free`). Built without transparent huge pages (the
// workspace Cargo.toml says why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // Nodes log what they do (info) unless told otherwise; tools stay quiet.
    args.init_logging();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One clear line: the error and its causes, joined.
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
