//! The device gateway's settings (`METROCLOUD_GATEWAY_*`), declared in the
//! table like every other and gathered here for the gateway to take whole.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where the gateway listens, who may connect, and its disk buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// `METROCLOUD_GATEWAY_MQTT_ADDR`: the MQTT listener.
    pub mqtt_addr: SocketAddr,
    /// `METROCLOUD_GATEWAY_HTTP_ADDR`: the HTTP listener.
    pub http_addr: SocketAddr,
    /// `METROCLOUD_GATEWAY_CREDENTIALS`: the devices' credentials file; unset,
    /// devices connect anonymously (loopback only).
    pub credentials: Option<PathBuf>,
    /// `METROCLOUD_GATEWAY_SPOOL_DIR`: the disk buffer; unset, `spool` under
    /// `METROCLOUD_DATA_DIR`.
    pub spool_dir: Option<PathBuf>,
    /// `METROCLOUD_GATEWAY_SPOOL_MAX_MB`: the buffer's bound.
    pub spool_max_bytes: u64,
    /// `METROCLOUD_GATEWAY_FSYNC_MS`: a wait before each fsync, to gather more appends.
    pub fsync_interval: Duration,
    /// `METROCLOUD_GATEWAY_FORWARD_SPACING_MS`: shortest time between two
    /// produce requests of the forwarder to one broker.
    pub forward_spacing: Duration,
    /// `METROCLOUD_GATEWAY`: whether `metrocloud run` runs the gateway too.
    pub in_run: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            mqtt_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)),
            http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8088)),
            credentials: None,
            spool_dir: None,
            spool_max_bytes: 1024 * 1024 * 1024,
            fsync_interval: Duration::ZERO,
            forward_spacing: Duration::from_millis(200),
            in_run: false,
        }
    }
}
