//! The shipper ⇄ ingest protocol, spoken inside one TLS 1.3 connection.
//!
//! Every frame is `length (u32 BE) | type (u8) | body | CRC32C (u32 BE)`,
//! where `length` counts everything after itself and the CRC covers type and
//! body. A frame longer than the receiver's `max_frame` is refused from its
//! length alone, before its body is read. TLS already protects the bytes in
//! transit; the CRC catches our own bugs and a flipped bit anywhere, cheaply.
//!
//! ```text
//! shipper                                  ingest
//!   Hello{min,max version, agent}  ──▶
//!                                  ◀──  Welcome{version, max_frame, window}
//!   Batch{blob} ×window            ──▶                      (produce to Kafka)
//!                                  ◀──  Ack{id} | Nack{id, retryable, reason}
//!   Ping{nonce}                    ──▶
//!                                  ◀──  Pong{nonce}
//!                                  ◀──  GoAway{reason}      (then close)
//! ```
//!
//! A `Batch` body is the batch blob of [`crate::batch`] as is, so ingest can
//! hand it to Kafka without re-encoding. Ingest answers every batch exactly
//! once, in any order; the shipper keeps at most `window` unanswered. The
//! codec ([`FrameCodec`]) plugs into `tokio_util::codec::Framed`; it
//! decodes only the frame layer, never the blob (see [`crate::batch::decode`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::batch::{self, BatchId};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Hello starts with this, so a stray client (HTTP, an old build) is told
/// apart from a version mismatch.
pub const HELLO_MAGIC: &[u8; 4] = b"SLCE";
/// Default largest frame: a generous batch (the blob) plus headroom.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

const TYPE_HELLO: u8 = 1;
const TYPE_WELCOME: u8 = 2;
const TYPE_BATCH: u8 = 3;
const TYPE_ACK: u8 = 4;
const TYPE_NACK: u8 = 5;
const TYPE_PING: u8 = 6;
const TYPE_PONG: u8 = 7;
const TYPE_GOAWAY: u8 = 8;

const CRC_LEN: usize = 4;

/// Longest reason or agent string carried in a frame.
const MAX_TEXT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        min_version: u16,
        max_version: u16,
        agent: String,
    },
    Welcome {
        version: u16,
        max_frame: u32,
        window: u32,
    },
    /// The body is a batch blob; see [`crate::batch`].
    Batch(Bytes),
    Ack(BatchId),
    Nack {
        id: BatchId,
        retryable: bool,
        reason: String,
    },
    Ping(u64),
    Pong(u64),
    GoAway(String),
}

impl Frame {
    /// The frame's type name, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Batch(_) => "Batch",
            Frame::Ack(_) => "Ack",
            Frame::Nack { .. } => "Nack",
            Frame::Ping(_) => "Ping",
            Frame::Pong(_) => "Pong",
            Frame::GoAway(_) => "GoAway",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge { len: usize, limit: usize },
    #[error("frame too short to hold a type and a CRC")]
    Empty,
    #[error("frame CRC32C mismatch: recorded {recorded:#010x}, computed {computed:#010x}")]
    Crc { recorded: u32, computed: u32 },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("{kind} frame body is malformed: {reason}")]
    Malformed {
        kind: &'static str,
        reason: &'static str,
    },
    #[error("hello does not start with the Sluice magic; not a Sluice client")]
    NotSluice,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Length-prefixed framing with a size limit, for `tokio_util::codec::Framed`.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some(len_bytes) = src.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        if len < 1 + CRC_LEN {
            return Err(WireError::Empty);
        }
        if len > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len,
                limit: self.max_frame,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut frame = src.split_to(len);
        let recorded = u32::from_be_bytes(frame[len - CRC_LEN..].try_into().expect("4 bytes"));
        frame.truncate(len - CRC_LEN);
        let computed = crc32c::crc32c(&frame);
        if recorded != computed {
            return Err(WireError::Crc { recorded, computed });
        }
        let kind = frame.get_u8();
        parse_body(kind, frame.freeze()).map(Some)
    }
}

fn parse_body(kind: u8, mut body: Bytes) -> Result<Frame, WireError> {
    let frame = match kind {
        TYPE_HELLO => {
            if body.len() < 8 {
                return Err(malformed("hello", "shorter than 8 bytes"));
            }
            if &body[..4] != HELLO_MAGIC {
                return Err(WireError::NotSluice);
            }
            body.advance(4);
            Frame::Hello {
                min_version: body.get_u16(),
                max_version: body.get_u16(),
                agent: take_text(&mut body, "hello")?,
            }
        }
        TYPE_WELCOME => {
            need(&body, 10, "welcome")?;
            Frame::Welcome {
                version: body.get_u16(),
                max_frame: body.get_u32(),
                window: body.get_u32(),
            }
        }
        TYPE_BATCH => {
            if body.len() < batch::HEADER_LEN {
                return Err(malformed("batch", "shorter than a batch header"));
            }
            Frame::Batch(body)
        }
        TYPE_ACK => {
            need(&body, 16, "ack")?;
            Frame::Ack(take_id(&mut body))
        }
        TYPE_NACK => {
            if body.len() < 17 {
                return Err(malformed("nack", "shorter than 17 bytes"));
            }
            let id = take_id(&mut body);
            let retryable = match body.get_u8() {
                0 => false,
                1 => true,
                _ => return Err(malformed("nack", "retryable flag is neither 0 nor 1")),
            };
            Frame::Nack {
                id,
                retryable,
                reason: take_text(&mut body, "nack")?,
            }
        }
        TYPE_PING => {
            need(&body, 8, "ping")?;
            Frame::Ping(body.get_u64())
        }
        TYPE_PONG => {
            need(&body, 8, "pong")?;
            Frame::Pong(body.get_u64())
        }
        TYPE_GOAWAY => Frame::GoAway(take_text(&mut body, "goaway")?),
        other => return Err(WireError::UnknownType(other)),
    };
    Ok(frame)
}

fn malformed(kind: &'static str, reason: &'static str) -> WireError {
    WireError::Malformed { kind, reason }
}

/// Fixed-size bodies must be exactly that size: trailing bytes mean the
/// peer and we disagree about the protocol.
fn need(body: &Bytes, len: usize, kind: &'static str) -> Result<(), WireError> {
    if body.len() == len {
        Ok(())
    } else {
        Err(malformed(kind, "wrong body length"))
    }
}

fn take_id(body: &mut Bytes) -> BatchId {
    BatchId {
        epoch: body.get_u64(),
        seq: body.get_u64(),
    }
}

fn take_text(body: &mut Bytes, kind: &'static str) -> Result<String, WireError> {
    if body.len() > MAX_TEXT {
        return Err(malformed(kind, "text longer than 4096 bytes"));
    }
    let text =
        String::from_utf8(body.to_vec()).map_err(|_| malformed(kind, "text is not UTF-8"))?;
    body.clear();
    Ok(text)
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        let start = dst.len();
        dst.put_u32(0); // patched below
        match frame {
            Frame::Hello {
                min_version,
                max_version,
                agent,
            } => {
                dst.put_u8(TYPE_HELLO);
                dst.put_slice(HELLO_MAGIC);
                dst.put_u16(min_version);
                dst.put_u16(max_version);
                put_text(dst, &agent);
            }
            Frame::Welcome {
                version,
                max_frame,
                window,
            } => {
                dst.put_u8(TYPE_WELCOME);
                dst.put_u16(version);
                dst.put_u32(max_frame);
                dst.put_u32(window);
            }
            Frame::Batch(blob) => {
                dst.put_u8(TYPE_BATCH);
                dst.put_slice(&blob);
            }
            Frame::Ack(id) => {
                dst.put_u8(TYPE_ACK);
                put_id(dst, id);
            }
            Frame::Nack {
                id,
                retryable,
                reason,
            } => {
                dst.put_u8(TYPE_NACK);
                put_id(dst, id);
                dst.put_u8(u8::from(retryable));
                put_text(dst, &reason);
            }
            Frame::Ping(nonce) => {
                dst.put_u8(TYPE_PING);
                dst.put_u64(nonce);
            }
            Frame::Pong(nonce) => {
                dst.put_u8(TYPE_PONG);
                dst.put_u64(nonce);
            }
            Frame::GoAway(reason) => {
                dst.put_u8(TYPE_GOAWAY);
                put_text(dst, &reason);
            }
        }
        let crc = crc32c::crc32c(&dst[start + 4..]);
        dst.put_u32(crc);
        let len = dst.len() - start - 4;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(WireError::FrameTooLarge {
                len,
                limit: self.max_frame,
            });
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

fn put_id(dst: &mut BytesMut, id: BatchId) {
    dst.put_u64(id.epoch);
    dst.put_u64(id.seq);
}

/// Truncates over-long text on a character boundary rather than failing:
/// reasons are for people, and a cut reason beats a lost frame.
fn put_text(dst: &mut BytesMut, text: &str) {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    dst.put_slice(&text.as_bytes()[..end]);
}
