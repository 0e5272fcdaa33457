//! The spool's bytes: the segment header and the three record kinds, encoded
//! and decoded, and the scan that reads a segment back record by record.
//! The layout is described in the [parent module](super).

use std::fs::File;
use std::io::{self, BufReader, Read};

use schemas::BatchId;

/// At the start of every segment file: magic and format version.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SLSPOOL\x01";
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;
/// `len u32 | crc32c u32` in front of every record's body.
pub const RECORD_HEADER_LEN: u64 = 8;
/// Bytes of a whole `settled` record.
pub const SETTLED_LEN: u64 = RECORD_HEADER_LEN + 1 + 8;

const BATCH: u8 = 1;
const POSITION: u8 = 2;
const SETTLED: u8 = 3;
/// epoch, seq, record count, position length.
const BATCH_FIXED: usize = 8 + 8 + 4 + 4;

/// A decoded record body (what follows `len | crc`).
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A sealed batch, with the whole reading position after its last line.
    Batch {
        id: BatchId,
        records: u32,
        position: &'a [u8],
        blob: &'a [u8],
    },
    /// Reading progress not tied to a batch (malformed lines, files opened
    /// or closed), and the seq the next batch gets.
    Position { next_seq: u64, position: &'a [u8] },
    /// Ingest answered this batch for good.
    Settled { seq: u64 },
}

/// Encodes a batch record into `out`, all but the blob, which the caller
/// writes right after (it is not copied).
pub fn encode_batch(out: &mut Vec<u8>, id: BatchId, records: u32, position: &[u8], blob: &[u8]) {
    start(out, BATCH);
    out.extend_from_slice(&id.epoch.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
    out.extend_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&len_u32(position.len()).to_le_bytes());
    out.extend_from_slice(position);
    finish(out, blob);
}

pub fn encode_position(out: &mut Vec<u8>, next_seq: u64, position: &[u8]) {
    start(out, POSITION);
    out.extend_from_slice(&next_seq.to_le_bytes());
    out.extend_from_slice(position);
    finish(out, &[]);
}

pub fn encode_settled(out: &mut Vec<u8>, seq: u64) {
    start(out, SETTLED);
    out.extend_from_slice(&seq.to_le_bytes());
    finish(out, &[]);
}

fn start(out: &mut Vec<u8>, kind: u8) {
    out.clear();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN as usize]);
    out.push(kind);
}

/// Fills in `len` and `crc` for the body in `out[8..]` followed by `tail`.
fn finish(out: &mut [u8], tail: &[u8]) {
    let body = &out[RECORD_HEADER_LEN as usize..];
    let len = len_u32(body.len() + tail.len());
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), tail);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn len_u32(len: usize) -> u32 {
    // Batches are at most 64 MiB (config), positions a few KiB.
    u32::try_from(len).expect("a spool record is smaller than 4 GiB")
}

/// Decodes a body whose CRC matched. `Err` says what is wrong with it.
pub fn decode(body: &[u8]) -> Result<Record<'_>, String> {
    let (&kind, rest) = body.split_first().ok_or("empty record")?;
    let u64_at = |at: usize| -> Result<u64, String> {
        rest.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| format!("record of kind {kind} is {} bytes, too short", body.len()))
    };
    match kind {
        BATCH => {
            if rest.len() < BATCH_FIXED {
                return Err(format!("batch record is {} bytes, too short", body.len()));
            }
            let u32_at = |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().expect("4"));
            let position_len = u32_at(20) as usize;
            let (position, blob) = rest[BATCH_FIXED..]
                .split_at_checked(position_len)
                .ok_or_else(|| {
                    format!("batch record's position ({position_len} bytes) overruns it")
                })?;
            Ok(Record::Batch {
                id: BatchId {
                    epoch: u64_at(0)?,
                    seq: u64_at(8)?,
                },
                records: u32_at(16),
                position,
                blob,
            })
        }
        POSITION => Ok(Record::Position {
            next_seq: u64_at(0)?,
            position: &rest[8..],
        }),
        SETTLED if rest.len() == 8 => Ok(Record::Settled { seq: u64_at(0)? }),
        SETTLED => Err(format!("settled record is {} bytes, not 9", body.len())),
        other => Err(format!("unknown record kind {other}")),
    }
}

/// Checks a whole record read back from disk (`len | crc | body`) and
/// returns its body.
pub fn verify(record: &[u8]) -> Result<&[u8], String> {
    let header = record
        .get(..RECORD_HEADER_LEN as usize)
        .ok_or("record shorter than its header")?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
    let body = &record[RECORD_HEADER_LEN as usize..];
    if body.len() != len {
        return Err(format!(
            "record length {len} where {} was expected",
            body.len()
        ));
    }
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Err(format!(
            "CRC32C mismatch: recorded {crc:#010x}, computed {actual:#010x}"
        ));
    }
    Ok(body)
}

/// What [`Scanner::next`] found at an offset.
#[derive(Debug)]
pub enum Scanned {
    /// A record whose CRC matched; its body is in the scanner's buffer.
    Record { offset: u64, len: u64 },
    /// The end of the segment, exactly after the last record.
    End,
    /// A record that cannot be read. `at_tail`: nothing valid follows it —
    /// it runs past the end of the file, is the last thing in it, or only
    /// zeros follow — so it is what a write cut short by a crash leaves.
    Bad {
        offset: u64,
        reason: String,
        at_tail: bool,
    },
}

/// Reads one segment's records in order, without loading the file whole.
pub struct Scanner {
    reader: BufReader<File>,
    size: u64,
    pos: u64,
    body: Vec<u8>,
}

impl Scanner {
    /// `file` positioned just after the segment header; `size` its length.
    pub fn new(file: File, size: u64) -> Scanner {
        Scanner {
            reader: BufReader::with_capacity(256 << 10, file),
            size,
            pos: SEGMENT_HEADER_LEN,
            body: Vec::new(),
        }
    }

    /// The body of the record last returned.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn next(&mut self) -> io::Result<Scanned> {
        let offset = self.pos;
        let left = self.size - offset;
        if left == 0 {
            return Ok(Scanned::End);
        }
        if left < RECORD_HEADER_LEN {
            return Ok(Scanned::Bad {
                offset,
                reason: format!("{left} bytes left, shorter than a record header"),
                at_tail: true,
            });
        }
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        self.reader.read_exact(&mut header)?;
        let len = u64::from(u32::from_le_bytes(header[0..4].try_into().expect("4")));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
        let end = offset + RECORD_HEADER_LEN + len;
        if len == 0 || end > self.size {
            let rest_zero = self.rest_is_zero(&header)?;
            let reason = if len == 0 {
                "record of length 0".to_owned()
            } else {
                format!("record of {len} bytes runs past the end of the file")
            };
            return Ok(Scanned::Bad {
                offset,
                reason,
                at_tail: end > self.size || rest_zero,
            });
        }
        // `len` is within the file's size: no allocation beyond it.
        self.body.resize(len as usize, 0);
        self.reader.read_exact(&mut self.body)?;
        let actual = crc32c::crc32c(&self.body);
        self.pos = end;
        if actual != crc {
            let at_tail = end == self.size || self.rest_is_zero(&[])?;
            return Ok(Scanned::Bad {
                offset,
                reason: format!("CRC32C mismatch: recorded {crc:#010x}, computed {actual:#010x}"),
                at_tail,
            });
        }
        Ok(Scanned::Record {
            offset,
            len: RECORD_HEADER_LEN + len,
        })
    }

    /// Whether `already` and every byte after the reader's position are zero
    /// (what a file extended but never written looks like after a crash).
    fn rest_is_zero(&mut self, already: &[u8]) -> io::Result<bool> {
        if already.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.reader.read(&mut chunk)?;
            if n == 0 {
                return Ok(true);
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(head: &[u8], tail: &[u8]) -> Vec<u8> {
        [head, tail].concat()
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        let id = BatchId { epoch: 9, seq: 42 };
        encode_batch(&mut buf, id, 7, b"[1]", b"blob bytes");
        let rec = whole(&buf, b"blob bytes");
        let body = verify(&rec).unwrap();
        assert_eq!(
            decode(body).unwrap(),
            Record::Batch {
                id,
                records: 7,
                position: b"[1]",
                blob: b"blob bytes"
            }
        );
        encode_position(&mut buf, 43, b"[]");
        assert_eq!(
            decode(verify(&buf).unwrap()).unwrap(),
            Record::Position {
                next_seq: 43,
                position: b"[]"
            }
        );
        encode_settled(&mut buf, 42);
        assert_eq!(buf.len() as u64, SETTLED_LEN);
        assert_eq!(
            decode(verify(&buf).unwrap()).unwrap(),
            Record::Settled { seq: 42 }
        );
    }

    #[test]
    fn damage_is_reported_not_panicked_on() {
        let mut buf = Vec::new();
        encode_batch(&mut buf, BatchId { epoch: 1, seq: 1 }, 1, b"[]", b"xyz");
        let mut rec = whole(&buf, b"xyz");
        let last = rec.len() - 1;
        rec[last] ^= 1;
        assert!(verify(&rec).unwrap_err().contains("CRC32C"));
        assert!(verify(&rec[..5]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[BATCH, 1, 2]).unwrap_err().contains("too short"));
        let mut lying = vec![BATCH];
        lying.extend_from_slice(&[0; 20]);
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&lying).unwrap_err().contains("overruns"));
        assert!(decode(&[SETTLED, 1]).is_err());
        assert!(decode(&[99]).unwrap_err().contains("unknown"));
    }
}
