//! TCP_NODELAY on the connections rskafka opens (the consumer's fetches),
//! which it leaves without it.
//!
//! rskafka sends a request as two writes, the 4-byte frame length and then the
//! frame, on a socket that keeps Nagle's algorithm on. Nagle holds the second
//! write until the first is acknowledged, and the broker delays that
//! acknowledgement (up to 40 ms on Linux) hoping to piggyback it on a
//! response. Under a steady load this put 70 ms into every produce request:
//! end-to-end latency at 10,000 readings/s went from a 73 ms median to
//! 7 ms once Nagle was off. Kafka's Java client turns Nagle off on every
//! connection; our producer and admin connections set it when they connect.
//!
//! rskafka 0.6 opens its sockets with a plain `TcpStream::connect` and its
//! `ClientBuilder` offers no hook on them (only a SOCKS5 proxy, TLS and SASL),
//! so short of a fork of rskafka this module sets TCP_NODELAY on
//! every socket of the process: at once after our layer opens connections
//! ([`sweep`]), and every [`SWEEP_INTERVAL`] from a background thread for the
//! connections rskafka opens on its own (a leader's, a reconnect). Every TCP
//! socket this process has is a Kafka connection; on anything else that is not
//! a TCP socket the option is refused and nothing changes.

use std::os::fd::BorrowedFd;
use std::sync::Once;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt::TcpNoDelay};

/// How often the background thread looks for new sockets.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(200);

/// Sets TCP_NODELAY on every TCP socket of this process; returns how many took it.
pub fn sweep() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the borrow lasts for one setsockopt call. Should the
        // descriptor be closed meanwhile, the call fails with EBADF; should
        // its number be reused, the option is set on that descriptor instead,
        // which for a TCP socket of this process is what is wanted and for
        // anything else is refused.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if setsockopt(&fd, TcpNoDelay, &true).is_ok() {
            set += 1;
        }
    }
    set
}

/// Starts the background sweep once per process.
pub fn keep_sweeping() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("tcp-nodelay".to_string())
            .spawn(|| {
                loop {
                    sweep();
                    std::thread::sleep(SWEEP_INTERVAL);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the TCP_NODELAY thread ({e}); requests may wait on Nagle's algorithm"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::getsockopt;

    #[test]
    fn a_tcp_connection_opened_elsewhere_gets_nodelay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        assert!(!client.nodelay().unwrap(), "sockets start with Nagle on");
        assert!(sweep() >= 2, "the client and server ends at least");
        assert!(client.nodelay().unwrap());
        assert!(getsockopt(&client, TcpNoDelay).unwrap());
    }
}
