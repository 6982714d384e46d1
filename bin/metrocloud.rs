//! `metrocloud`: the command line of the MetroCloud pipeline.

fn main() -> std::process::ExitCode {
    metrocloud::cli::main()
}
