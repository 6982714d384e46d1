//! `metrocloud-producer`: simulated sensors into Kafka, configured from the environment.

fn main() -> std::process::ExitCode {
    metrocloud::cli::producer_main()
}
