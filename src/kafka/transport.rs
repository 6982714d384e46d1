//! The byte stream under every connection this layer opens: TCP, with
//! TLS around it when the security protocol asks for it.
//!
//! Opening one is the same for the admin client, the group coordinator, the
//! fetchers and the producer's pipelined connections, so it is done here
//! once: connect within the timeout, set TCP_NODELAY (requests are whole
//! frames; waiting to fill a segment only adds latency), and shake hands
//! with TLS. SASL comes after, as Kafka requests
//! ([`super::admin::BrokerConnection`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::security::Security;

/// A connection's bytes: plain TCP or TLS over it.
#[derive(Debug)]
pub enum KafkaStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP connection could not be made.
    #[error("{0}")]
    Connect(io::Error),
    /// Nothing answered within the timeout.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed: a certificate from another authority, a
    /// name that does not match, or a listener that does not speak TLS.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Opens a stream to `address` as `security` says, within `timeout`.
pub async fn open(
    address: &str,
    security: &Security,
    timeout: Duration,
) -> Result<KafkaStream, TransportError> {
    let connect = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(TransportError::Connect)?;
        tcp.set_nodelay(true).ok();
        wrap(tcp, address, security).await
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| TransportError::Timeout(timeout))?
}

#[cfg(feature = "tls")]
async fn wrap(
    tcp: TcpStream,
    address: &str,
    security: &Security,
) -> Result<KafkaStream, TransportError> {
    let Some(config) = security
        .tls
        .as_ref()
        .filter(|_| security.protocol.uses_tls())
    else {
        return Ok(KafkaStream::Plain(tcp));
    };
    let name = super::tls::server_name(address).map_err(TransportError::Tls)?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config));
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| TransportError::Tls(super::tls::explain(&e)))?;
    Ok(KafkaStream::Tls(Box::new(stream)))
}

#[cfg(not(feature = "tls"))]
async fn wrap(
    tcp: TcpStream,
    _address: &str,
    _security: &Security,
) -> Result<KafkaStream, TransportError> {
    Ok(KafkaStream::Plain(tcp))
}

impl AsyncRead for KafkaStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            KafkaStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            KafkaStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for KafkaStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            KafkaStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            KafkaStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            KafkaStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            KafkaStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            KafkaStream::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            KafkaStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            KafkaStream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            KafkaStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            KafkaStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            KafkaStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The read half of a [`KafkaStream`].
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a [`KafkaStream`].
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl KafkaStream {
    /// Splits the stream for a reader task and a writer task. Plain TCP
    /// splits without a lock; TLS shares one session between the halves.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            KafkaStream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                (Box::new(read), Box::new(write))
            }
            #[cfg(feature = "tls")]
            KafkaStream::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (Box::new(read), Box::new(write))
            }
        }
    }
}
