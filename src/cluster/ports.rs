//! Which ports the nodes listen on: the original design's fixed ports, or
//! free ones outside the kernel's ephemeral range.

use std::net::TcpListener;

use super::*;

/// Client port of node 1 by default; node N listens on this + N - 1 (the original design's 29092-29094).
pub const DEFAULT_CLIENT_PORT_BASE: u16 = 29092;
/// Controller port of node 1 by default; kept away from the client ports.
pub const DEFAULT_CONTROLLER_PORT_BASE: u16 = 29192;
/// A secure cluster's node listens for SASL_PLAINTEXT this far above its
/// client port when ports are fixed (29292-29294 by default).
pub const SASL_PORT_OFFSET: u16 = 200;

/// How the ports of a new cluster are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPlan {
    /// Node N gets `client_base + N - 1` and `controller_base + N - 1`.
    Fixed {
        /// Client port of node 1.
        client_base: u16,
        /// Controller port of node 1.
        controller_base: u16,
    },
    /// Any free ports (test clusters, which must not collide with a user's).
    Free,
}

impl Default for PortPlan {
    fn default() -> Self {
        PortPlan::Fixed {
            client_base: DEFAULT_CLIENT_PORT_BASE,
            controller_base: DEFAULT_CONTROLLER_PORT_BASE,
        }
    }
}

/// The ports of `count` nodes; a `secure` cluster's nodes get a SASL_PLAINTEXT port too.
pub(super) fn plan_nodes(
    count: usize,
    ports: PortPlan,
    secure: bool,
) -> Result<Vec<NodeSpec>, ClusterError> {
    match ports {
        PortPlan::Fixed {
            client_base,
            controller_base,
        } => (0..count)
            .map(|i| {
                let offset = u16::try_from(i).unwrap_or(u16::MAX);
                let port = |base: u16| {
                    base.checked_add(offset).ok_or_else(|| {
                        ClusterError::Mismatch(format!(
                            "port base {base} leaves no room for {count} nodes"
                        ))
                    })
                };
                Ok(NodeSpec {
                    id: i as i32 + 1,
                    client_port: port(client_base)?,
                    controller_port: Some(port(controller_base)?),
                    sasl_port: if secure {
                        Some(port(client_base.saturating_add(SASL_PORT_OFFSET))?)
                    } else {
                        None
                    },
                })
            })
            .collect(),
        PortPlan::Free => {
            let each = if secure { 3 } else { 2 };
            let ports = free_ports(count * each)?;
            Ok((0..count)
                .map(|i| NodeSpec {
                    id: i as i32 + 1,
                    client_port: ports[each * i],
                    controller_port: Some(ports[each * i + 1]),
                    sasl_port: secure.then(|| ports[each * i + 2]),
                })
                .collect())
        }
    }
}

/// The kernel's range of ports for the source end of outgoing connections.
pub(super) fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// `count` free ports outside the ephemeral range. A port inside it can be
/// taken, while its node is down, as the source port of some connection — even
/// of a connection to itself, which Linux makes when a client keeps connecting
/// to a local port nothing listens on — and the node could not start again.
pub(super) fn free_ports(count: usize) -> Result<Vec<u16>, ClusterError> {
    use rand::seq::SliceRandom;
    let (low, high) = ephemeral_range();
    let mut candidates: Vec<u16> = if low > 11_000 {
        (10_000..low).collect()
    } else {
        (high.saturating_add(1)..=u16::MAX).collect()
    };
    candidates.shuffle(&mut rand::rng());
    // Hold every listener until all ports are chosen, so none is picked twice.
    let mut held = Vec::with_capacity(count);
    for port in candidates {
        if held.len() == count {
            break;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    if held.len() < count {
        return Err(ClusterError::PortInUse {
            port: low,
            purpose: format!("{count} free ports outside the ephemeral range {low}-{high}"),
        });
    }
    Ok(held.into_iter().map(|(port, _)| port).collect())
}

pub(super) fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub(super) fn check_free(node: &NodeSpec) -> Result<(), ClusterError> {
    let ports = [
        (Some(node.client_port), "client"),
        (node.controller_port, "controller"),
        (node.sasl_port, "SASL_PLAINTEXT"),
    ];
    for (port, kind) in ports {
        if let Some(port) = port
            && !port_is_free(port)
        {
            return Err(ClusterError::PortInUse {
                port,
                purpose: format!("{kind} port of node {}", node.id),
            });
        }
    }
    Ok(())
}
