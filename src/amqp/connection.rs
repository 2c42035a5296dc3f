//! One AMQP connection of the publisher: TCP (or TLS), PLAIN login, one channel in confirm
//! mode, batches of publishes written at once and their confirms, heartbeats both ways.
//!
//! Blocking I/O on the publisher thread only, with a deadline on every wait and in slices of
//! [`SLICE`], so that unloading the module (which joins the thread) never waits long. No other
//! thread: lapin needed three more and cost 12-16 µs of CPU per event in thread hand-offs
//! (docs/profiles/README.md); this writes a batch in one system call and reads its confirms in
//! a few.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::amqp::wire::{self as wire, Frame, Login, Method};
use crate::core::uri::Endpoint;

/// The longest a blocking call waits before the caller checks its deadline and for an unload.
const SLICE: Duration = Duration::from_millis(20);
/// The frame size we ask for; the broker may impose a smaller one.
const FRAME_MAX: u32 = 128 * 1024;
/// Our only channel.
pub const CHANNEL: u16 = 1;
/// Bytes read per call, through a buffer on the stack: the input buffer only holds what is not
/// parsed yet (usually nothing), so an idle connection keeps no large buffer.
const READ_CHUNK: usize = 16 * 1024;
/// An idle connection gives back a write buffer grown larger than this by a batch.
const OUT_KEEP: usize = 16 * 1024;

/// Tells a wait to give up: the module is unloading.
pub type Cancel<'a> = &'a dyn Fn() -> bool;

enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
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
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// How a batch of publishes fared: confirms arrive by delivery tag, `multiple` covering all
/// lower tags, and a batch is settled when every message is acked or nacked.
#[derive(Default, Debug)]
pub struct Confirms {
    /// Per message: 0 waiting, 1 acked, 2 nacked.
    state: Vec<u8>,
    first_tag: u64,
    settled: usize,
    /// Messages handed to the socket: all of the batch, or none when the write failed.
    pub written: usize,
    /// Unroutable messages the broker returned (they are acked all the same).
    pub returned: u64,
}

impl Confirms {
    fn new(first_tag: u64, n: usize) -> Confirms {
        Confirms {
            state: vec![0; n],
            first_tag,
            settled: 0,
            written: 0,
            returned: 0,
        }
    }

    /// Messages acked before the first one that is not: the prefix the outbox may let go.
    pub fn acked_prefix(&self) -> usize {
        self.state.iter().take_while(|s| **s == 1).count()
    }

    pub fn nacked(&self) -> bool {
        self.state.contains(&2)
    }

    pub fn waiting(&self) -> usize {
        self.state.len() - self.settled
    }

    fn settle(&mut self, tag: u64, multiple: bool, verdict: u8) {
        let Some(last) = tag.checked_sub(self.first_tag).map(|i| i as usize) else {
            return; // a tag of an earlier batch: already settled
        };
        let from = if multiple { 0 } else { last };
        for s in self
            .state
            .iter_mut()
            .take(last.saturating_add(1))
            .skip(from)
        {
            if *s == 0 {
                *s = verdict;
                self.settled += 1;
            }
        }
    }
}

pub struct Connection {
    io: Transport,
    /// Bytes read and not parsed yet start at `input[consumed..]`.
    input: Vec<u8>,
    consumed: usize,
    out: Vec<u8>,
    frame_max: u32,
    heartbeat: Option<Duration>,
    read_timeout: Duration,
    last_read: Instant,
    last_write: Instant,
    /// Delivery tag of the next publish on the channel (confirm mode numbers them from 1).
    next_tag: u64,
    /// Why the broker blocks publishers (a resource alarm), while it does.
    blocked: Option<String>,
}

impl Connection {
    /// Connects, logs in, opens the channel and turns confirms on, all within `timeout`.
    pub fn open(
        endpoint: &Endpoint,
        tls: Option<&Arc<rustls::ClientConfig>>,
        connection_name: &str,
        timeout: Duration,
        cancel: Cancel<'_>,
    ) -> Result<Connection, String> {
        let deadline = Instant::now() + timeout;
        let tcp = tcp_connect(&endpoint.host, endpoint.port, deadline, timeout, cancel)?;
        let set = |r: std::io::Result<()>| r.map_err(|e| format!("socket setup: {e}"));
        set(tcp.set_nodelay(true))?;
        set(tcp.set_read_timeout(Some(SLICE)))?;
        set(tcp.set_write_timeout(Some(SLICE)))?;
        let io = match tls {
            None => Transport::Plain(tcp),
            Some(config) => tls_handshake(config, &endpoint.host, tcp, deadline, cancel)?,
        };
        let now = Instant::now();
        let mut conn = Connection {
            io,
            input: Vec::new(),
            consumed: 0,
            out: Vec::with_capacity(4096),
            frame_max: FRAME_MAX,
            heartbeat: None,
            read_timeout: SLICE,
            last_read: now,
            last_write: now,
            next_tag: 1,
            blocked: None,
        };
        conn.handshake(endpoint, connection_name, deadline, cancel)?;
        Ok(conn)
    }

    fn handshake(
        &mut self,
        endpoint: &Endpoint,
        connection_name: &str,
        deadline: Instant,
        cancel: Cancel<'_>,
    ) -> Result<(), String> {
        self.out.extend_from_slice(wire::PROTOCOL_HEADER);
        self.send(deadline, cancel)?;
        let Method::ConnectionStart { mechanisms } =
            self.expect("connection.start", deadline, cancel, |m| {
                matches!(m, Method::ConnectionStart { .. })
            })?
        else {
            unreachable!("expect returns the method asked for");
        };
        if !mechanisms.split(|b| *b == b' ').any(|m| m == b"PLAIN") {
            return Err(format!(
                "the broker offers no PLAIN login (mechanisms: {})",
                String::from_utf8_lossy(&mechanisms)
            ));
        }
        let login = Login {
            connection_name,
            user: &endpoint.user,
            password: &endpoint.password,
        };
        wire::start_ok(&mut self.out, &login);
        self.send(deadline, cancel)?;
        let Method::ConnectionTune { frame_max, .. } =
            self.expect("connection.tune (login)", deadline, cancel, |m| {
                matches!(m, Method::ConnectionTune { .. })
            })?
        else {
            unreachable!("expect returns the method asked for");
        };
        // 0 from the broker means no limit of its own.
        let frame_max = match frame_max {
            0 => FRAME_MAX,
            n => n.min(FRAME_MAX),
        }
        .max(wire::FRAME_MIN_SIZE);
        // Our heartbeat setting wins, as with a `?heartbeat=` URI parameter (0 disables it).
        wire::tune_ok(&mut self.out, CHANNEL, frame_max, endpoint.heartbeat);
        self.frame_max = frame_max;
        self.heartbeat =
            (endpoint.heartbeat > 0).then(|| Duration::from_secs(u64::from(endpoint.heartbeat)));
        wire::connection_open(&mut self.out, &endpoint.vhost);
        self.send(deadline, cancel)?;
        self.expect("connection.open-ok", deadline, cancel, |m| {
            matches!(m, Method::ConnectionOpenOk)
        })
        .map_err(|e| format!("open vhost '{}': {e}", endpoint.vhost))?;
        wire::channel_open(&mut self.out, CHANNEL);
        self.send(deadline, cancel)?;
        self.expect("channel.open-ok", deadline, cancel, |m| {
            matches!(m, Method::ChannelOpenOk)
        })
        .map_err(|e| format!("open channel: {e}"))?;
        wire::confirm_select(&mut self.out, CHANNEL);
        self.send(deadline, cancel)?;
        self.expect("confirm.select-ok", deadline, cancel, |m| {
            matches!(m, Method::ConfirmSelectOk)
        })
        .map_err(|e| format!("enable publisher confirms: {e}"))?;
        Ok(())
    }

    /// Publishes the `n` messages `encode` writes (with [`wire::publish`] on channel 1) in one
    /// write, then reads until each is confirmed or refused, or `timeout` passes. `confirms`
    /// is kept up to date, so a failure still tells what was confirmed.
    pub fn publish_batch(
        &mut self,
        n: usize,
        encode: impl FnOnce(&mut Vec<u8>, u32),
        timeout: Duration,
        cancel: Cancel<'_>,
        confirms: &mut Confirms,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        *confirms = Confirms::new(self.next_tag, n);
        self.next_tag += n as u64;
        encode(&mut self.out, self.frame_max);
        self.send(deadline, cancel)?;
        confirms.written = n;
        while confirms.waiting() > 0 {
            if let Some(method) = self.next_method()? {
                match method {
                    Method::BasicAck { tag, multiple } => confirms.settle(tag, multiple, 1),
                    Method::BasicNack { tag, multiple } => confirms.settle(tag, multiple, 2),
                    Method::BasicReturn { .. } => confirms.returned += 1,
                    _ => {}
                }
                continue;
            }
            if Instant::now() >= deadline {
                let blocked = match &self.blocked {
                    Some(reason) => format!(" (the broker blocks publishers: {reason})"),
                    None => String::new(),
                };
                return Err(format!(
                    "no confirm for {} of {n} events within {} ms{blocked}",
                    confirms.waiting(),
                    timeout.as_millis()
                ));
            }
            self.wait_for_input(deadline, cancel)?;
        }
        Ok(())
    }

    /// Between batches: answers what the broker sent (heartbeats, a close) and keeps the
    /// heartbeat going, without waiting. An error means the connection is gone.
    pub fn keep_alive(&mut self) -> Result<(), String> {
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        self.fill(Duration::from_millis(1))?;
        while self.next_method()?.is_some() {}
        self.heartbeat_due()
    }

    /// Closes politely (`connection.close`, waiting up to `timeout` for the broker's answer).
    pub fn close(mut self, timeout: Duration, cancel: Cancel<'_>) {
        let deadline = Instant::now() + timeout;
        wire::connection_close(&mut self.out, 200, "bye");
        if self.send(deadline, cancel).is_ok() {
            let _ = self.expect("connection.close-ok", deadline, cancel, |m| {
                matches!(m, Method::ConnectionCloseOk)
            });
        }
        if let Transport::Tls(s) = &mut self.io {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }

    /// Reads methods until one `wanted` arrives, answering the rest as usual.
    fn expect(
        &mut self,
        what: &str,
        deadline: Instant,
        cancel: Cancel<'_>,
        wanted: impl Fn(&Method) -> bool,
    ) -> Result<Method, String> {
        loop {
            match self.next_method() {
                Ok(Some(m)) if wanted(&m) => return Ok(m),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(format!("no {what} from the broker in time"));
            }
            self.wait_for_input(deadline, cancel)
                .map_err(|e| format!("waiting for {what}: {e}"))?;
        }
    }

    /// The next method for the caller from what was read, handling the frames any state
    /// handles the same way: heartbeats, returned content, closes, flow control, blocking.
    fn next_method(&mut self) -> Result<Option<Method>, String> {
        loop {
            let parsed = wire::parse_frame(&self.input[self.consumed..], self.frame_max)
                .map_err(|e| format!("protocol error: {}", e.0))?;
            let Some((frame, used)) = parsed else {
                return Ok(None);
            };
            self.consumed += used;
            let method = match frame {
                Frame::Method(_, m) => m,
                Frame::Heartbeat | Frame::Header { .. } | Frame::Body { .. } => continue,
            };
            match method {
                Method::ConnectionClose(reason) => {
                    wire::connection_close_ok(&mut self.out);
                    let _ = self.send(Instant::now() + SLICE, &|| false);
                    return Err(format!("connection closed by the broker: {reason}"));
                }
                Method::ChannelClose(reason) => {
                    return Err(format!("channel closed by the broker: {reason}"));
                }
                Method::ChannelFlow { active } => {
                    wire::channel_flow_ok(&mut self.out, CHANNEL, active);
                    self.send(Instant::now() + SLICE, &|| false)?;
                }
                Method::ConnectionBlocked { reason } => self.blocked = Some(reason),
                Method::ConnectionUnblocked => self.blocked = None,
                other => return Ok(Some(other)),
            }
        }
    }

    /// Waits for more bytes (one slice at most), sending heartbeats that fall due meanwhile.
    fn wait_for_input(&mut self, deadline: Instant, cancel: Cancel<'_>) -> Result<(), String> {
        if cancel() {
            return Err("module unloading".into());
        }
        self.heartbeat_due()?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.fill(left.clamp(Duration::from_millis(1), SLICE))?;
        Ok(())
    }

    /// Sends a heartbeat when we have been silent for half the interval; a broker silent for
    /// two intervals is gone (a black hole: nothing would ever fail otherwise).
    fn heartbeat_due(&mut self) -> Result<(), String> {
        let Some(interval) = self.heartbeat else {
            return Ok(());
        };
        let silent = self.last_read.elapsed();
        if silent > 2 * interval {
            return Err(format!(
                "missed heartbeats: nothing from the broker for {} ms",
                silent.as_millis()
            ));
        }
        if self.last_write.elapsed() >= interval / 2 {
            wire::heartbeat(&mut self.out);
            self.send(Instant::now() + interval, &|| false)?;
        }
        Ok(())
    }

    /// Reads what arrives within `wait` into the input buffer.
    fn fill(&mut self, wait: Duration) -> Result<(), String> {
        self.input.drain(..self.consumed);
        self.consumed = 0;
        if wait != self.read_timeout {
            self.io
                .tcp()
                .set_read_timeout(Some(wait))
                .map_err(|e| format!("socket setup: {e}"))?;
            self.read_timeout = wait;
        }
        let mut chunk = [0u8; READ_CHUNK];
        match self.io.read(&mut chunk) {
            Ok(0) => Err("connection closed by the broker".into()),
            Ok(n) => {
                self.input.extend_from_slice(&chunk[..n]);
                self.last_read = Instant::now();
                Ok(())
            }
            Err(e) if is_timeout(&e) => Ok(()),
            Err(e) => Err(format!("connection lost: {e}")),
        }
    }

    /// Writes out everything queued in `out` by `deadline`.
    fn send(&mut self, deadline: Instant, cancel: Cancel<'_>) -> Result<(), String> {
        let mut written = 0;
        let result = loop {
            if written == self.out.len() {
                break self.flush(deadline, cancel);
            }
            match self.io.write(&self.out[written..]) {
                Ok(0) => break Err("connection closed while writing".into()),
                Ok(n) => written += n,
                Err(e) if is_timeout(&e) => {
                    if let Err(e) = check_wait(deadline, cancel, "write to the broker") {
                        break Err(e);
                    }
                }
                Err(e) => break Err(format!("connection lost: {e}")),
            }
        };
        self.out.clear();
        self.last_write = Instant::now();
        result
    }

    fn flush(&mut self, deadline: Instant, cancel: Cancel<'_>) -> Result<(), String> {
        loop {
            match self.io.flush() {
                Ok(()) => return Ok(()),
                Err(e) if is_timeout(&e) => check_wait(deadline, cancel, "write to the broker")?,
                Err(e) => return Err(format!("connection lost: {e}")),
            }
        }
    }
}

/// After a timed-out slice: go on waiting unless the deadline passed or the module unloads.
fn check_wait(deadline: Instant, cancel: Cancel<'_>, what: &str) -> Result<(), String> {
    if cancel() {
        return Err("module unloading".into());
    }
    if Instant::now() >= deadline {
        return Err(format!("{what}: timed out"));
    }
    Ok(())
}

/// Connects to the first address of `host` that answers, by `deadline`, noticing an unload.
fn tcp_connect(
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
    cancel: Cancel<'_>,
) -> Result<TcpStream, String> {
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
    Err(error)
}

/// The addresses of `host`: an IP address as is; a name through the system's resolver on a
/// helper thread, waited for in slices (`getaddrinfo` cannot be interrupted, and a hung DNS
/// server would otherwise hold an unload). A helper left behind finishes on its own; the
/// library stays mapped after an unload (`module::pin_library`).
fn resolve(
    host: &str,
    port: u16,
    deadline: Instant,
    cancel: Cancel<'_>,
) -> Result<Vec<SocketAddr>, String> {
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
            Ok(result) => return result.map_err(|e| format!("resolve {host}: {e}")),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                check_wait(deadline, cancel, &format!("resolve {host}"))?
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("resolve {host}: the resolver thread failed"))
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

fn tls_handshake(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
    deadline: Instant,
    cancel: Cancel<'_>,
) -> Result<Transport, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("TLS: '{host}' is not a valid server name: {e}"))?;
    let mut tls = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| format!("TLS setup: {e}"))?;
    while tls.is_handshaking() {
        match tls.complete_io(&mut tcp) {
            Ok((0, 0)) => return Err("TLS handshake: connection closed by the peer".into()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => check_wait(deadline, cancel, "TLS handshake")?,
            Err(e) => return Err(format!("TLS handshake: {e}")),
        }
    }
    Ok(Transport::Tls(Box::new(rustls::StreamOwned::new(tls, tcp))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_by_tag_and_multiple() {
        let mut c = Confirms::new(11, 5); // tags 11..=15
        c.settle(12, true, 1);
        assert_eq!((c.acked_prefix(), c.waiting()), (2, 3));
        c.settle(14, false, 1);
        assert_eq!((c.acked_prefix(), c.waiting()), (2, 2));
        c.settle(13, false, 2);
        assert_eq!((c.acked_prefix(), c.waiting(), c.nacked()), (2, 1, true));
        // A multiple ack covers only what is still waiting; tags of earlier batches are no-ops.
        c.settle(15, true, 1);
        c.settle(3, true, 1);
        assert_eq!((c.acked_prefix(), c.waiting(), c.nacked()), (2, 0, true));
    }

    #[test]
    fn a_batch_acked_at_once_is_all_confirmed() {
        let mut c = Confirms::new(1, 1000);
        c.settle(1000, true, 1);
        assert_eq!(
            (c.acked_prefix(), c.waiting(), c.nacked()),
            (1000, 0, false)
        );
    }

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
        assert!(e.contains("Connection refused"), "{e}");
    }
}
