//! The `nemoclaw-build` binary: everything is in `cli` (parsing, printing, exit codes)
//! and the library.
mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
