//! The connections tonic serves: accepted here, capped, given a deadline to become HTTP/2.
//!
//! Without this, a TCP connection that never sends a byte stays open for ever and a few
//! thousand of them exhaust the process's file descriptors. So every connection gets
//! `handshake_timeout` to complete its TLS handshake (when TLS is on) and send the HTTP/2
//! client preface and SETTINGS frame; only then is it handed to tonic. `max_connections` counts every open
//! connection, handshaking or not: past it new ones are closed at once and established RPCs
//! go on.
//!
//! TLS is terminated here, not by tonic, so that the certificate, key and client CA can be
//! swapped while serving: each handshake takes the configuration current at its start.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::tls;

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// Each setting is 6 bytes and there are a handful of kinds; a longer SETTINGS frame is hostile.
const MAX_SETTINGS_PAYLOAD: usize = 6 * 64;
/// Connections that finished their handshake, waiting for tonic to take them.
const READY_QUEUE: usize = 64;

/// How connections are accepted.
pub struct Acceptor {
    /// The TLS configuration, swapped when its files change; None: plaintext.
    pub tls: Option<Arc<ArcSwap<ServerConfig>>>,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

/// What tonic puts in every request's extensions about its connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The principal of the verified client certificate (mTLS), see [`tls::principal_of`].
    pub certificate: Option<String>,
}

/// Accepts on `listener` until the returned stream is dropped (tonic drops it when it stops).
pub fn incoming(
    listener: TcpListener,
    acceptor: Acceptor,
) -> ReceiverStream<io::Result<Connection>> {
    let (ready, receiver) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept(listener, Arc::new(acceptor), ready));
    ReceiverStream::new(receiver)
}

async fn accept(
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
    ready: mpsc::Sender<io::Result<Connection>>,
) {
    let slots = Arc::new(Semaphore::new(acceptor.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: wait for some to close instead of spinning.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(peer = %addr, limit = acceptor.max_connections, "connection refused: --max-connections reached");
            drop(stream);
            continue;
        };
        let (acceptor, ready) = (Arc::clone(&acceptor), ready.clone());
        tokio::spawn(async move {
            let deadline = acceptor.handshake_timeout;
            match tokio::time::timeout(deadline, handshake(stream, addr, &acceptor, slot)).await {
                Ok(Ok(connection)) => {
                    let _ = ready.send(Ok(connection)).await;
                }
                Ok(Err(error)) => tracing::debug!(peer = %addr, %error, "handshake failed"),
                Err(_) => tracing::debug!(peer = %addr, ?deadline, "handshake timed out"),
            }
        });
    }
}

async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    acceptor: &Acceptor,
    slot: OwnedSemaphorePermit,
) -> io::Result<Connection> {
    let _ = stream.set_nodelay(true);
    let mut peer = Peer {
        addr: Some(addr),
        certificate: None,
    };
    let mut io = match &acceptor.tls {
        None => Io::Plain(stream),
        Some(config) => {
            let tls = TlsAcceptor::from(config.load_full()).accept(stream).await?;
            peer.certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(tls::principal_of);
            Io::Tls(Box::new(tls))
        }
    };
    let replay = read_preface(&mut io).await?;
    Ok(Connection {
        io,
        replay,
        replayed: 0,
        peer,
        _slot: slot,
    })
}

/// Reads the client's preface: the magic string, then the frame header and payload of its
/// SETTINGS frame (RFC 9113 §3.4), which is all the server needs to finish the HTTP/2
/// handshake. Returns the bytes read, to be replayed to tonic.
async fn read_preface(io: &mut Io) -> io::Result<Vec<u8>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut head = [0u8; PREFACE.len() + FRAME_HEADER];
    io.read_exact(&mut head).await?;
    if &head[..PREFACE.len()] != PREFACE {
        return Err(invalid("not an HTTP/2 client preface"));
    }
    let frame = &head[PREFACE.len()..];
    let length = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) as usize;
    let settings = frame[3] == 0x4 && frame[4] & 0x1 == 0 && frame[5..9] == [0, 0, 0, 0];
    if !settings || !length.is_multiple_of(6) || length > MAX_SETTINGS_PAYLOAD {
        return Err(invalid("the preface is not followed by a SETTINGS frame"));
    }
    let mut bytes = head.to_vec();
    bytes.resize(head.len() + length, 0);
    io.read_exact(&mut bytes[head.len()..]).await?;
    Ok(bytes)
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection past its handshake. The preface read to check it is replayed to tonic first.
pub struct Connection {
    io: Io,
    /// The preface as read, handed to the reader first.
    replay: Vec<u8>,
    replayed: usize,
    peer: Peer,
    /// Frees the connection's place under --max-connections when it closes.
    _slot: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
