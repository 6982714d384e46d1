//! The device gateway: real sensors' readings in over MQTT and HTTP, through
//! a disk buffer, into the sensor topic (`metrocloud gateway`).
//!
//! A device is acknowledged (MQTT PUBACK, HTTP 202) once its reading is
//! fsynced in the buffer, not once Kafka has it: the uplink of an edge box
//! comes and goes, and a reading acknowledged must survive that, a crash of
//! the gateway, and a torn write. The forwarder sends the buffer's records
//! to Kafka in order (`acks=all`, keyed by device id) and the buffer lets go
//! of them only once Kafka acknowledged them. While Kafka is away the buffer
//! grows; when it is full, devices are pushed back (no PUBACK, HTTP 503),
//! and nothing taken is dropped.
//!
//! Layers: [`credentials`] (who may send), [`intake`] (checks and the door
//! into the buffer), [`buffer`] (the spool and its group commit), the two
//! listeners, and [`forward`] (buffer to Kafka).

pub mod buffer;
pub mod credentials;
pub mod forward;
pub mod http;
pub mod intake;
pub mod mqtt;
pub mod timings;
mod view;

pub use view::{GatewaySnapshot, GatewayView};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::idle::{IDLE_LIMIT, IdleLimit, Peer};
use crate::kafka::producer::ProducerError;
use crate::kafka::topics::TopicError;
use crate::spool::SpoolError;
use buffer::Buffer;
use credentials::{Credentials, CredentialsError};
use intake::{GatewayStats, Intake};

/// Why the gateway cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Listening beyond loopback without a credentials file (exit status 2).
    #[error(
        "{addr} is not a loopback address: devices there must authenticate, so \
         METROCLOUD_GATEWAY_CREDENTIALS must name a credentials file"
    )]
    Unprotected {
        /// The listener's address.
        addr: SocketAddr,
    },
    /// The credentials file cannot be used (exit status 2).
    #[error("METROCLOUD_GATEWAY_CREDENTIALS: {0}")]
    Credentials(#[from] CredentialsError),
    /// A listener cannot bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The disk buffer failed.
    #[error("the disk buffer: {0}")]
    Buffer(#[from] SpoolError),
    /// Kafka refused the topics (credentials, rights).
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// Kafka refused the producer.
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

impl GatewayError {
    /// Whether the settings are at fault (exit status 2) rather than the work.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            GatewayError::Unprotected { .. } | GatewayError::Credentials(_)
        )
    }
}

/// The gateway's listeners, bound, and what runs behind them.
pub struct Gateway {
    /// Where MQTT clients connect.
    pub mqtt_addr: SocketAddr,
    /// Where HTTP clients post.
    pub http_addr: SocketAddr,
    /// The counters.
    pub stats: Arc<GatewayStats>,
    buffer: Arc<Buffer>,
    mqtt: TcpListener,
    http: TcpListener,
    intake: Arc<Intake>,
    fsync_interval: Duration,
}

/// The spool folder: `METROCLOUD_GATEWAY_SPOOL_DIR`, else `spool` under the data folder.
pub fn spool_dir(config: &Config) -> PathBuf {
    config
        .gateway
        .spool_dir
        .clone()
        .unwrap_or_else(|| config.store.data_dir.join("spool"))
}

impl Gateway {
    /// Checks the settings, opens the buffer and binds both listeners;
    /// nothing is accepted before [`Gateway::run`].
    pub async fn bind(config: &Config) -> Result<Gateway, GatewayError> {
        let settings = &config.gateway;
        let credentials = match &settings.credentials {
            Some(path) => Some(Credentials::load(path)?),
            None => {
                for addr in [settings.mqtt_addr, settings.http_addr] {
                    if !addr.ip().is_loopback() {
                        return Err(GatewayError::Unprotected { addr });
                    }
                }
                None
            }
        };
        let dir = spool_dir(config);
        let buffer = Buffer::open(&dir, settings.spool_max_bytes)?;
        let (waiting, bytes) = buffer.depth();
        if waiting > 0 {
            tracing::info!(
                "{waiting} records ({bytes} bytes) wait in {} from before: they are forwarded first",
                dir.display()
            );
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Listen { addr, source })
        };
        let mqtt = bind(settings.mqtt_addr).await?;
        let http = bind(settings.http_addr).await?;
        let stats = Arc::new(GatewayStats::default());
        let intake = Arc::new(Intake::new(
            Arc::clone(&buffer),
            credentials,
            Arc::clone(&stats),
        ));
        Ok(Gateway {
            mqtt_addr: mqtt.local_addr().map_err(|source| GatewayError::Listen {
                addr: settings.mqtt_addr,
                source,
            })?,
            http_addr: http.local_addr().map_err(|source| GatewayError::Listen {
                addr: settings.http_addr,
                source,
            })?,
            stats,
            buffer,
            mqtt,
            http,
            intake,
            fsync_interval: settings.fsync_interval,
        })
    }

    /// Serves devices and forwards to Kafka until `shutdown`. Stopping
    /// closes the listeners, lets each connection send the answers it owes,
    /// makes the last appends durable, and gives Kafka one request timeout
    /// (`KAFKA_PRODUCER_REQUEST_TIMEOUT_MS`) to acknowledge what is in
    /// flight; what is not acknowledged stays in the buffer for the next
    /// start.
    pub async fn run(
        self,
        config: &Config,
        shutdown: CancellationToken,
    ) -> Result<(), GatewayError> {
        let listeners = shutdown.child_token();
        let disk = CancellationToken::new();
        let commit =
            tokio::spawn(Arc::clone(&self.buffer).commit(self.fsync_interval, disk.clone()));
        let mqtt = tokio::spawn(mqtt::serve(
            self.mqtt,
            Arc::clone(&self.intake),
            listeners.clone(),
        ));
        let http = {
            let app = http::router(Arc::clone(&self.intake))
                .into_make_service_with_connect_info::<Peer>();
            let stop = listeners.clone();
            tokio::spawn(async move {
                axum::serve(IdleLimit::new(self.http, IDLE_LIMIT), app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            })
        };
        let forwarding = forward::forward(
            config,
            Arc::clone(&self.buffer),
            Arc::clone(&self.stats),
            shutdown.clone(),
        );
        let mut commit = commit;
        let (forwarded, committed) = tokio::select! {
            result = forwarding => (result, None),
            // The group commit ends early only when the disk failed.
            committed = &mut commit => (Ok(()), Some(committed)),
        };
        // The forwarder stops on shutdown, or on an error: the listeners stop too.
        listeners.cancel();
        let _ = mqtt.await;
        if let Ok(Err(e)) = http.await {
            tracing::warn!("HTTP listener: {e}");
        }
        let committed = match committed {
            Some(committed) => committed,
            None => {
                disk.cancel();
                commit.await
            }
        };
        forwarded?;
        committed.expect("the group commit does not panic")?;
        Ok(())
    }
}

impl Gateway {
    /// A view of the counters and the buffer, for status lines, `/metrics`
    /// and the console while the gateway runs.
    pub fn view(&self) -> GatewayView {
        GatewayView::new(Arc::clone(&self.stats), Arc::clone(&self.buffer))
    }
}

/// Prints the status line every 5 s until `shutdown`.
pub fn spawn_status(view: GatewayView, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut previous = GatewaySnapshot::default();
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            let (text, now) = view.status_line(&previous, last.elapsed().as_secs_f64());
            last = Instant::now();
            previous = now;
            println!("{text}");
        }
    })
}
