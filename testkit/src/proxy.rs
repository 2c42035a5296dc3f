//! A fault-injecting TCP proxy in front of the real broker, to simulate outages without
//! touching the shared RabbitMQ.
//!
//! Plain std threads: one acceptor, and per client connection a session thread that pumps
//! client→broker plus one that pumps broker→client. Every blocking call is bounded (50 ms
//! read timeouts, `poll` with a timeout, a 2 s upstream connect timeout) or is woken up by
//! `shutdown` when a connection is killed, so dropping the proxy never leaves a thread
//! blocked.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often blocked threads re-check the mode and the stop flag.
const TICK: Duration = Duration::from_millis(50);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_UPSTREAM: &str = "127.0.0.1:5672";

/// What the proxy does with traffic; see [`FaultProxy::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Not listening: new connections get ECONNREFUSED; existing ones are closed.
    Refuse,
    /// Connections stay open but nothing is forwarded either way; new connections are
    /// accepted and never answered. Bytes already sent wait in the socket buffers.
    Blackhole,
    /// Abruptly close (RST) every existing connection, then behave as [`Mode::Pass`].
    CutMidStream,
}

/// The proxy; dropping it closes every socket and joins every thread.
pub struct FaultProxy {
    shared: Arc<Shared>,
    port: u16,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    listener: TcpListener,
    state: Mutex<State>,
    /// Signalled whenever the mode changes or the proxy stops.
    changed: Condvar,
    stop: AtomicBool,
    bytes: AtomicU64,
    accepted: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct State {
    /// Never `CutMidStream`: that one is an action followed by `Pass`.
    mode: Mode,
    listening: bool,
    conns: Vec<Arc<Conn>>,
    next_id: u64,
}

/// One proxied client connection.
struct Conn {
    id: u64,
    client: TcpStream,
    /// Set once the upstream connection is made (not while the connection is black-holed).
    upstream: Mutex<Option<TcpStream>>,
    dead: AtomicBool,
}

impl Conn {
    /// Resets both sockets; wakes up every thread blocked on them.
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        abort(&self.client);
        if let Some(upstream) = lock(&self.upstream).as_ref() {
            abort(upstream);
        }
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

impl FaultProxy {
    /// A proxy in [`Mode::Pass`] on a free 127.0.0.1 port, forwarding to the broker
    /// (127.0.0.1:5672).
    pub fn start() -> FaultProxy {
        let upstream = DEFAULT_UPSTREAM
            .parse()
            .expect("DEFAULT_UPSTREAM is a socket address");
        Self::start_to(upstream)
    }

    /// A proxy in [`Mode::Pass`] on a free 127.0.0.1 port, forwarding to `upstream`.
    pub fn start_to(upstream: SocketAddr) -> FaultProxy {
        // We keep this socket, even while refusing (see `set_listening`), so the port stays
        // ours. It must be bound to an explicit port, not 0: the kernel releases an
        // auto-assigned port when the socket stops listening.
        let listener = super::bind_local();
        listener
            .set_nonblocking(true)
            .expect("cannot make the proxy listener non-blocking");
        let port = listener
            .local_addr()
            .expect("local address of the proxy listener")
            .port();
        let shared = Arc::new(Shared {
            upstream,
            listener,
            state: Mutex::new(State {
                mode: Mode::Pass,
                listening: true,
                conns: Vec::new(),
                next_id: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("proxy-{port}-accept"))
                .spawn(move || accept_loop(&shared))
                .expect("cannot spawn the proxy acceptor thread")
        };
        FaultProxy {
            shared,
            port,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The AMQP URI of the broker through this proxy (guest/guest, vhost `/`).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The current mode (never `CutMidStream`, which acts once and then is `Pass`).
    pub fn mode(&self) -> Mode {
        lock(&self.shared.state).mode
    }

    /// Switches the fault mode; takes effect at once (see [`Mode`]). Going from `Blackhole`
    /// to `Pass` resumes the stalled connections where they were; [`FaultProxy::heal`]
    /// closes them instead.
    pub fn set_mode(&self, mode: Mode) {
        let mut state = lock(&self.shared.state);
        match mode {
            Mode::Pass | Mode::Blackhole => {
                self.shared.set_listening(&mut state, true);
                state.mode = mode;
            }
            Mode::Refuse => {
                state.mode = Mode::Refuse;
                self.shared.set_listening(&mut state, false);
                kill_all(&mut state);
            }
            Mode::CutMidStream => {
                kill_all(&mut state);
                self.shared.set_listening(&mut state, true);
                state.mode = Mode::Pass;
            }
        }
        self.shared.changed.notify_all();
    }

    /// Back to [`Mode::Pass`]; if the proxy was black-holing, closes the stalled
    /// connections so that clients notice at once and reconnect.
    pub fn heal(&self) {
        let mut state = lock(&self.shared.state);
        if state.mode == Mode::Blackhole {
            kill_all(&mut state);
        }
        self.shared.set_listening(&mut state, true);
        state.mode = Mode::Pass;
        self.shared.changed.notify_all();
    }

    /// Client connections currently open through the proxy.
    pub fn connections(&self) -> usize {
        lock(&self.shared.state).conns.len()
    }

    /// Client connections accepted since the proxy started.
    pub fn accepted_total(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far, both directions together.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let mut state = lock(&self.shared.state);
            kill_all(&mut state);
            self.shared.set_listening(&mut state, false);
        }
        self.shared.changed.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The acceptor has stopped, so no thread is added any more.
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for handle in threads {
            let _ = handle.join();
        }
    }
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Starts or stops listening on the same socket, so the port stays ours. On Linux,
    /// `shutdown(SHUT_RD)` on a listening socket stops listening (pending and new connects
    /// are refused) while the socket keeps its explicitly bound port, and a later `listen`
    /// on it works again.
    ///
    /// While not listening, the socket drops `SO_REUSEADDR` (which std sets): the kernel
    /// lets a socket with it bind a port whose holders all have it and none listens, so
    /// another test's `bind_local` or redis-server could take our port, and our `listen`
    /// would then fail with EADDRINUSE (seen in CI). Cleared before the shutdown and set
    /// again before the `listen`, so the port is never open to others and our own accepted
    /// connections, which keep the flag, do not conflict with the new `listen`.
    fn set_listening(&self, state: &mut State, listening: bool) {
        if state.listening == listening {
            return;
        }
        let fd = self.listener.as_raw_fd();
        let reuse_addr = |on: libc::c_int| {
            // SAFETY: setsockopt with a correctly sized int on a socket this struct owns.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        let rc = match (listening, reuse_addr(i32::from(listening))) {
            // SAFETY: a plain syscall on a socket this struct owns for its whole lifetime.
            (true, 0) => unsafe { libc::listen(fd, 128) },
            // SAFETY: as above.
            (false, 0) => unsafe { libc::shutdown(fd, libc::SHUT_RD) },
            (_, failed) => failed,
        };
        assert_eq!(
            rc,
            0,
            "proxy: cannot {} listening: {}",
            if listening { "resume" } else { "stop" },
            std::io::Error::last_os_error()
        );
        state.listening = listening;
    }

    /// Waits while the proxy black-holes. Returns false once the connection is dead, the
    /// proxy stops, or `watch` (the socket we are about to read) reports that its peer hung
    /// up, which we notice without reading its pending data.
    fn wait_for_flow(&self, conn: &Conn, watch: &TcpStream) -> bool {
        let mut state = lock(&self.state);
        loop {
            if conn.is_dead() || self.stopped() {
                return false;
            }
            if state.mode != Mode::Blackhole {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, TICK)
                .expect("proxy state lock poisoned")
                .0;
            if peer_hung_up(watch) {
                return false;
            }
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    let fd = shared.listener.as_raw_fd();
    while !shared.stopped() {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the timeout bounds the wait so `stop` is seen.
        unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as libc::c_int) };
        match shared.listener.accept() {
            Ok((client, _)) => on_accept(shared, client),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // EINVAL while not listening (Refuse), for which poll does not wait.
            Err(_) => thread::sleep(TICK),
        }
    }
}

fn on_accept(shared: &Arc<Shared>, client: TcpStream) {
    // accept(2) does not pass O_NONBLOCK on to the new socket on Linux, but be explicit.
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let mut state = lock(&shared.state);
    if state.mode == Mode::Refuse || shared.stopped() {
        // Accepted from the backlog just before we stopped listening: reset it.
        abort(&client);
        return;
    }
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    state.next_id += 1;
    let conn = Arc::new(Conn {
        id: state.next_id,
        client,
        upstream: Mutex::new(None),
        dead: AtomicBool::new(false),
    });
    state.conns.push(Arc::clone(&conn));
    drop(state);

    let session = {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("proxy-conn-{}", conn.id))
            .spawn(move || {
                session(&shared, &conn);
                finish(&shared, &conn);
            })
    };
    let mut threads = lock(&shared.threads);
    threads.retain(|t| !t.is_finished());
    match session {
        Ok(handle) => threads.push(handle),
        Err(e) => eprintln!("proxy: cannot spawn a connection thread: {e}"),
    }
}

/// Runs one connection until either side ends it or the proxy kills it.
fn session(shared: &Arc<Shared>, conn: &Arc<Conn>) {
    // A connection accepted while black-holing is not connected upstream until the hole
    // lifts; its bytes wait, unread, in the client socket.
    if !shared.wait_for_flow(conn, &conn.client) {
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, UPSTREAM_CONNECT_TIMEOUT)
    else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = conn.client.set_nodelay(true);
    let (Ok(client_read), Ok(client_write), Ok(upstream_read), Ok(upstream_write)) = (
        conn.client.try_clone(),
        conn.client.try_clone(),
        upstream.try_clone(),
        upstream.try_clone(),
    ) else {
        abort(&upstream);
        return;
    };
    {
        // Under the same lock as `Conn::kill`, so a kill either sees this socket or we see
        // the kill.
        let mut slot = lock(&conn.upstream);
        if conn.is_dead() {
            abort(&upstream);
            return;
        }
        *slot = Some(upstream);
    }
    let back = {
        let (shared, conn) = (Arc::clone(shared), Arc::clone(conn));
        thread::Builder::new()
            .name(format!("proxy-conn-{}-back", conn.id))
            .spawn(move || pump(&shared, &conn, upstream_read, client_write))
    };
    match back {
        Ok(back) => {
            pump(shared, conn, client_read, upstream_write);
            let _ = back.join();
        }
        Err(e) => eprintln!("proxy: cannot spawn a pump thread: {e}"),
    }
}

/// Copies `from` to `to` until either fails or ends, then kills the connection (AMQP does
/// not half-close, so one side ending ends both).
fn pump(shared: &Shared, conn: &Conn, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    if from.set_read_timeout(Some(TICK)).is_ok() {
        while shared.wait_for_flow(conn, &from) {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            // The hole may have opened during the read: hold these bytes until it lifts.
            if !shared.wait_for_flow(conn, &from) || to.write_all(&buf[..n]).is_err() {
                break;
            }
            shared.bytes.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    conn.kill();
}

fn finish(shared: &Shared, conn: &Conn) {
    conn.kill();
    lock(&shared.state).conns.retain(|c| c.id != conn.id);
}

fn kill_all(state: &mut State) {
    for conn in state.conns.drain(..) {
        conn.kill();
    }
}

/// Closes `stream` abruptly: with SO_LINGER 0 the final close sends RST instead of FIN,
/// and `shutdown` wakes up threads blocked on it right away.
fn abort(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a correctly sized `linger` on an open socket.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Whether the peer of `stream` closed or reset it, without consuming pending data.
fn peer_hung_up(stream: &TcpStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Locks, treating poisoning (a panic in another proxy thread) as fatal.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("proxy lock poisoned")
}
