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
    /// Address the console listens on; anything but loopback needs a token.
    #[arg(long = "console-addr", env = "METROCLOUD_CONSOLE_ADDR", default_value = console::DEFAULT_ADDR, value_name = "ADDR")]
    addr: SocketAddr,
}

impl ConsoleArgs {
    fn settings(&self) -> Result<ConsoleSettings, CliError> {
        // The token is read from the environment only, so that it never shows
        // in the process list.
        let token = std::env::var("METROCLOUD_CONSOLE_TOKEN").ok();
        ConsoleSettings::new(self.addr, token).map_err(|e| CliError::Usage(e.to_string()))
    }

    /// Checks the settings before anything else starts.
    pub(crate) fn check(&self) -> Result<(), CliError> {
        self.settings().map(|_| ())
    }

    /// Starts the console and prints its address.
    pub(crate) async fn start(
        &self,
        config: &Config,
        pipeline: PipelineHandles,
        shutdown: CancellationToken,
    ) -> Result<RunningConsole, CliError> {
        let settings = self.settings()?;
        let protected = settings.token.is_some();
        let running = console::start(config, settings, pipeline, shutdown)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        println!(
            "console: http://{}/{}",
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
