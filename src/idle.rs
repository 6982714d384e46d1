//! HTTP connections that close when nothing moves on them.
//!
//! `axum::serve` gives hyper no timer, so hyper's own limit on reading a
//! request's head never fires: a client that opens a connection and sends
//! nothing, or stops halfway through a request or a body, holds its task and
//! socket for ever. The console and the gateway's HTTP door take their
//! connections through [`IdleLimit`] instead, which fails a read or a write
//! once nothing was read or written for [`IDLE_LIMIT`]. A browser's event
//! stream is not idle: the console sends it a keep-alive every 15 s.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a connection may stay silent both ways.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// A listener whose connections are [`Idle`]-limited.
pub struct IdleLimit<L> {
    inner: L,
    limit: Duration,
}

impl<L> IdleLimit<L> {
    /// `inner`'s connections, each closed after `limit` without traffic.
    pub fn new(inner: L, limit: Duration) -> Self {
        IdleLimit { inner, limit }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for IdleLimit<L> {
    type Io = Idle<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (Idle::new(io, self.limit), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The peer's address, for handlers behind an [`IdleLimit`] on TCP (axum
/// gives `SocketAddr` only for its own listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, IdleLimit<tokio::net::TcpListener>>,
    > for Peer
{
    fn connect_info(
        stream: axum::serve::IncomingStream<'_, IdleLimit<tokio::net::TcpListener>>,
    ) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A connection that fails with [`io::ErrorKind::TimedOut`] once it has
/// neither read nor written anything for its limit.
pub struct Idle<S> {
    inner: S,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Idle<S> {
    /// `inner`, limited to `limit` of silence.
    pub fn new(inner: S, limit: Duration) -> Self {
        Idle {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// Something moved: the silence starts again.
    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.limit);
    }

    /// What a read or write of the connection gave: traffic restarts the
    /// silence; waiting on the peer fails once the silence is too long.
    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending => self.waiting(cx),
        }
    }

    /// Waiting on the peer: an error once the silence is too long.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing read or written for {} s", self.limit.as_secs()),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.after(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.waiting(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_sends_nothing_is_cut_off_after_the_limit() {
        let (ours, _peer) = tokio::io::duplex(1024);
        let mut ours = Idle::new(ours, LIMIT);
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let error = ours.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_sending_is_never_cut_off() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut ours = Idle::new(ours, LIMIT);
        for round in 0..5u8 {
            tokio::time::sleep(LIMIT / 2).await;
            peer.write_all(&[round]).await.unwrap();
            let mut byte = [0u8; 1];
            ours.read_exact(&mut byte).await.unwrap();
            assert_eq!(byte[0], round);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn what_we_write_counts_as_traffic_while_a_read_waits() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let (mut reading, mut writing) = tokio::io::split(Idle::new(ours, LIMIT));
        // An event stream: a read waits for the peer's next request while
        // events go out every half limit, for three limits.
        let request = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            reading.read_exact(&mut byte).await.map(|_| byte[0])
        });
        for _ in 0..6 {
            tokio::time::sleep(LIMIT / 2).await;
            writing.write_all(b"event").await.unwrap();
            let mut event = [0u8; 5];
            peer.read_exact(&mut event).await.unwrap();
        }
        peer.write_all(b"x").await.unwrap();
        assert_eq!(request.await.unwrap().unwrap(), b'x');
    }
}
