//! One stream type for both sides: TCP or a Unix socket, chosen per connection.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected socket. Enum dispatch keeps the forwarding loop free of trait objects.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `host:port`, where a host starting with `/` is a directory holding PostgreSQL's
    /// `.s.PGSQL.<port>` socket (libpq's and PgBouncer's convention).
    pub async fn connect(host: &str, port: u16) -> io::Result<Self> {
        if host.starts_with('/') {
            let path = socket_path(Path::new(host), port);
            return Ok(Self::Unix(UnixStream::connect(path).await?));
        }
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self::Tcp(stream))
    }

    /// Non-blocking peek used to check an idle pooled connection: `Ok(true)` if the peer sent something or
    /// closed (either way it cannot be reused), `Ok(false)` if nothing is pending. Costs no syscall when the
    /// reactor has not seen the socket become readable.
    pub fn has_pending_input(&self) -> io::Result<bool> {
        let mut probe = [0u8; 1];
        let res = match self {
            Self::Tcp(s) => s.try_read(&mut probe),
            Self::Unix(s) => s.try_read(&mut probe),
        };
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ready once the socket has something to read (or is closed). Registers the task's waker in the
    /// socket's one reader slot: the waiting state is a few bytes, not a waiter-list entry (an idle
    /// client's task keeps it).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(s) => s.poll_read_ready(cx),
            Self::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Reads what is there without waiting (`WouldBlock` when nothing is).
    ///
    /// A read that leaves room in `buf` took everything the socket had: its readiness is cleared then, as
    /// tokio's own `poll_read` does, so the next wait sleeps until new data instead of spending a `recv`
    /// on `EAGAIN` first (one wasted system call per transaction otherwise). The read runs inside `try_io`
    /// so that what is cleared is the readiness seen before it: data that arrives after the `recv` is a
    /// newer readiness event, which that clearing leaves alone. (Clearing what is current after the read
    /// lost such an event: the client's socket held data that nobody was woken for.)
    pub fn try_read_buf(&self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        let room = buf.capacity() - buf.len();
        let mut got = 0;
        let mut read = || {
            let n = match self {
                Self::Tcp(s) => s.try_read_buf(buf),
                Self::Unix(s) => s.try_read_buf(buf),
            }?;
            got = n;
            if n > 0 && n < room {
                // Drained: try_io clears the readiness it saw when its closure reports WouldBlock.
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            } else {
                Ok(n)
            }
        };
        let res = match self {
            Self::Tcp(s) => s.try_io(tokio::io::Interest::READABLE, &mut read),
            Self::Unix(s) => s.try_io(tokio::io::Interest::READABLE, &mut read),
        };
        match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
            res => res,
        }
    }

    /// Best-effort write that never waits (used for a parting Terminate on a connection being dropped).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write(buf),
            Self::Unix(s) => s.try_write(buf),
        }
    }

    /// This end's TCP address (`None` for a Unix socket), for PgBouncer's `new connection to server (from …)`.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(s) => s.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }

    pub fn peer(&self) -> Peer {
        match self {
            Self::Tcp(s) => s.peer_addr().map_or(Peer::Unknown, Peer::Tcp),
            Self::Unix(_) => Peer::Unix,
        }
    }

    /// The local end of a TCP connection (`None` for a Unix socket).
    pub fn local(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(s) => s.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }

    /// The process id at the other end of a Unix socket, when the kernel says.
    pub fn peer_pid(&self) -> Option<u32> {
        match self {
            Self::Unix(s) => s
                .peer_cred()
                .ok()
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok()),
            Self::Tcp(_) => None,
        }
    }

    /// The user id of the process at the other end of a Unix socket (`None` for TCP, or when the kernel
    /// does not say).
    pub fn peer_uid(&self) -> Option<u32> {
        match self {
            Self::Unix(s) => s.peer_cred().ok().map(|c| c.uid()),
            Self::Tcp(_) => None,
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Self::Unix(_))
    }

    /// TCP keepalive as PgBouncer's tcp_keepalive/tcp_keepidle/tcp_keepintvl/tcp_keepcnt configure it.
    pub fn set_keepalive(&self, keepalive: &Keepalive) -> io::Result<()> {
        let Self::Tcp(s) = self else { return Ok(()) };
        let sock = socket2::SockRef::from(s);
        if !keepalive.enabled {
            return sock.set_keepalive(false);
        }
        let mut ka = socket2::TcpKeepalive::new();
        if let Some(idle) = keepalive.idle {
            ka = ka.with_time(idle);
        }
        if let Some(interval) = keepalive.interval {
            ka = ka.with_interval(interval);
        }
        if let Some(count) = keepalive.count {
            ka = ka.with_retries(count);
        }
        sock.set_tcp_keepalive(&ka)?;
        if let Some(t) = keepalive.user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        Ok(())
    }
}

/// A connected socket taken out of the runtime's reactor (a parked client's, see [`crate::client::park`]):
/// still non-blocking, watched by whoever registers its descriptor.
#[derive(Debug)]
pub enum StdStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    /// Deregisters the socket from the runtime's reactor (its registration is freed).
    pub fn into_std(self) -> io::Result<StdStream> {
        Ok(match self {
            Self::Tcp(s) => StdStream::Tcp(s.into_std()?),
            Self::Unix(s) => StdStream::Unix(s.into_std()?),
        })
    }
}

impl StdStream {
    /// Registers the socket with the runtime's reactor again (must run inside the runtime).
    pub fn into_tokio(self) -> io::Result<Stream> {
        Ok(match self {
            Self::Tcp(s) => Stream::Tcp(TcpStream::from_std(s)?),
            Self::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
        })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Keepalive settings for TCP sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keepalive {
    pub enabled: bool,
    pub idle: Option<Duration>,
    pub interval: Option<Duration>,
    pub count: Option<u32>,
    pub user_timeout: Option<Duration>,
}

/// A socket address in 20 bytes, where a `SocketAddr` takes 32: every client's record keeps two (its peer
/// and its local end). An IPv6 address's flow info and scope id are not kept: nothing shows or matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedAddr {
    ip: [u8; 16],
    port: u16,
    family: Family,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl From<SocketAddr> for PackedAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                Self {
                    ip,
                    port: a.port(),
                    family: Family::V4,
                }
            }
            SocketAddr::V6(a) => Self {
                ip: a.ip().octets(),
                port: a.port(),
                family: Family::V6,
            },
        }
    }
}

impl PackedAddr {
    pub fn get(self) -> SocketAddr {
        match self.family {
            Family::V4 => {
                let [a, b, c, d, ..] = self.ip;
                SocketAddr::from(([a, b, c, d], self.port))
            }
            Family::V6 => SocketAddr::from((self.ip, self.port)),
        }
    }
}

/// A [`Peer`] in 20 bytes (see [`PackedAddr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedPeer {
    Tcp(PackedAddr),
    Unix,
    Unknown,
}

impl From<Peer> for PackedPeer {
    fn from(peer: Peer) -> Self {
        match peer {
            Peer::Tcp(a) => Self::Tcp(a.into()),
            Peer::Unix => Self::Unix,
            Peer::Unknown => Self::Unknown,
        }
    }
}

impl PackedPeer {
    pub fn get(self) -> Peer {
        match self {
            Self::Tcp(a) => Peer::Tcp(a.get()),
            Self::Unix => Peer::Unix,
            Self::Unknown => Peer::Unknown,
        }
    }
}

/// Where a client connected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
    Unknown,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix => f.write_str("unix"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// `<dir>/.s.PGSQL.<port>`.
pub fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn packed_addresses_give_back_what_they_were_made_from() {
        for addr in [
            "10.1.2.3:5555",
            "0.0.0.0:0",
            "[::1]:6432",
            "[2001:db8::7]:65535",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(PackedAddr::from(addr).get(), addr);
            let peer = Peer::Tcp(addr);
            assert_eq!(PackedPeer::from(peer).get(), peer);
        }
        for peer in [Peer::Unix, Peer::Unknown] {
            assert_eq!(PackedPeer::from(peer).get(), peer);
        }
        // The IPv4 address is not taken for the IPv6 one with the same first bytes.
        let v4: SocketAddr = "1.2.3.4:1".parse().unwrap();
        let v6: SocketAddr = "[102:304::]:1".parse().unwrap();
        assert_ne!(PackedAddr::from(v4), PackedAddr::from(v6));
        assert_eq!(size_of::<PackedPeer>(), 20);
        assert_eq!(size_of::<Option<PackedAddr>>(), 20);
    }

    /// Every byte a peer writes in many small pieces is read, waiting on readiness between reads: a short
    /// read clears the readiness, and must not clear that of data arriving right after it (a lost wake-up
    /// leaves the reader asleep with data in its socket). A race, so many rounds: with the clearing done
    /// after the read, two runs in three stalled in the first round here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_reads_never_lose_a_wakeup() {
        for _ in 0..4 {
            stream_in_small_pieces().await;
        }
    }

    async fn stream_in_small_pieces() {
        const TOTAL: usize = 40 << 20;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writer = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().expect("accept");
            peer.set_nodelay(true).expect("nodelay");
            let chunk = [7u8; 3000];
            let (mut sent, mut seed) = (0usize, 0x9e37_79b9u32);
            while sent < TOTAL {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let n = (seed as usize % chunk.len() + 1).min(TOTAL - sent);
                peer.write_all(&chunk[..n]).expect("write");
                sent += n;
                if seed % 16 == 0 {
                    std::thread::yield_now();
                }
            }
            peer
        });
        let stream = Stream::Tcp(TcpStream::connect(addr).await.expect("connect"));
        let mut buf = bytes::BytesMut::with_capacity(64 << 10);
        let mut got = 0;
        while got < TOTAL {
            let ready = std::future::poll_fn(|cx| stream.poll_read_ready(cx));
            tokio::time::timeout(Duration::from_secs(10), ready)
                .await
                .unwrap_or_else(|_| panic!("no wake-up with {} of {TOTAL} bytes read", got))
                .expect("readiness");
            match stream.try_read_buf(&mut buf) {
                Ok(0) => panic!("eof after {got} bytes"),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            buf.clear();
        }
        assert_eq!(got, TOTAL);
        drop(writer.join().expect("writer"));
    }
}
