//! A broker's address as clients are given it.

use std::fmt;
use std::str::FromStr;

/// A broker's `host:port`, checked for shape (not resolved).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddress {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for BrokerAddress {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (host, port) = s.rsplit_once(':').ok_or(())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        let port: u16 = port.parse().map_err(|_| ())?;
        if !host_ok || port == 0 {
            return Err(());
        }
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
