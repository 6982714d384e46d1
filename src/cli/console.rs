//! `metrocloud console`, and the console of `metrocloud run`.

use std::net::SocketAddr;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::Config;
use crate::console::{self, ConsoleSettings, PipelineHandles, RunningConsole};

/// Where the console listens and the token it asks for.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConsoleArgs {
    /// Address the console listens on; anything but loopback needs a token
    /// [default: $METROCLOUD_CONSOLE_ADDR or 127.0.0.1:8080].
    #[arg(long = "console-addr", value_name = "ADDR")]
    addr: Option<SocketAddr>,
}

impl ConsoleArgs {
    fn settings(&self, config: &Config) -> Result<ConsoleSettings, CliError> {
        // The token comes from the environment only (METROCLOUD_CONSOLE_TOKEN),
        // so that it never shows in the process list.
        let addr = self.addr.unwrap_or(config.console_addr);
        let mut settings = ConsoleSettings::new(addr, config.console_token.clone())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        settings.tls = config
            .console_tls_cert
            .clone()
            .zip(config.console_tls_key.clone());
        Ok(settings)
    }

    /// Checks the settings before anything else starts.
    pub(crate) fn check(&self, config: &Config) -> Result<(), CliError> {
        self.settings(config).map(|_| ())
    }

    /// Starts the console and prints its address.
    pub(crate) async fn start(
        &self,
        config: &Config,
        pipeline: PipelineHandles,
        shutdown: CancellationToken,
    ) -> Result<RunningConsole, CliError> {
        let settings = self.settings(config)?;
        let protected = settings.token.is_some();
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let running = console::start(config, settings, pipeline, shutdown)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        println!(
            "console: {scheme}://{}/{}",
            running.addr,
            if protected { " (token required)" } else { "" }
        );
        Ok(running)
    }
}

/// `metrocloud console`: serves until shut down.
pub(crate) async fn run(
    args: ConsoleArgs,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let running = args
        .start(&config, PipelineHandles::default(), shutdown)
        .await?;
    running
        .task
        .await
        .map_err(|e| CliError::Failed(format!("console task failed: {e}")))
}
