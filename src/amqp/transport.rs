//! The byte stream under a connection: TCP, or TLS over it. Connecting resolves the name and
//! connects in slices of [`SLICE`], so that an unload (which joins the publisher thread) never
//! waits for a hung DNS server or a black-holed address.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::amqp::error::ConnError;

/// The longest a blocking call waits before the caller checks its deadline and for an unload.
pub const SLICE: Duration = Duration::from_millis(20);

/// Tells a wait to give up: the module is unloading.
pub type Cancel<'a> = &'a dyn Fn() -> bool;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// A timeout of a socket call: try again (until the caller's deadline).
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// After a timed-out slice: go on waiting unless the deadline passed or the module unloads.
pub fn check_wait(deadline: Instant, cancel: Cancel<'_>, what: &str) -> Result<(), ConnError> {
    if cancel() {
        return Err(ConnError::Unloading);
    }
    if Instant::now() >= deadline {
        return Err(ConnError::Failed(format!("{what}: timed out")));
    }
    Ok(())
}

/// Connects to the first address of `host` that answers, by `deadline`, noticing an unload.
pub fn tcp_connect(
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
    cancel: Cancel<'_>,
) -> Result<TcpStream, ConnError> {
    let addrs = resolve(host, port, deadline, cancel)?;
    let mut error = format!("resolve {host}: no address");
    for addr in addrs {
        match connect_addr(addr, deadline, cancel) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                error = format!(
                    "{addr}: no TCP connection within {} ms",
                    timeout.as_millis()
                )
            }
            Err(e) => error = format!("{addr}: {e}"),
        }
        if cancel() || Instant::now() >= deadline {
            break;
        }
    }
    Err(ConnError::Failed(error))
}

/// The addresses of `host`: an IP address as is; a name through the system's resolver on a
/// helper thread, waited for in slices (`getaddrinfo` cannot be interrupted, and a hung DNS
/// server would otherwise hold an unload). A helper left behind finishes on its own; the
/// library stays mapped after an unload (`redis::lifecycle::pin_library`).
fn resolve(
    host: &str,
    port: u16,
    deadline: Instant,
    cancel: Cancel<'_>,
) -> Result<Vec<SocketAddr>, ConnError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("kea-resolver".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })
        .map_err(|e| format!("resolve {host}: cannot start a thread: {e}"))?;
    loop {
        match rx.recv_timeout(SLICE) {
            Ok(result) => return Ok(result.map_err(|e| format!("resolve {host}: {e}"))?),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                check_wait(deadline, cancel, &format!("resolve {host}"))?
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("resolve {host}: the resolver thread failed").into())
            }
        }
    }
}

/// A non-blocking connect, waited for in slices (`TcpStream::connect_timeout` cannot be
/// interrupted, and unloading joins this thread).
fn connect_addr(
    addr: SocketAddr,
    deadline: Instant,
    cancel: Cancel<'_>,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || is_timeout(&e) => loop {
            if writable(&socket, SLICE) {
                break;
            }
            if cancel() {
                return Err(std::io::Error::new(
                    ErrorKind::Interrupted,
                    "module unloading",
                ));
            }
            if Instant::now() >= deadline {
                return Err(ErrorKind::TimedOut.into());
            }
        },
        Err(e) => return Err(e),
    }
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    socket.set_nonblocking(false)?;
    Ok(socket.into())
}

/// Whether a connecting socket became writable (connected or failed) within `wait`.
fn writable(socket: &socket2::Socket, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll(2) on one descriptor we own, for at most `wait`.
    let ready = unsafe { libc::poll(&mut fd, 1, wait.as_millis() as libc::c_int) };
    ready > 0
}

pub fn tls_handshake(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
    deadline: Instant,
    cancel: Cancel<'_>,
) -> Result<Transport, ConnError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("TLS: '{host}' is not a valid server name: {e}"))?;
    let mut tls = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| format!("TLS setup: {e}"))?;
    while tls.is_handshaking() {
        match tls.complete_io(&mut tcp) {
            Ok((0, 0)) => {
                return Err(ConnError::Failed(
                    "TLS handshake: connection closed by the peer".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => check_wait(deadline, cancel, "TLS handshake")?,
            Err(e) => return Err(format!("TLS handshake: {e}").into()),
        }
    }
    Ok(Transport::Tls(Box::new(rustls::StreamOwned::new(tls, tcp))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_addresses_need_no_lookup() {
        let soon = Instant::now() + Duration::from_secs(5);
        let ip = resolve("127.0.0.1", 5672, soon, &|| false).unwrap();
        assert_eq!(ip, vec![SocketAddr::from(([127, 0, 0, 1], 5672))]);
        let named = resolve("localhost", 5672, soon, &|| false).unwrap();
        assert!(
            named
                .iter()
                .all(|a| a.port() == 5672 && a.ip().is_loopback()),
            "{named:?}"
        );
    }

    #[test]
    fn a_refused_connection_says_so() {
        // Port 1 on loopback: nothing listens there.
        let e = tcp_connect(
            "127.0.0.1",
            1,
            Instant::now() + Duration::from_secs(2),
            Duration::from_secs(2),
            &|| false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Connection refused"), "{e}");
    }
}
