//! `metrocloud gateway`: devices' readings in over MQTT and HTTP.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::Config;
use crate::gateway::{self, Gateway, GatewayError};

fn cli_error(e: GatewayError) -> CliError {
    if e.is_configuration() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failed(e.to_string())
    }
}

/// Serves devices until Ctrl-C, with a status line every 5 s and a summary at the end.
pub(crate) async fn run(config: Config, shutdown: CancellationToken) -> Result<(), CliError> {
    let gateway = Gateway::bind(&config).await.map_err(cli_error)?;
    serve(gateway, config, shutdown).await
}

/// The gateway beside `metrocloud run` (METROCLOUD_GATEWAY=on): bound now, so
/// that a port in use or a missing credentials file stops the run before it
/// starts; served on a task of its own until `shutdown`.
pub(crate) async fn beside_run(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<Result<(), CliError>>>, CliError> {
    if !config.gateway.in_run {
        return Ok(None);
    }
    let gateway = Gateway::bind(config).await.map_err(cli_error)?;
    Ok(Some(tokio::spawn(serve(gateway, config.clone(), shutdown))))
}

async fn serve(
    gateway: Gateway,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    println!(
        "gateway: MQTT on {}, HTTP on {}/api/v1/readings, buffer in {}",
        gateway.mqtt_addr,
        gateway.http_addr,
        gateway::spool_dir(&config).display()
    );
    let stats = Arc::clone(&gateway.stats);
    let buffer = gateway.buffer();
    let status_stop = shutdown.child_token();
    let status =
        gateway::spawn_status(Arc::clone(&stats), Arc::clone(&buffer), status_stop.clone());
    let outcome = gateway.run(&config, shutdown).await;
    status_stop.cancel();
    let _ = status.await;
    let (waiting, _) = buffer.depth();
    println!(
        "gateway summary: accepted {} readings, refused {}, forwarded {}, dead letters {}, {} records left in the buffer (forwarded at the next start)",
        stats.accepted.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.forwarded.load(Ordering::Relaxed),
        stats.dead_letters.load(Ordering::Relaxed),
        waiting
    );
    outcome.map_err(cli_error)
}
