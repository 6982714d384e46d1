//! `metrocloud gateway`: devices' readings in over MQTT and HTTP.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::Config;
use crate::gateway::{self, Gateway, GatewayError, GatewayView};

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
) -> Result<Option<(JoinHandle<Result<(), CliError>>, GatewayView)>, CliError> {
    if !config.gateway.in_run {
        return Ok(None);
    }
    let gateway = Gateway::bind(config).await.map_err(cli_error)?;
    let view = gateway.view();
    Ok(Some((
        tokio::spawn(serve(gateway, config.clone(), shutdown)),
        view,
    )))
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
    let view = gateway.view();
    let status_stop = shutdown.child_token();
    let status = gateway::spawn_status(view.clone(), status_stop.clone());
    let outcome = gateway.run(&config, shutdown).await;
    status_stop.cancel();
    let _ = status.await;
    let s = view.snapshot();
    println!(
        "gateway summary: accepted {} readings, refused {}, forwarded {}, dead letters {}, {} records left in the buffer (forwarded at the next start)",
        s.accepted, s.refused, s.forwarded, s.dead_letters, s.buffered_records
    );
    outcome.map_err(cli_error)
}
