//! `FrameCodec::decode` on an arbitrary byte stream, as a connection would
//! deliver it.
//!
//! Input: `limit | chunking | stream…`. `limit` picks the codec's
//! `max_frame` (a small one when `limit % 4 == 0`, so over-long frames are
//! common, else the default); `chunking` seeds how the stream is cut into
//! reads. The stream is decoded twice, in one piece and in chunks, to its end
//! (`decode_eof`). Checked:
//! * nothing panics;
//! * `Ok(None)` consumes nothing, and consumed + buffered == delivered;
//! * every decoded frame encodes to exactly the bytes it was decoded from
//!   (true by design for every frame type: no field has two encodings);
//! * how the stream was cut changes nothing: same frames, same final error.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use schemas::wire::DEFAULT_MAX_FRAME;
use schemas::{Frame, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let Some(([limit, chunking], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_frame = if limit % 4 == 0 {
        5 + usize::from(limit / 4)
    } else {
        DEFAULT_MAX_FRAME
    };
    let whole = decode_stream(stream, max_frame, Chunks::whole());
    let chunked = decode_stream(stream, max_frame, Chunks::seeded(*chunking));
    assert_eq!(whole, chunked, "cutting the stream changed the outcome");
});

/// All a decoder made of one stream: its frames, then how it ended.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    /// `None`: every byte was a frame. Otherwise the error's message.
    error: Option<String>,
}

fn decode_stream(stream: &[u8], max_frame: usize, mut chunks: Chunks) -> Outcome {
    let mut codec = FrameCodec::new(max_frame);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let (mut delivered, mut consumed) = (0, 0);
    loop {
        let at_eof = delivered == stream.len();
        if !at_eof {
            let n = chunks.next().min(stream.len() - delivered);
            buf.extend_from_slice(&stream[delivered..delivered + n]);
            delivered += n;
        }
        loop {
            let before = buf.len();
            let result = if at_eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match result {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    let wire = &stream[consumed..consumed + used];
                    assert_eq!(encode(&frame, max_frame), wire, "{frame:?} re-encoded");
                    consumed += used;
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e.to_string()),
                    }
                }
            }
        }
        assert_eq!(consumed + buf.len(), delivered, "bytes lost or invented");
        if at_eof {
            return Outcome {
                frames,
                error: None,
            };
        }
    }
}

fn encode(frame: &Frame, max_frame: usize) -> BytesMut {
    let mut out = BytesMut::new();
    FrameCodec::new(max_frame)
        .encode(frame.clone(), &mut out)
        .expect("a frame that decoded under max_frame encodes under it");
    out
}

/// Read sizes: one read of everything, or a xorshift sequence of sizes in
/// `1..=seed`.
struct Chunks {
    state: u32,
    max: usize,
}

impl Chunks {
    fn whole() -> Self {
        Chunks {
            state: 1,
            max: usize::MAX,
        }
    }

    fn seeded(seed: u8) -> Self {
        Chunks {
            state: u32::from(seed) | 0x100,
            max: usize::from(seed).max(1),
        }
    }

    fn next(&mut self) -> usize {
        if self.max == usize::MAX {
            return usize::MAX;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.max
    }
}
