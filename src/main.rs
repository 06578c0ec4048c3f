//! The `portcullis` binary: the command line, nothing else.

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
