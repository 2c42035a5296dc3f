//! AMQP 0-9-1 as a publisher speaks it: the frames it writes (login, channel and confirm setup,
//! publishes with their properties, heartbeats, close) and the frames it reads. Pure bytes, no
//! I/O: the connection shell is `connection.rs`.
//!
//! Layout of a frame: type (1 byte), channel (2), payload size (4), payload, 0xCE. A method
//! payload starts with its class and method ids (2 + 2). Integers are big-endian.

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Frame type, channel, size before the payload; the end byte after it.
pub const FRAME_OVERHEAD: usize = 8;
/// The smallest frame size a peer may impose (AMQP's `frame-min-size`).
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Class ids.
const CONNECTION: u16 = 10;
const CHANNEL: u16 = 20;
const BASIC: u16 = 60;
const CONFIRM: u16 = 85;

/// A method: its class and method ids, as the spec numbers them.
type MethodId = (u16, u16);

const CONNECTION_START: MethodId = (CONNECTION, 10);
const CONNECTION_START_OK: MethodId = (CONNECTION, 11);
const CONNECTION_TUNE: MethodId = (CONNECTION, 30);
const CONNECTION_TUNE_OK: MethodId = (CONNECTION, 31);
const CONNECTION_OPEN: MethodId = (CONNECTION, 40);
const CONNECTION_OPEN_OK: MethodId = (CONNECTION, 41);
const CONNECTION_CLOSE: MethodId = (CONNECTION, 50);
const CONNECTION_CLOSE_OK: MethodId = (CONNECTION, 51);
const CONNECTION_BLOCKED: MethodId = (CONNECTION, 60);
const CONNECTION_UNBLOCKED: MethodId = (CONNECTION, 61);
const CHANNEL_OPEN: MethodId = (CHANNEL, 10);
const CHANNEL_OPEN_OK: MethodId = (CHANNEL, 11);
const CHANNEL_FLOW: MethodId = (CHANNEL, 20);
const CHANNEL_FLOW_OK: MethodId = (CHANNEL, 21);
const CHANNEL_CLOSE: MethodId = (CHANNEL, 40);
const CHANNEL_CLOSE_OK: MethodId = (CHANNEL, 41);
const CONFIRM_SELECT: MethodId = (CONFIRM, 10);
const CONFIRM_SELECT_OK: MethodId = (CONFIRM, 11);
const BASIC_PUBLISH: MethodId = (BASIC, 40);
const BASIC_RETURN: MethodId = (BASIC, 50);
const BASIC_ACK: MethodId = (BASIC, 80);
const BASIC_NACK: MethodId = (BASIC, 120);

/// Basic property flags (bit 15 is the first property), for those we send.
const PROP_CONTENT_TYPE: u16 = 1 << 15;
const PROP_HEADERS: u16 = 1 << 13;
const PROP_DELIVERY_MODE: u16 = 1 << 12;
const PROP_MESSAGE_ID: u16 = 1 << 7;
const PROP_TIMESTAMP: u16 = 1 << 6;
const PROP_APP_ID: u16 = 1 << 3;

/// The basic properties we send, in their wire order (property flags from bit 15 down).
pub struct Properties<'a> {
    pub content_type: &'a str,
    /// The `headers` field table's entries, as [`header_str`] and [`header_i64`] append them
    /// (the table's length is added here); `None`: no headers property.
    pub headers: Option<&'a [u8]>,
    pub delivery_mode: u8,
    pub message_id: Option<&'a [u8]>,
    pub timestamp: Option<u64>,
    pub app_id: &'a str,
}

/// Who we are, in `connection.start-ok`.
pub struct Login<'a> {
    pub connection_name: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// A frame read from the broker. Content frames are only ever those of a returned message,
/// which we count and skip, so their bytes are not kept.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Method(u16, Method),
    Header { channel: u16, body_size: u64 },
    Body { channel: u16, len: usize },
    Heartbeat,
}

/// The methods a publisher can receive; anything else is `Other` (ignored).
#[derive(Debug, PartialEq, Eq)]
pub enum Method {
    ConnectionStart {
        mechanisms: Vec<u8>,
    },
    ConnectionTune {
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    },
    ConnectionOpenOk,
    ConnectionClose(CloseReason),
    ConnectionCloseOk,
    ConnectionBlocked {
        reason: String,
    },
    ConnectionUnblocked,
    ChannelOpenOk,
    ChannelFlow {
        active: bool,
    },
    ChannelClose(CloseReason),
    ChannelCloseOk,
    ConfirmSelectOk,
    BasicAck {
        tag: u64,
        multiple: bool,
    },
    BasicNack {
        tag: u64,
        multiple: bool,
    },
    BasicReturn {
        code: u16,
        text: String,
    },
    Other {
        class: u16,
        method: u16,
    },
}

/// Why the broker closes a channel or the connection (`404 NOT_FOUND - no exchange 'x' …`).
#[derive(Debug, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

// ------------------------------------------------------------------------------- writing

fn short_str(out: &mut Vec<u8>, s: &[u8]) {
    // Callers pass validated names (settings.rs caps exchange and routing key at 255 bytes);
    // should one slip through, release builds cut it rather than corrupt the frame.
    debug_assert!(s.len() <= 255, "short string of {} bytes", s.len());
    let s = &s[..s.len().min(255)];
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// Appends a field-table entry whose value is a long string (`S`): any bytes.
pub fn header_str(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    short_str(out, name.as_bytes());
    out.push(b'S');
    long_str(out, value);
}

/// Appends a field-table entry whose value is a signed 64-bit integer (`l`, as RabbitMQ names
/// it).
pub fn header_i64(out: &mut Vec<u8>, name: &str, value: i64) {
    short_str(out, name.as_bytes());
    out.push(b'l');
    out.extend_from_slice(&value.to_be_bytes());
}

fn long_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends one frame whose payload `fill` writes, with its size patched in afterwards.
fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let size_at = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

fn method(out: &mut Vec<u8>, channel: u16, (class, id): MethodId, args: impl FnOnce(&mut Vec<u8>)) {
    frame(out, FRAME_METHOD, channel, |out| {
        out.extend_from_slice(&class.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        args(out);
    });
}

/// A field table of string values and nested tables (enough for client properties).
enum Field<'a> {
    Str(&'a str),
    Bool(bool),
    Table(&'a [(&'a str, Field<'a>)]),
}

fn table(out: &mut Vec<u8>, fields: &[(&str, Field<'_>)]) {
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    for (name, value) in fields {
        short_str(out, name.as_bytes());
        match value {
            Field::Str(s) => {
                out.push(b'S');
                long_str(out, s.as_bytes());
            }
            Field::Bool(b) => {
                out.push(b't');
                out.push(u8::from(*b));
            }
            Field::Table(t) => {
                out.push(b'F');
                table(out, t);
            }
        }
    }
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// `connection.start-ok`: PLAIN login, and the capabilities that make RabbitMQ say why it
/// refuses a login (instead of just closing) and tell us when it blocks publishers.
pub fn start_ok(out: &mut Vec<u8>, login: &Login<'_>) {
    method(out, 0, CONNECTION_START_OK, |out| {
        let capabilities = [
            ("publisher_confirms", Field::Bool(true)),
            ("authentication_failure_close", Field::Bool(true)),
            ("connection.blocked", Field::Bool(true)),
        ];
        table(
            out,
            &[
                ("product", Field::Str("key_evt_amqp")),
                ("version", Field::Str(env!("CARGO_PKG_VERSION"))),
                ("platform", Field::Str("Rust")),
                ("connection_name", Field::Str(login.connection_name)),
                ("capabilities", Field::Table(&capabilities)),
            ],
        );
        short_str(out, b"PLAIN");
        let response_len = 2 + login.user.len() + login.password.len();
        out.extend_from_slice(&(response_len as u32).to_be_bytes());
        out.push(0);
        out.extend_from_slice(login.user.as_bytes());
        out.push(0);
        out.extend_from_slice(login.password.as_bytes());
        short_str(out, b"en_US");
    });
}

pub fn tune_ok(out: &mut Vec<u8>, channel_max: u16, frame_max: u32, heartbeat: u16) {
    method(out, 0, CONNECTION_TUNE_OK, |out| {
        out.extend_from_slice(&channel_max.to_be_bytes());
        out.extend_from_slice(&frame_max.to_be_bytes());
        out.extend_from_slice(&heartbeat.to_be_bytes());
    });
}

pub fn connection_open(out: &mut Vec<u8>, vhost: &str) {
    method(out, 0, CONNECTION_OPEN, |out| {
        short_str(out, vhost.as_bytes());
        short_str(out, b"");
        out.push(0);
    });
}

pub fn connection_close(out: &mut Vec<u8>, code: u16, text: &str) {
    method(out, 0, CONNECTION_CLOSE, |out| {
        out.extend_from_slice(&code.to_be_bytes());
        short_str(out, text.as_bytes());
        out.extend_from_slice(&[0; 4]);
    });
}

pub fn connection_close_ok(out: &mut Vec<u8>) {
    method(out, 0, CONNECTION_CLOSE_OK, |_| {});
}

pub fn channel_open(out: &mut Vec<u8>, channel: u16) {
    method(out, channel, CHANNEL_OPEN, |out| short_str(out, b""));
}

pub fn channel_flow_ok(out: &mut Vec<u8>, channel: u16, active: bool) {
    method(out, channel, CHANNEL_FLOW_OK, |out| {
        out.push(u8::from(active))
    });
}

pub fn confirm_select(out: &mut Vec<u8>, channel: u16) {
    method(out, channel, CONFIRM_SELECT, |out| out.push(0));
}

pub fn heartbeat(out: &mut Vec<u8>) {
    frame(out, FRAME_HEARTBEAT, 0, |_| {});
}

/// `basic.publish`, its content header and the body, cut in frames of at most `frame_max`.
#[allow(clippy::too_many_arguments)]
pub fn publish(
    out: &mut Vec<u8>,
    channel: u16,
    frame_max: u32,
    exchange: &str,
    routing_key: &[u8],
    mandatory: bool,
    props: &Properties<'_>,
    body: &[u8],
) {
    method(out, channel, BASIC_PUBLISH, |out| {
        out.extend_from_slice(&[0; 2]);
        short_str(out, exchange.as_bytes());
        short_str(out, routing_key);
        out.push(u8::from(mandatory));
    });
    frame(out, FRAME_HEADER, channel, |out| {
        out.extend_from_slice(&BASIC.to_be_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        let mut flags = PROP_CONTENT_TYPE | PROP_DELIVERY_MODE | PROP_APP_ID;
        if props.headers.is_some() {
            flags |= PROP_HEADERS;
        }
        if props.message_id.is_some() {
            flags |= PROP_MESSAGE_ID;
        }
        if props.timestamp.is_some() {
            flags |= PROP_TIMESTAMP;
        }
        out.extend_from_slice(&flags.to_be_bytes());
        short_str(out, props.content_type.as_bytes());
        if let Some(entries) = props.headers {
            long_str(out, entries);
        }
        out.push(props.delivery_mode);
        if let Some(id) = props.message_id {
            short_str(out, id);
        }
        if let Some(ts) = props.timestamp {
            out.extend_from_slice(&ts.to_be_bytes());
        }
        short_str(out, props.app_id.as_bytes());
    });
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        frame(out, FRAME_BODY, channel, |out| out.extend_from_slice(part));
    }
}

// ------------------------------------------------------------------------------- reading

/// A frame the broker sent that breaks the protocol: the connection cannot go on.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// The broker answered our protocol header with its own: another AMQP version.
    NotAmqp091([u8; 4]),
    FrameTooLarge {
        size: usize,
        frame_max: u32,
    },
    NoFrameEnd,
    UnknownFrameType(u8),
    /// A method or header frame too short for its fields.
    Truncated,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::NotAmqp091(version) => write!(
                f,
                "the broker does not speak AMQP 0-9-1 (it offered protocol {version:?})"
            ),
            WireError::FrameTooLarge { size, frame_max } => write!(
                f,
                "frame of {size} bytes exceeds the negotiated frame_max {frame_max}"
            ),
            WireError::NoFrameEnd => f.write_str("frame does not end with 0xCE"),
            WireError::UnknownFrameType(kind) => write!(f, "unknown frame type {kind}"),
            WireError::Truncated => f.write_str("truncated method frame"),
        }
    }
}

/// Reads big-endian fields off a payload; running short is a [`WireError`].
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn short_str(&mut self) -> Result<String, WireError> {
        let n = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn long_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn close_reason(&mut self) -> Result<CloseReason, WireError> {
        Ok(CloseReason {
            code: self.u16()?,
            text: self.short_str()?,
        })
    }
}

fn parse_method(payload: &[u8]) -> Result<Method, WireError> {
    let mut f = Fields { bytes: payload };
    let id = (f.u16()?, f.u16()?);
    Ok(match id {
        CONNECTION_START => {
            f.take(2)?; // protocol version
            f.long_bytes()?; // server properties: a table we do not need
            Method::ConnectionStart {
                mechanisms: f.long_bytes()?.to_vec(),
            }
        }
        CONNECTION_TUNE => Method::ConnectionTune {
            channel_max: f.u16()?,
            frame_max: f.u32()?,
            heartbeat: f.u16()?,
        },
        CONNECTION_OPEN_OK => Method::ConnectionOpenOk,
        CONNECTION_CLOSE => Method::ConnectionClose(f.close_reason()?),
        CONNECTION_CLOSE_OK => Method::ConnectionCloseOk,
        CONNECTION_BLOCKED => Method::ConnectionBlocked {
            reason: f.short_str()?,
        },
        CONNECTION_UNBLOCKED => Method::ConnectionUnblocked,
        CHANNEL_OPEN_OK => Method::ChannelOpenOk,
        CHANNEL_FLOW => Method::ChannelFlow {
            active: f.u8()? & 1 == 1,
        },
        CHANNEL_CLOSE => Method::ChannelClose(f.close_reason()?),
        CHANNEL_CLOSE_OK => Method::ChannelCloseOk,
        CONFIRM_SELECT_OK => Method::ConfirmSelectOk,
        BASIC_ACK => Method::BasicAck {
            tag: f.u64()?,
            multiple: f.u8()? & 1 == 1,
        },
        BASIC_NACK => Method::BasicNack {
            tag: f.u64()?,
            multiple: f.u8()? & 1 == 1,
        },
        BASIC_RETURN => Method::BasicReturn {
            code: f.u16()?,
            text: f.short_str()?,
        },
        (class, method) => Method::Other { class, method },
    })
}

/// Parses the frame at the start of `buf`: `Ok(None)` until it is complete, else the frame and
/// the bytes it took. `frame_max` is the negotiated limit (0 before tuning: none).
pub fn parse_frame(buf: &[u8], frame_max: u32) -> Result<Option<(Frame, usize)>, WireError> {
    if let Some(&[b'A', b'M', b'Q', b'P', a, b, c, d]) = buf.first_chunk::<8>() {
        return Err(WireError::NotAmqp091([a, b, c, d]));
    }
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if frame_max > 0 && size + FRAME_OVERHEAD > frame_max as usize {
        return Err(WireError::FrameTooLarge { size, frame_max });
    }
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(WireError::NoFrameEnd);
    }
    let payload = &buf[7..7 + size];
    let frame = match kind {
        FRAME_METHOD => Frame::Method(channel, parse_method(payload)?),
        FRAME_HEADER => {
            let mut f = Fields { bytes: payload };
            f.take(4)?; // class, weight
            Frame::Header {
                channel,
                body_size: f.u64()?,
            }
        }
        FRAME_BODY => Frame::Body { channel, len: size },
        FRAME_HEARTBEAT => Frame::Heartbeat,
        other => return Err(WireError::UnknownFrameType(other)),
    };
    Ok(Some((frame, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(message_id: Option<&[u8]>, timestamp: Option<u64>) -> Properties<'_> {
        Properties {
            content_type: "text/plain",
            headers: None,
            delivery_mode: 2,
            message_id,
            timestamp,
            app_id: "app",
        }
    }

    /// Splits a byte string into frames the way a broker would read them.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let size = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]) as usize;
            assert_eq!(bytes[7 + size], FRAME_END);
            out.push((
                bytes[0],
                u16::from_be_bytes([bytes[1], bytes[2]]),
                bytes[7..7 + size].to_vec(),
            ));
            bytes = &bytes[8 + size..];
        }
        out
    }

    #[test]
    fn a_publish_is_a_method_a_header_and_the_body() {
        let mut out = Vec::new();
        let p = props(Some(b"run-7"), Some(1_700_000_000));
        publish(&mut out, 1, 4096, "ex", b"rk", true, &p, b"0\nset\nk");
        let f = frames(&out);
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[0],
            (
                1,
                1,
                [&[0, 60, 0, 40, 0, 0, 2][..], b"ex", &[2], b"rk", &[1]].concat()
            )
        );
        let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        header.extend_from_slice(&0b1001_0000_1100_1000u16.to_be_bytes());
        header.extend_from_slice(b"\x0atext/plain\x02\x05run-7");
        header.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        header.extend_from_slice(b"\x03app");
        assert_eq!(f[1], (2, 1, header));
        assert_eq!(f[2], (3, 1, b"0\nset\nk".to_vec()));
    }

    #[test]
    fn absent_properties_are_left_out_and_flagged_off() {
        let mut out = Vec::new();
        publish(&mut out, 1, 4096, "", b"q", false, &props(None, None), b"x");
        let header = &frames(&out)[1].2;
        assert_eq!(&header[12..14], &0b1001_0000_0000_1000u16.to_be_bytes());
        assert_eq!(&header[14..], b"\x0atext/plain\x02\x03app");
    }

    #[test]
    fn headers_are_a_field_table_after_the_content_type() {
        let mut entries = Vec::new();
        header_i64(&mut entries, "redis-db", -1);
        header_str(&mut entries, "redis-key", b"k\xff");
        let p = Properties {
            headers: Some(&entries),
            ..props(None, None)
        };
        let mut out = Vec::new();
        publish(&mut out, 1, 4096, "", b"q", false, &p, b"x");
        let header = &frames(&out)[1].2;
        assert_eq!(&header[12..14], &0b1011_0000_0000_1000u16.to_be_bytes());
        let mut expected = b"\x0atext/plain".to_vec();
        let mut table = b"\x08redis-dbl".to_vec();
        table.extend_from_slice(&(-1i64).to_be_bytes());
        table.extend_from_slice(b"\x09redis-keyS\0\0\0\x02k\xff");
        expected.extend_from_slice(&(table.len() as u32).to_be_bytes());
        expected.extend_from_slice(&table);
        expected.extend_from_slice(b"\x02\x03app");
        assert_eq!(&header[14..], &expected[..]);
    }

    #[test]
    fn a_large_body_spans_frames_of_at_most_frame_max() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        publish(
            &mut out,
            1,
            4096,
            "",
            b"q",
            false,
            &props(None, None),
            &body,
        );
        let f = frames(&out);
        let parts: Vec<&[u8]> = f[2..].iter().map(|(_, _, p)| p.as_slice()).collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() + FRAME_OVERHEAD <= 4096));
        assert_eq!(parts.concat(), body);
        // An empty body has no body frame.
        let mut out = Vec::new();
        publish(&mut out, 1, 4096, "", b"q", false, &props(None, None), b"");
        assert_eq!(frames(&out).len(), 2);
    }

    #[test]
    fn start_ok_logs_in_with_plain() {
        let mut out = Vec::new();
        let login = Login {
            connection_name: "node",
            user: "guest",
            password: "pw",
        };
        start_ok(&mut out, &login);
        let payload = &frames(&out)[0].2;
        assert_eq!(&payload[..4], &[0, 10, 0, 11]);
        let table_len = u32::from_be_bytes(payload[4..8].try_into().unwrap()) as usize;
        let table = &payload[8..8 + table_len];
        let rest = &payload[8 + table_len..];
        assert!(table.windows(4).any(|w| w == b"node"));
        assert!(table
            .windows(28)
            .any(|w| w == b"authentication_failure_close"));
        assert_eq!(rest, b"\x05PLAIN\x00\x00\x00\x09\x00guest\x00pw\x05en_US");
    }

    fn method_frame(channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![1];
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(FRAME_END);
        out
    }

    #[test]
    fn broker_methods_are_read() {
        let cases: Vec<(Vec<u8>, Method)> = vec![
            (
                [
                    &[0, 10, 0, 10, 0, 9, 0, 0, 0, 2, 0xAB, 0xCD, 0, 0, 0, 5][..],
                    b"PLAIN",
                    &[0, 0, 0, 0],
                ]
                .concat(),
                Method::ConnectionStart {
                    mechanisms: b"PLAIN".to_vec(),
                },
            ),
            (
                vec![0, 10, 0, 30, 0x07, 0xFF, 0, 2, 0, 0, 0, 60],
                Method::ConnectionTune {
                    channel_max: 2047,
                    frame_max: 131_072,
                    heartbeat: 60,
                },
            ),
            (
                [
                    &[0, 10, 0, 50, 1, 147, 14][..],
                    b"ACCESS_REFUSED",
                    &[0, 0, 0, 0],
                ]
                .concat(),
                Method::ConnectionClose(CloseReason {
                    code: 403,
                    text: "ACCESS_REFUSED".into(),
                }),
            ),
            (
                [
                    &[0, 20, 0, 40, 1, 148, 9][..],
                    b"NOT_FOUND",
                    &[0, 60, 0, 40],
                ]
                .concat(),
                Method::ChannelClose(CloseReason {
                    code: 404,
                    text: "NOT_FOUND".into(),
                }),
            ),
            (
                vec![0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 1, 0, 1],
                Method::BasicAck {
                    tag: 256,
                    multiple: true,
                },
            ),
            (
                vec![0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 0, 3, 2],
                Method::BasicNack {
                    tag: 3,
                    multiple: false,
                },
            ),
            (
                [&[0, 60, 0, 50, 1, 56, 9][..], b"NO_ROUTE!", &[0, 0]].concat(),
                Method::BasicReturn {
                    code: 312,
                    text: "NO_ROUTE!".into(),
                },
            ),
            (
                [&[0, 10, 0, 60, 3][..], b"low"].concat(),
                Method::ConnectionBlocked {
                    reason: "low".into(),
                },
            ),
            (vec![0, 85, 0, 11], Method::ConfirmSelectOk),
            (
                vec![0, 60, 0, 21],
                Method::Other {
                    class: 60,
                    method: 21,
                },
            ),
        ];
        for (payload, expected) in cases {
            let bytes = method_frame(1, &payload);
            let (frame, used) = parse_frame(&bytes, 0).unwrap().unwrap();
            assert_eq!(frame, Frame::Method(1, expected));
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn frames_are_read_only_when_complete() {
        let mut bytes = method_frame(0, &[0, 10, 0, 41, 0]);
        let mut hb = Vec::new();
        heartbeat(&mut hb);
        bytes.extend_from_slice(&hb);
        for cut in 0..13 {
            assert_eq!(parse_frame(&bytes[..cut], 0), Ok(None), "cut at {cut}");
        }
        let (frame, used) = parse_frame(&bytes, 0).unwrap().unwrap();
        assert_eq!(frame, Frame::Method(0, Method::ConnectionOpenOk));
        assert_eq!(
            parse_frame(&bytes[used..], 0),
            Ok(Some((Frame::Heartbeat, 8)))
        );
    }

    #[test]
    fn content_frames_of_a_return_are_sized() {
        let mut out = Vec::new();
        publish(
            &mut out,
            1,
            4096,
            "",
            b"q",
            false,
            &props(None, None),
            b"abc",
        );
        let (_, used) = parse_frame(&out, 4096).unwrap().unwrap();
        let (header, used2) = parse_frame(&out[used..], 4096).unwrap().unwrap();
        assert_eq!(
            header,
            Frame::Header {
                channel: 1,
                body_size: 3
            }
        );
        let (body, _) = parse_frame(&out[used + used2..], 4096).unwrap().unwrap();
        assert_eq!(body, Frame::Body { channel: 1, len: 3 });
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut bad_end = method_frame(0, &[0, 10, 0, 41, 0]);
        *bad_end.last_mut().unwrap() = 0;
        assert!(parse_frame(&bad_end, 0).is_err());
        let e = parse_frame(b"AMQP\x00\x00\x09\x00", 0).unwrap_err();
        assert_eq!(e, WireError::NotAmqp091([0, 0, 9, 0]));
        assert_eq!(
            e.to_string(),
            "the broker does not speak AMQP 0-9-1 (it offered protocol [0, 0, 9, 0])"
        );
        let big = method_frame(0, &[0; 5000]);
        assert!(parse_frame(&big, 4096).is_err());
        // A method frame too short for its fields.
        assert!(parse_frame(&method_frame(1, &[0, 60, 0, 80, 0]), 0).is_err());
        assert!(parse_frame(&[9, 0, 0, 0, 0, 0, 0, FRAME_END], 0).is_err());
    }
}
