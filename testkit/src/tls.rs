//! A TLS terminator in front of the real broker: the module connects with `amqps://` to it,
//! it forwards the plain bytes to RabbitMQ on 127.0.0.1:5672. The certificate authority is made
//! by the test ([`TestCa`]), so certificate checks can be tested both ways.
//!
//! Plain std threads and rustls's synchronous API: one acceptor, one thread per connection
//! that pumps both directions with `poll`. Every blocking call is bounded (50 ms poll and
//! accept ticks, a 2 s upstream connect timeout), so dropping the terminator never leaves a
//! thread blocked.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{bind_local, unique_name};

const TICK: Duration = Duration::from_millis(50);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_UPSTREAM: &str = "127.0.0.1:5672";

/// A self-signed certificate authority made for one test, its certificate in a PEM file.
pub struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    dir: PathBuf,
    file: PathBuf,
}

impl TestCa {
    /// A new CA named `name`; its PEM certificate is written to a fresh temporary file.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("key_evt_amqp test CA {name}"),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params
            .self_signed(&key)
            .expect("self-signed CA certificate");
        let dir = std::env::temp_dir().join(unique_name("key_evt_amqp-ca-"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let file = dir.join("ca.pem");
        std::fs::write(&file, cert.pem())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        TestCa {
            params,
            key,
            cert,
            dir,
            file,
        }
    }

    /// The PEM file holding the CA certificate.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// [`TestCa::file`] as a string, for a config value.
    pub fn path(&self) -> String {
        self.file.display().to_string()
    }

    /// A server certificate for 127.0.0.1, ::1 and localhost signed by this CA, with its key.
    fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names = vec!["127.0.0.1".to_string(), "::1".into(), "localhost".into()];
        let mut params = rcgen::CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("server key");
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.cert.der().clone()], key)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Terminates TLS on a local port and forwards to the broker; dropping it closes every socket
/// and joins every thread.
pub struct TlsTerminator {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    stop: AtomicBool,
    accepted: AtomicU64,
    /// Handshakes that failed (a client that refused our certificate, say).
    failed_handshakes: AtomicU64,
    /// Sessions whose TLS handshake completed.
    handshakes: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl TlsTerminator {
    /// Terminates TLS with a certificate of `ca` and forwards to 127.0.0.1:5672.
    pub fn start(ca: &TestCa) -> TlsTerminator {
        Self::start_to(ca, DEFAULT_UPSTREAM.parse().expect("upstream address"))
    }

    pub fn start_to(ca: &TestCa, upstream: SocketAddr) -> TlsTerminator {
        let (chain, key) = ca.server_identity();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS config");
        let listener = bind_local();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            upstream,
            config: Arc::new(config),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("tls-terminator".into())
                .spawn(move || accept_loop(&shared, &listener))
                .expect("spawn the TLS acceptor")
        };
        TlsTerminator {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed so far.
    pub fn failed_handshakes(&self) -> u64 {
        self.shared.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let session = shared.clone();
                let spawned = thread::Builder::new()
                    .name("tls-session".into())
                    .spawn(move || session.serve(client));
                if let Ok(handle) = spawned {
                    let mut threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
                    threads.retain(|t| !t.is_finished());
                    threads.push(handle);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
}

impl Shared {
    /// One client: TLS on `client`, plain TCP to the broker, until either side closes.
    fn serve(&self, mut client: TcpStream) {
        let _ = client.set_nonblocking(false);
        let Ok(mut tls) = rustls::ServerConnection::new(self.config.clone()) else {
            return;
        };
        let Ok(mut upstream) = TcpStream::connect_timeout(&self.upstream, UPSTREAM_CONNECT_TIMEOUT)
        else {
            return;
        };
        let _ = upstream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let mut handshaking = true;
        let mut buf = vec![0u8; 64 * 1024];
        while !self.stop.load(Ordering::SeqCst) {
            let (client_ready, upstream_ready) = poll2(&client, &upstream, TICK);
            if client_ready {
                match tls.read_tls(&mut client) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if tls.process_new_packets().is_err() {
                    // Send the alert, if any, then give up.
                    let _ = tls.write_tls(&mut client);
                    self.failed_handshakes
                        .fetch_add(u64::from(handshaking), Ordering::SeqCst);
                    return;
                }
                loop {
                    match tls.reader().read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if upstream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    }
                }
            }
            if handshaking && !tls.is_handshaking() {
                handshaking = false;
                self.handshakes.fetch_add(1, Ordering::SeqCst);
            }
            if upstream_ready {
                match upstream.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        tls.send_close_notify();
                        let _ = tls.write_tls(&mut client);
                        return;
                    }
                    Ok(n) => {
                        if tls.writer().write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            while tls.wants_write() {
                if tls.write_tls(&mut client).is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits up to `timeout` for either socket to be readable (or closed).
fn poll2(a: &TcpStream, b: &TcpStream, timeout: Duration) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfd entries on sockets we own, for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_millis() as libc::c_int) };
    if n <= 0 {
        return (false, false);
    }
    let ready = |f: &libc::pollfd| f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
    (ready(&fds[0]), ready(&fds[1]))
}
