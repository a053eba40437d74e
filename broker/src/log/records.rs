//! Record-level validation of a v2 batch, before the leader appends it.
//!
//! A batch can pass its CRC and still be unreadable: the CRC only proves the
//! bytes are the ones the client meant to send. Kafka's `LogValidator` walks
//! every record of a produced batch before assigning offsets; so does this
//! module, so that one bad client cannot poison a partition for every consumer
//! after it. It checks:
//!
//! - the control and transactional bits are clear (Rivulet has no
//!   transactions yet, so nobody may write their markers);
//! - a compressed batch decompresses with its codec — gzip, snappy (raw or
//!   xerial-framed, as Kafka's Java client writes it), lz4 frames, zstd — to
//!   at most [`MAX_DECOMPRESSED_BATCH_BYTES`];
//! - exactly `record count` records follow, each with sound framing: varints
//!   of legal length, a length that matches its fields, key and value lengths
//!   of `-1` (null) or more that stay inside the record, header keys present
//!   and UTF-8 (the consumers' decoder insists), offset deltas `0, 1, 2, …`
//!   (consumers compute offsets from them and the broker never rewrites
//!   records), timestamps that do not overflow;
//! - nothing follows the last record.
//!
//! It allocates nothing per record: an uncompressed batch is walked in place,
//! and a compressed one is streamed through a fixed 16 KiB window, so a
//! decompression bomb costs CPU up to the cap and no memory.

use std::io::{self, Read};

use super::batch::{BatchHeader, HEADER_LEN};

/// The most bytes one batch may decompress to. Memory is not the reason (the
/// walk streams); the cap bounds the CPU one batch can cost and the size a
/// consumer must be ready to inflate.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const WINDOW: usize = 16 << 10;
/// Largest zstd window accepted (2^24 = 16 MiB): what the reference encoder
/// uses up to level 19 for inputs of this size, and a bound on decoder memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Why a batch's contents were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsError {
    /// The bytes do not parse: broken framing, undecompressable data
    /// (Kafka's `CORRUPT_MESSAGE`).
    Corrupt(String),
    /// The bytes parse but break a rule (Kafka's `INVALID_RECORD`).
    Invalid(String),
}

fn corrupt(reason: impl Into<String>) -> RecordsError {
    RecordsError::Corrupt(reason.into())
}

fn invalid(reason: impl Into<String>) -> RecordsError {
    RecordsError::Invalid(reason.into())
}

/// Validates the records of `batch` (one whole batch whose header and CRC
/// [`validate`](super::batch::validate) has already checked into `header`).
/// `inflate_left` is what the records of a compressed batch may still
/// decompress to (shared by the batches of one append); it is reduced by
/// what this batch used.
pub fn validate_records(
    batch: &[u8],
    header: &BatchHeader,
    inflate_left: &mut usize,
) -> Result<(), RecordsError> {
    if header.attributes & CONTROL_BIT != 0 {
        return Err(invalid(
            "control batches are written by the broker only (no transactions yet)",
        ));
    }
    if header.attributes & TRANSACTIONAL_BIT != 0 {
        return Err(invalid(
            "transactional batches are not supported yet (no transactions)",
        ));
    }
    let body = &batch[HEADER_LEN..];
    match header.compression_codec() {
        0 => walk(&mut SliceSource { b: body, pos: 0 }, header),
        1 => walk_stream(
            flate2::read::GzDecoder::new(body),
            header,
            "gzip",
            inflate_left,
        ),
        2 => walk_stream(SnappyReader::new(body), header, "snappy", inflate_left),
        3 => {
            let d = lz4::Decoder::new(body)
                .map_err(|e| corrupt(format!("lz4 data does not decompress: {e}")))?;
            walk_stream(d, header, "lz4", inflate_left)
        }
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| corrupt(format!("zstd data does not decompress: {e}")))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt(format!("zstd decoder: {e}")))?;
            walk_stream(d, header, "zstd", inflate_left)
        }
        c => Err(corrupt(format!("unknown compression codec {c}"))),
    }
}

fn walk_stream<R: Read>(
    r: R,
    header: &BatchHeader,
    codec: &'static str,
    inflate_left: &mut usize,
) -> Result<(), RecordsError> {
    let mut src = ReadSource {
        r,
        codec,
        buf: vec![0; WINDOW],
        start: 0,
        end: 0,
        consumed: 0,
        inflated: 0,
        limit: *inflate_left,
    };
    let r = walk(&mut src, header);
    *inflate_left = inflate_left.saturating_sub(src.inflated);
    r
}

/// Where record bytes come from: the batch itself, or a decompressor.
trait Source {
    fn byte(&mut self) -> Result<u8, RecordsError>;
    fn skip(&mut self, n: usize) -> Result<(), RecordsError>;
    /// Consumes `n` bytes; whether they are UTF-8.
    fn utf8(&mut self, n: usize) -> Result<bool, RecordsError>;
    fn at_end(&mut self) -> Result<bool, RecordsError>;
    /// Bytes consumed so far.
    fn consumed(&self) -> usize;
}

const TRUNCATED: &str = "records end before the record count says";

struct SliceSource<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Source for SliceSource<'_> {
    fn byte(&mut self) -> Result<u8, RecordsError> {
        let b = *self.b.get(self.pos).ok_or_else(|| corrupt(TRUNCATED))?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), RecordsError> {
        if self.b.len() - self.pos < n {
            return Err(corrupt(TRUNCATED));
        }
        self.pos += n;
        Ok(())
    }

    fn utf8(&mut self, n: usize) -> Result<bool, RecordsError> {
        let at = self.pos;
        self.skip(n)?;
        Ok(std::str::from_utf8(&self.b[at..at + n]).is_ok())
    }

    fn at_end(&mut self) -> Result<bool, RecordsError> {
        Ok(self.pos == self.b.len())
    }

    fn consumed(&self) -> usize {
        self.pos
    }
}

struct ReadSource<R> {
    r: R,
    codec: &'static str,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    consumed: usize,
    inflated: usize,
    /// The most it may inflate to.
    limit: usize,
}

impl<R: Read> ReadSource<R> {
    /// Refills the window; `false` at the end of the decompressed stream.
    fn fill(&mut self) -> Result<bool, RecordsError> {
        debug_assert_eq!(self.start, self.end);
        let n = loop {
            match self.r.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(corrupt(format!(
                        "{} data does not decompress: {e}",
                        self.codec
                    )))
                }
            }
        };
        self.inflated += n;
        if self.inflated > self.limit {
            return Err(invalid(format!(
                "the {} batch decompresses to more than {} MiB (with the batches before it in \
                 the same entry)",
                self.codec,
                MAX_DECOMPRESSED_BATCH_BYTES >> 20
            )));
        }
        self.start = 0;
        self.end = n;
        Ok(n > 0)
    }
}

impl<R: Read> Source for ReadSource<R> {
    fn byte(&mut self) -> Result<u8, RecordsError> {
        if self.start == self.end && !self.fill()? {
            return Err(corrupt(TRUNCATED));
        }
        let b = self.buf[self.start];
        self.start += 1;
        self.consumed += 1;
        Ok(b)
    }

    fn skip(&mut self, mut n: usize) -> Result<(), RecordsError> {
        while n > 0 {
            if self.start == self.end && !self.fill()? {
                return Err(corrupt(TRUNCATED));
            }
            let take = n.min(self.end - self.start);
            self.start += take;
            self.consumed += take;
            n -= take;
        }
        Ok(())
    }

    fn utf8(&mut self, n: usize) -> Result<bool, RecordsError> {
        // Chunk by chunk, carrying a character split between windows (at
        // most 3 bytes): no copy of the key, however long.
        let mut carry = [0u8; 4];
        let mut carried = 0usize;
        let mut ok = true;
        let mut left = n;
        while left > 0 {
            if self.start == self.end && !self.fill()? {
                return Err(corrupt(TRUNCATED));
            }
            let take = left.min(self.end - self.start);
            let mut chunk = &self.buf[self.start..self.start + take];
            self.start += take;
            self.consumed += take;
            left -= take;
            if !ok {
                continue;
            }
            // Finish a carried character with the chunk's first bytes.
            while carried > 0 && !chunk.is_empty() {
                carry[carried] = chunk[0];
                carried += 1;
                chunk = &chunk[1..];
                match std::str::from_utf8(&carry[..carried]) {
                    Ok(_) => carried = 0,
                    Err(e) if e.error_len().is_none() && carried < 4 => {}
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            match std::str::from_utf8(chunk) {
                Ok(_) => {}
                Err(e) if e.error_len().is_none() => {
                    let tail = &chunk[e.valid_up_to()..];
                    carry[..tail.len()].copy_from_slice(tail);
                    carried = tail.len();
                }
                Err(_) => ok = false,
            }
        }
        Ok(ok && carried == 0)
    }

    fn at_end(&mut self) -> Result<bool, RecordsError> {
        Ok(self.start == self.end && !self.fill()?)
    }

    fn consumed(&self) -> usize {
        self.consumed
    }
}

fn varint<S: Source>(s: &mut S) -> Result<i32, RecordsError> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let b = s.byte()?;
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i32) ^ -((v & 1) as i32));
        }
    }
    Err(corrupt("a varint is longer than 5 bytes"))
}

fn varlong<S: Source>(s: &mut S) -> Result<i64, RecordsError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = s.byte()?;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err(corrupt("a varlong is longer than 10 bytes"))
}

/// A length-prefixed byte field (`-1` is null) that must end by `end`.
fn bytes_field<S: Source>(
    s: &mut S,
    end: usize,
    record: i32,
    what: &str,
) -> Result<(), RecordsError> {
    let len = varint(s)?;
    if len < -1 {
        return Err(corrupt(format!("record {record}: {what} length is {len}")));
    }
    if len > 0 {
        let len = len as usize;
        if s.consumed() + len > end {
            return Err(corrupt(format!(
                "record {record}: {what} of {len} bytes runs past the end of the record"
            )));
        }
        s.skip(len)?;
    }
    Ok(())
}

/// Walks `header.record_count` records and checks nothing follows.
fn walk<S: Source>(s: &mut S, header: &BatchHeader) -> Result<(), RecordsError> {
    for i in 0..header.record_count {
        let len = varint(s)?;
        if len < 0 {
            return Err(corrupt(format!("record {i}: negative length {len}")));
        }
        let start = s.consumed();
        let end = start + len as usize;
        let _attributes = s.byte()?;
        let timestamp_delta = varlong(s)?;
        if header
            .first_timestamp
            .checked_add(timestamp_delta)
            .is_none()
        {
            return Err(invalid(format!(
                "record {i}: timestamp delta {timestamp_delta} overflows"
            )));
        }
        let offset_delta = varint(s)?;
        if offset_delta != i {
            return Err(invalid(format!(
                "record {i} has offset delta {offset_delta}: offset deltas must run 0, 1, 2, ..."
            )));
        }
        bytes_field(s, end, i, "key")?;
        bytes_field(s, end, i, "value")?;
        let headers = varint(s)?;
        if headers < 0 {
            return Err(corrupt(format!("record {i}: header count is {headers}")));
        }
        for _ in 0..headers {
            let key_len = varint(s)?;
            if key_len < 0 {
                return Err(invalid(format!("record {i}: a header has no key")));
            }
            let key_len = key_len as usize;
            if s.consumed() + key_len > end {
                return Err(corrupt(format!(
                    "record {i}: a header key runs past the end of the record"
                )));
            }
            if !s.utf8(key_len)? {
                return Err(invalid(format!("record {i}: a header key is not UTF-8")));
            }
            bytes_field(s, end, i, "header value")?;
        }
        if s.consumed() != end {
            return Err(corrupt(format!(
                "record {i}: its length says {len} bytes but its fields take {}",
                s.consumed() - start
            )));
        }
    }
    if !s.at_end()? {
        return Err(corrupt(format!(
            "bytes follow the last of the {} records the header counts",
            header.record_count
        )));
    }
    Ok(())
}

/// Snappy as Kafka clients write it: xerial-framed blocks (the Java client)
/// or one raw block (older librdkafka); Kafka's broker reads both.
struct SnappyReader<'a> {
    input: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    pos: usize,
}

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        let framed = input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC);
        Self {
            input: if framed {
                &input[XERIAL_HEADER_LEN..]
            } else {
                input
            },
            framed,
            block: Vec::new(),
            pos: 0,
        }
    }

    fn next_block(&mut self) -> io::Result<bool> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            if self.input.len() < 4 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated block length",
                ));
            }
            let len =
                u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]])
                    as usize;
            let rest = &self.input[4..];
            if len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "block runs past the end of the batch",
                ));
            }
            let (block, rest) = rest.split_at(len);
            self.input = rest;
            block
        } else {
            std::mem::take(&mut self.input)
        };
        let n = snap::raw::decompress_len(compressed)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Snappy cannot expand more than ~21x (its best copy is 3 bytes for
        // 64): a block claiming more is refused before any allocation.
        if n > compressed.len().saturating_mul(22).saturating_add(32) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a block of {} bytes claims {n} bytes, more than snappy can expand to",
                    compressed.len()
                ),
            ));
        }
        if n > MAX_DECOMPRESSED_BATCH_BYTES {
            // Refused before allocating; the caller reports the cap.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a block claims {n} bytes, more than the {} MiB a batch may hold",
                    MAX_DECOMPRESSED_BATCH_BYTES >> 20
                ),
            ));
        }
        self.block.resize(n, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::super::batch::validate;
    use super::*;

    fn records(n: usize, value: &[u8]) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1_000 + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::copy_from_slice(value)),
                headers: [("h".into(), Some(Bytes::from_static(b"v")))].into(),
            })
            .collect()
    }

    fn encode(recs: &[Record], compression: Compression) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            recs,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn lz4_frame(body: &[u8]) -> Vec<u8> {
        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        e.write_all(body).unwrap();
        let (out, r) = e.finish();
        r.unwrap();
        out
    }

    fn zstd_frame(body: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(body, 3).unwrap()
    }

    fn check(b: &[u8]) -> Result<(), RecordsError> {
        let h = validate(b).expect("header and CRC are valid");
        validate_records(b, &h, &mut MAX_DECOMPRESSED_BATCH_BYTES.clone())
    }

    /// Replaces the records region (and fixes length, attributes and CRC),
    /// as a client that computes its CRC over garbage would.
    fn with_body(template: &[u8], codec: i16, body: &[u8]) -> Vec<u8> {
        let mut b = template[..HEADER_LEN].to_vec();
        b.extend_from_slice(body);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let attrs = (i16::from_be_bytes([b[21], b[22]]) & !0x7) | codec;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
        recrc(&mut b);
        b
    }

    fn recrc(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    fn set_attrs(b: &mut [u8], bits: i16) {
        let attrs = i16::from_be_bytes([b[21], b[22]]) | bits;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
        recrc(b);
    }

    #[test]
    fn valid_batches_of_every_codec_pass() {
        let recs = records(50, b"a value that compresses, a value that compresses");
        let plain = encode(&recs, Compression::None);
        assert_eq!(check(&plain), Ok(()));
        let body = &plain[HEADER_LEN..];
        assert_eq!(check(&with_body(&plain, 3, &lz4_frame(body))), Ok(()));
        assert_eq!(check(&with_body(&plain, 4, &zstd_frame(body))), Ok(()));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body).unwrap();
        assert_eq!(check(&with_body(&plain, 1, &gz.finish().unwrap())), Ok(()));
        let raw = snap::raw::Encoder::new().compress_vec(body).unwrap();
        assert_eq!(check(&with_body(&plain, 2, &raw)), Ok(()), "raw snappy");
        // Xerial framing, blocks of 100 bytes so records straddle blocks.
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in body.chunks(100) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            framed.extend_from_slice(&(c.len() as u32).to_be_bytes());
            framed.extend_from_slice(&c);
        }
        assert_eq!(check(&with_body(&plain, 2, &framed)), Ok(()), "xerial");
    }

    #[test]
    fn records_straddling_the_stream_window_pass() {
        // Values and header keys larger than the 16 KiB window.
        let mut recs = records(3, &vec![7u8; 40_000]);
        recs[1].headers = [
            (String::from_utf8(vec![b'k'; 20_000]).unwrap().into(), None),
            // Two-, three- and four-byte characters across window edges.
            ("é€😀".repeat(5_000).into(), Some(Bytes::from_static(b"v"))),
        ]
        .into();
        let plain = encode(&recs, Compression::None);
        let body = &plain[HEADER_LEN..];
        assert_eq!(check(&with_body(&plain, 3, &lz4_frame(body))), Ok(()));
        assert_eq!(check(&with_body(&plain, 4, &zstd_frame(body))), Ok(()));
    }

    #[test]
    fn compression_bits_over_plain_records_are_corrupt() {
        let plain = encode(&records(5, b"v"), Compression::None);
        for codec in 1..=4 {
            let b = with_body(&plain, codec, &plain[HEADER_LEN..]);
            assert!(
                matches!(check(&b), Err(RecordsError::Corrupt(_))),
                "codec {codec}: {:?}",
                check(&b)
            );
        }
    }

    #[test]
    fn garbage_records_are_corrupt() {
        let plain = encode(&records(5, b"v"), Compression::None);
        for garbage in [&[0xffu8; 40][..], &[0u8; 3][..], &[][..]] {
            assert!(matches!(
                check(&with_body(&plain, 0, garbage)),
                Err(RecordsError::Corrupt(_))
            ));
        }
        // Trailing bytes after the last record.
        let mut body = plain[HEADER_LEN..].to_vec();
        body.push(0);
        assert!(check(&with_body(&plain, 0, &body)).is_err());
        // One record fewer than the count says.
        let two = encode(&records(2, b"v"), Compression::None);
        let one = encode(&records(1, b"v"), Compression::None);
        assert!(check(&with_body(&two, 0, &one[HEADER_LEN..])).is_err());
    }

    #[test]
    fn every_truncation_and_byte_flip_of_the_records_is_refused_or_harmless() {
        // Flipping any byte of the records region either is refused, or
        // yields records kafka-protocol (the consumers' decoder) can decode.
        let plain = encode(&records(3, b"value"), Compression::None);
        for i in HEADER_LEN..plain.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut body = plain[HEADER_LEN..].to_vec();
                body[i - HEADER_LEN] ^= flip;
                let b = with_body(&plain, 0, &body);
                if check(&b).is_ok() {
                    let mut bytes = Bytes::from(b);
                    kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
                        .unwrap_or_else(|e| {
                            panic!("accepted at {i}^{flip:#x} but undecodable: {e}")
                        });
                }
            }
        }
        for cut in HEADER_LEN..plain.len() {
            assert!(check(&with_body(&plain, 0, &plain[HEADER_LEN..cut])).is_err());
        }
    }

    #[test]
    fn garbage_compressed_data_is_corrupt() {
        let plain = encode(&records(5, b"v"), Compression::None);
        for codec in 1..=4 {
            let b = with_body(&plain, codec, &[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5]);
            assert!(
                matches!(check(&b), Err(RecordsError::Corrupt(_))),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn control_and_transactional_bits_are_invalid() {
        let plain = encode(&records(1, b"v"), Compression::None);
        for bit in [CONTROL_BIT, TRANSACTIONAL_BIT] {
            let mut b = plain.clone();
            set_attrs(&mut b, bit);
            assert!(matches!(check(&b), Err(RecordsError::Invalid(_))));
        }
    }

    fn zigzag(out: &mut Vec<u8>, v: i64) {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// One record's bytes, written by hand.
    fn raw_record(offset_delta: i64, value: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8]; // attributes
        zigzag(&mut body, 0); // timestamp delta
        zigzag(&mut body, offset_delta);
        zigzag(&mut body, -1); // null key
        zigzag(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        zigzag(&mut body, 0); // no headers
        let mut r = Vec::new();
        zigzag(&mut r, body.len() as i64);
        r.extend_from_slice(&body);
        r
    }

    #[test]
    fn non_sequential_offset_deltas_are_invalid() {
        let three = encode(&records(3, b"v"), Compression::None);
        let mut body = raw_record(0, b"a");
        body.extend(raw_record(1, b"b"));
        assert!(check(&with_body(&three, 0, &body)).is_err(), "two of three");
        body.extend(raw_record(2, b"c"));
        assert_eq!(check(&with_body(&three, 0, &body)), Ok(()), "hand-written");
        let mut body = raw_record(0, b"a");
        body.extend(raw_record(1, b"b"));
        body.extend(raw_record(7, b"c"));
        assert!(matches!(
            check(&with_body(&three, 0, &body)),
            Err(RecordsError::Invalid(_))
        ));
    }

    #[test]
    fn non_utf8_header_keys_are_invalid() {
        let plain = encode(&records(1, b"v"), Compression::None);
        let mut body = plain[HEADER_LEN..].to_vec();
        // The record ends with: header count 1, key len 1, 'h', value len 1, 'v'.
        let at = body.len() - 3;
        assert_eq!(body[at], b'h');
        body[at] = 0xff;
        assert!(matches!(
            check(&with_body(&plain, 0, &body)),
            Err(RecordsError::Invalid(_))
        ));
    }

    #[test]
    fn a_broken_character_in_a_long_compressed_header_key_is_invalid() {
        let mut recs = records(1, b"v");
        recs[0].headers = [("é".repeat(9_000).into(), Some(Bytes::from_static(b"v")))].into();
        let plain = encode(&recs, Compression::None);
        let mut body = plain[HEADER_LEN..].to_vec();
        let key_at = body
            .windows(4)
            .position(|w| w == "éé".as_bytes())
            .expect("the key is in the record");
        // A continuation byte of a character in the key's second window.
        assert_eq!(body[key_at + 16_001], 0xa9);
        body[key_at + 16_001] = 0xff;
        assert!(matches!(
            check(&with_body(&plain, 4, &zstd_frame(&body))),
            Err(RecordsError::Invalid(_))
        ));
        assert!(matches!(
            check(&with_body(&plain, 0, &body)),
            Err(RecordsError::Invalid(_))
        ));
    }

    #[test]
    fn the_cap_is_shared_by_the_batches_of_one_append() {
        // Two batches of one entry, each inflating to 40 MiB: each alone is
        // under the cap, together they are not (a request of many small
        // bombs cannot buy unbounded CPU).
        let plain = encode(&records(1, b"v"), Compression::None);
        let big = vec![0u8; 40 << 20];
        let bomb = zstd_frame(&raw_record(0, &big));
        drop(big);
        let one = with_body(&plain, 4, &bomb);
        assert_eq!(check(&one), Ok(()));
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let leader = crate::log::batch::AppendOrigin::Leader { epoch: 1 };
        assert!(crate::log::batch::validate_leader_contents(&one, leader).is_ok());
        let r = crate::log::batch::validate_leader_contents(&two, leader);
        assert!(
            matches!(&r, Err(crate::log::LogError::InvalidRecord { reason, .. }) if reason.contains("same entry")),
            "{r:?}"
        );
        // Replica appends are not walked again.
        let replica = crate::log::batch::AppendOrigin::Replica;
        assert!(crate::log::batch::validate_leader_contents(&two, replica).is_ok());
    }

    #[test]
    fn decompression_bombs_stop_at_the_cap() {
        let plain = encode(&records(1, b"v"), Compression::None);
        // One well-framed record whose value is larger than the cap: the
        // walk streams through it and stops at the cap, allocating nothing.
        let big = vec![0u8; MAX_DECOMPRESSED_BATCH_BYTES + (1 << 20)];
        let record = raw_record(0, &big);
        drop(big);
        let bomb = zstd::stream::encode_all(&record[..], 3).unwrap();
        drop(record);
        assert!(bomb.len() < 1 << 20, "a bomb: {} bytes", bomb.len());
        let r = check(&with_body(&plain, 4, &bomb));
        assert!(
            matches!(&r, Err(RecordsError::Invalid(m)) if m.contains("more than 64 MiB")),
            "{r:?}"
        );
        // Snappy: a raw block claiming more than the cap is refused unread.
        let mut claim = Vec::new();
        let mut n = (MAX_DECOMPRESSED_BATCH_BYTES + 1) as u64;
        while n >= 0x80 {
            claim.push((n as u8) | 0x80);
            n >>= 7;
        }
        claim.push(n as u8);
        claim.extend_from_slice(&[0u8; 8]);
        assert!(matches!(
            check(&with_body(&plain, 2, &claim)),
            Err(RecordsError::Corrupt(_))
        ));
    }
}
