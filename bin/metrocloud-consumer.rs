//! `metrocloud-consumer`: Kafka into validation, alerts and dead letters, configured from the environment.

fn main() -> std::process::ExitCode {
    metrocloud::cli::consumer_main()
}
