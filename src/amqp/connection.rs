//! One AMQP connection of the publisher: TCP (or TLS), PLAIN login, one channel in confirm
//! mode, batches of publishes written at once and their confirms, heartbeats both ways.
//!
//! Blocking I/O on the publisher thread only, with a deadline on every wait and in slices of
//! [`SLICE`], so that unloading the module (which joins the thread) never waits long. No other
//! thread: lapin needed three more and cost 12-16 µs of CPU per event in thread hand-offs
//! (docs/profiles/README.md); this writes a batch in one system call and reads its confirms in
//! a few.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::amqp::error::ConnError;
use crate::amqp::transport::{
    check_wait, is_timeout, tcp_connect, tls_handshake, Cancel, Transport, SLICE,
};
use crate::amqp::wire::{self as wire, Frame, Login, Method};
use crate::core::uri::Endpoint;

/// The frame size we ask for; the broker may impose a smaller one.
const FRAME_MAX: u32 = 128 * 1024;
/// Our only channel.
pub const CHANNEL: u16 = 1;
/// Bytes read per call, through a buffer on the stack: the input buffer only holds what is not
/// parsed yet (usually nothing), so an idle connection keeps no large buffer.
const READ_CHUNK: usize = 16 * 1024;
/// An idle connection gives back a write buffer grown larger than this by a batch.
const OUT_KEEP: usize = 16 * 1024;

/// What the broker said of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Waiting,
    Acked,
    Nacked,
}

/// How a batch of publishes fared: confirms arrive by delivery tag, `multiple` covering all
/// lower tags, and a batch is settled when every message is acked or nacked.
#[derive(Default, Debug)]
pub struct Confirms {
    /// Per message, in delivery-tag order.
    state: Vec<Verdict>,
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
            state: vec![Verdict::Waiting; n],
            first_tag,
            settled: 0,
            written: 0,
            returned: 0,
        }
    }

    /// Messages acked before the first one that is not: the prefix the outbox may let go.
    pub fn acked_prefix(&self) -> usize {
        self.state
            .iter()
            .take_while(|s| **s == Verdict::Acked)
            .count()
    }

    pub fn nacked(&self) -> bool {
        self.state.contains(&Verdict::Nacked)
    }

    pub fn waiting(&self) -> usize {
        self.state.len() - self.settled
    }

    fn settle(&mut self, tag: u64, multiple: bool, verdict: Verdict) {
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
            if *s == Verdict::Waiting {
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

/// A socket option that could not be set: the connection is unusable.
fn socket_setup(r: std::io::Result<()>) -> Result<(), ConnError> {
    r.map_err(|e| ConnError::Failed(format!("socket setup: {e}")))
}

impl Connection {
    /// Connects, logs in, opens the channel and turns confirms on, all within `timeout`.
    pub fn open(
        endpoint: &Endpoint,
        tls: Option<&Arc<rustls::ClientConfig>>,
        connection_name: &str,
        timeout: Duration,
        cancel: Cancel<'_>,
    ) -> Result<Connection, ConnError> {
        let deadline = Instant::now() + timeout;
        let tcp = tcp_connect(&endpoint.host, endpoint.port, deadline, timeout, cancel)?;
        socket_setup(tcp.set_nodelay(true))?;
        socket_setup(tcp.set_read_timeout(Some(SLICE)))?;
        socket_setup(tcp.set_write_timeout(Some(SLICE)))?;
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
    ) -> Result<(), ConnError> {
        self.out.extend_from_slice(wire::PROTOCOL_HEADER);
        self.send(deadline, cancel)?;
        let mechanisms = self.expect("connection.start", deadline, cancel, |m| match m {
            Method::ConnectionStart { mechanisms } => Some(mechanisms),
            _ => None,
        })?;
        if !mechanisms.split(|b| *b == b' ').any(|m| m == b"PLAIN") {
            return Err(ConnError::Failed(format!(
                "the broker offers no PLAIN login (mechanisms: {})",
                String::from_utf8_lossy(&mechanisms)
            )));
        }
        let login = Login {
            connection_name,
            user: &endpoint.user,
            password: &endpoint.password,
        };
        wire::start_ok(&mut self.out, &login);
        self.send(deadline, cancel)?;
        let frame_max = self.expect("connection.tune (login)", deadline, cancel, |m| match m {
            Method::ConnectionTune { frame_max, .. } => Some(frame_max),
            _ => None,
        })?;
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
            matches!(m, Method::ConnectionOpenOk).then_some(())
        })
        .map_err(ConnError::during(format!(
            "open vhost '{}'",
            endpoint.vhost
        )))?;
        wire::channel_open(&mut self.out, CHANNEL);
        self.send(deadline, cancel)?;
        self.expect("channel.open-ok", deadline, cancel, |m| {
            matches!(m, Method::ChannelOpenOk).then_some(())
        })
        .map_err(ConnError::during("open channel"))?;
        wire::confirm_select(&mut self.out, CHANNEL);
        self.send(deadline, cancel)?;
        self.expect("confirm.select-ok", deadline, cancel, |m| {
            matches!(m, Method::ConfirmSelectOk).then_some(())
        })
        .map_err(ConnError::during("enable publisher confirms"))?;
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
    ) -> Result<(), ConnError> {
        let deadline = Instant::now() + timeout;
        *confirms = Confirms::new(self.next_tag, n);
        self.next_tag += n as u64;
        encode(&mut self.out, self.frame_max);
        self.send(deadline, cancel)?;
        confirms.written = n;
        while confirms.waiting() > 0 {
            if let Some(method) = self.next_method()? {
                match method {
                    Method::BasicAck { tag, multiple } => {
                        confirms.settle(tag, multiple, Verdict::Acked)
                    }
                    Method::BasicNack { tag, multiple } => {
                        confirms.settle(tag, multiple, Verdict::Nacked)
                    }
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
                return Err(ConnError::Failed(format!(
                    "no confirm for {} of {n} events within {} ms{blocked}",
                    confirms.waiting(),
                    timeout.as_millis()
                )));
            }
            self.wait_for_input(deadline, cancel)?;
        }
        Ok(())
    }

    /// Between batches: answers what the broker sent (heartbeats, a close) and keeps the
    /// heartbeat going, without waiting. An error means the connection is gone.
    pub fn keep_alive(&mut self) -> Result<(), ConnError> {
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        self.fill(Duration::ZERO)?;
        while self.next_method()?.is_some() {}
        self.heartbeat_due()
    }

    /// Closes politely (`connection.close`, waiting up to `timeout` for the broker's answer).
    pub fn close(mut self, timeout: Duration, cancel: Cancel<'_>) {
        let deadline = Instant::now() + timeout;
        wire::connection_close(&mut self.out, 200, "bye");
        if self.send(deadline, cancel).is_ok() {
            let _ = self.expect("connection.close-ok", deadline, cancel, |m| {
                matches!(m, Method::ConnectionCloseOk).then_some(())
            });
        }
        if let Transport::Tls(s) = &mut self.io {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }

    /// Reads methods until one arrives that `wanted` takes (returning what the caller needs of
    /// it), answering the rest as usual.
    fn expect<T>(
        &mut self,
        what: &str,
        deadline: Instant,
        cancel: Cancel<'_>,
        wanted: impl Fn(Method) -> Option<T>,
    ) -> Result<T, ConnError> {
        loop {
            if let Some(m) = self.next_method()? {
                if let Some(found) = wanted(m) {
                    return Ok(found);
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Err(ConnError::Failed(format!(
                    "no {what} from the broker in time"
                )));
            }
            self.wait_for_input(deadline, cancel)
                .map_err(ConnError::during(format!("waiting for {what}")))?;
        }
    }

    /// The next method for the caller from what was read, handling the frames any state
    /// handles the same way: heartbeats, returned content, closes, flow control, blocking.
    fn next_method(&mut self) -> Result<Option<Method>, ConnError> {
        loop {
            let parsed = wire::parse_frame(&self.input[self.consumed..], self.frame_max)
                .map_err(ConnError::Protocol)?;
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
                    return Err(ConnError::ConnectionClosed(reason));
                }
                Method::ChannelClose(reason) => {
                    return Err(ConnError::ChannelClosed(reason));
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
    fn wait_for_input(&mut self, deadline: Instant, cancel: Cancel<'_>) -> Result<(), ConnError> {
        if cancel() {
            return Err(ConnError::Unloading);
        }
        self.heartbeat_due()?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.fill(left.clamp(Duration::from_millis(1), SLICE))?;
        Ok(())
    }

    /// Sends a heartbeat when we have been silent for half the interval; a broker silent for
    /// two intervals is gone (a black hole: nothing would ever fail otherwise).
    fn heartbeat_due(&mut self) -> Result<(), ConnError> {
        let Some(interval) = self.heartbeat else {
            return Ok(());
        };
        let silent = self.last_read.elapsed();
        if silent > 2 * interval {
            return Err(ConnError::Failed(format!(
                "missed heartbeats: nothing from the broker for {} ms",
                silent.as_millis()
            )));
        }
        if self.last_write.elapsed() >= interval / 2 {
            wire::heartbeat(&mut self.out);
            self.send(Instant::now() + interval, &|| false)?;
        }
        Ok(())
    }

    /// Reads what arrives within `wait` into the input buffer; with `Duration::ZERO`, only what
    /// has arrived already. That one does not use a read timeout: the kernel counts those in
    /// ticks, and 1 ms of SO_RCVTIMEO slept 4-12 ms when nothing came (strace, HZ=250), which
    /// an event handed over meanwhile waited out (bench measurement 6: 5.9 ms from the SET to
    /// the consumer at 2 ms between events, against 0.3 ms for a raw publisher).
    fn fill(&mut self, wait: Duration) -> Result<(), ConnError> {
        self.input.drain(..self.consumed);
        self.consumed = 0;
        let at_once = wait.is_zero();
        if at_once {
            // Back to blocking right after the read: writes wait on their timeout.
            socket_setup(self.io.tcp().set_nonblocking(true))?;
        } else if wait != self.read_timeout {
            socket_setup(self.io.tcp().set_read_timeout(Some(wait)))?;
            self.read_timeout = wait;
        }
        let mut chunk = [0u8; READ_CHUNK];
        let read = self.io.read(&mut chunk);
        if at_once {
            socket_setup(self.io.tcp().set_nonblocking(false))?;
        }
        match read {
            Ok(0) => Err(ConnError::Failed("connection closed by the broker".into())),
            Ok(n) => {
                self.input.extend_from_slice(&chunk[..n]);
                self.last_read = Instant::now();
                Ok(())
            }
            Err(e) if is_timeout(&e) => Ok(()),
            Err(e) => Err(ConnError::Failed(format!("connection lost: {e}"))),
        }
    }

    /// Writes out everything queued in `out` by `deadline`.
    fn send(&mut self, deadline: Instant, cancel: Cancel<'_>) -> Result<(), ConnError> {
        let mut written = 0;
        let result = loop {
            if written == self.out.len() {
                break self.flush(deadline, cancel);
            }
            match self.io.write(&self.out[written..]) {
                Ok(0) => break Err(ConnError::Failed("connection closed while writing".into())),
                Ok(n) => written += n,
                Err(e) if is_timeout(&e) => {
                    if let Err(e) = check_wait(deadline, cancel, "write to the broker") {
                        break Err(e);
                    }
                }
                Err(e) => break Err(ConnError::Failed(format!("connection lost: {e}"))),
            }
        };
        self.out.clear();
        self.last_write = Instant::now();
        result
    }

    fn flush(&mut self, deadline: Instant, cancel: Cancel<'_>) -> Result<(), ConnError> {
        loop {
            match self.io.flush() {
                Ok(()) => return Ok(()),
                Err(e) if is_timeout(&e) => check_wait(deadline, cancel, "write to the broker")?,
                Err(e) => return Err(ConnError::Failed(format!("connection lost: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_by_tag_and_multiple() {
        let mut c = Confirms::new(11, 5); // tags 11..=15
        c.settle(12, true, Verdict::Acked);
        assert_eq!((c.acked_prefix(), c.waiting()), (2, 3));
        c.settle(14, false, Verdict::Acked);
        assert_eq!((c.acked_prefix(), c.waiting()), (2, 2));
        c.settle(13, false, Verdict::Nacked);
        assert_eq!((c.acked_prefix(), c.waiting(), c.nacked()), (2, 1, true));
        // A multiple ack covers only what is still waiting; tags of earlier batches are no-ops.
        c.settle(15, true, Verdict::Acked);
        c.settle(3, true, Verdict::Acked);
        assert_eq!((c.acked_prefix(), c.waiting(), c.nacked()), (2, 0, true));
    }

    #[test]
    fn a_batch_acked_at_once_is_all_confirmed() {
        let mut c = Confirms::new(1, 1000);
        c.settle(1000, true, Verdict::Acked);
        assert_eq!(
            (c.acked_prefix(), c.waiting(), c.nacked()),
            (1000, 0, false)
        );
    }
}
