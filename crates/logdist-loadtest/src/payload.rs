//! The seed payload format: `<emitter_id>:<unix_nanos>:<counter>:<padding><checksum>`.
//!
//! The checksum covers everything before it and is lowercase hex: 64 characters of
//! SHA-256 by default (what the seed analyzers check), or 16 characters of 64-bit
//! FNV-1a when hashing cost matters more than compatibility.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    /// 64 hex characters of SHA-256 (seed-compatible).
    #[default]
    Sha256,
    /// 16 hex characters of 64-bit FNV-1a (cheap).
    Fnv,
}

impl ChecksumKind {
    /// Length of the hex checksum at the end of every payload.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumKind::Sha256 => 64,
            ChecksumKind::Fnv => 16,
        }
    }

    /// Append the hex checksum of everything in `out` to it.
    pub fn append_hex(self, out: &mut Vec<u8>) {
        let mut hex = [0u8; 64];
        let n = self.hex_into(out, &mut hex);
        out.extend_from_slice(&hex[..n]);
    }

    /// Write the hex checksum of `body` into `hex`; returns its length.
    fn hex_into(self, body: &[u8], hex: &mut [u8; 64]) -> usize {
        match self {
            ChecksumKind::Sha256 => {
                let digest = Sha256::digest(body);
                hex_encode(digest.as_slice(), hex)
            }
            ChecksumKind::Fnv => hex_encode(&fnv1a64(body).to_be_bytes(), hex),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Sha256 => "sha256",
            ChecksumKind::Fnv => "fnv",
        }
    }
}

fn hex_encode(bytes: &[u8], out: &mut [u8; 64]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 0xf) as usize];
    }
    bytes.len() * 2
}

/// 64-bit FNV-1a.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Wall-clock time in nanoseconds since the Unix epoch (0 if the clock is
/// before it): the timestamp carried in payloads.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Padding characters: a fixed printable pattern without `:`.
fn padding_source() -> &'static [u8] {
    static PADDING: OnceLock<Vec<u8>> = OnceLock::new();
    PADDING.get_or_init(|| {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        ALPHABET.iter().copied().cycle().take(64 * 1024).collect()
    })
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes payloads for one emitter.
#[derive(Clone, Debug)]
pub struct PayloadWriter {
    emitter_id: Vec<u8>,
    checksum: ChecksumKind,
}

impl PayloadWriter {
    pub fn new(emitter_id: &str, checksum: ChecksumKind) -> Self {
        assert!(
            !emitter_id.contains(':'),
            "emitter ids must not contain ':'"
        );
        PayloadWriter {
            emitter_id: emitter_id.as_bytes().to_vec(),
            checksum,
        }
    }

    /// Replace `out` with the payload for message `counter` sent at `unix_nanos`,
    /// padded so the whole payload is `size` bytes (or as short as the header and
    /// checksum allow).
    pub fn write(&self, unix_nanos: u64, counter: u64, size: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.emitter_id);
        out.push(b':');
        push_decimal(out, unix_nanos);
        out.push(b':');
        push_decimal(out, counter);
        out.push(b':');
        let fixed = out.len() + self.checksum.hex_len();
        let mut pad = size.saturating_sub(fixed);
        let source = padding_source();
        while pad > 0 {
            let n = pad.min(source.len());
            out.extend_from_slice(&source[..n]);
            pad -= n;
        }
        self.checksum.append_hex(out);
    }
}

/// The emitter ids of one run: `<prefix><index>`, e.g. `lt3f9a-e7`. The prefix
/// carries a per-run tag, so messages left over from another run are told apart.
#[derive(Clone, Debug)]
pub struct EmitterNaming {
    prefix: String,
    count: usize,
}

impl EmitterNaming {
    pub fn new(run_tag: u32, count: usize) -> Self {
        EmitterNaming {
            prefix: format!("lt{run_tag:08x}-e"),
            count,
        }
    }

    pub fn id(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }

    /// The index of the emitter with this id, if it belongs to this run.
    pub fn index_of(&self, id: &[u8]) -> Option<u32> {
        let digits = id.strip_prefix(self.prefix.as_bytes())?;
        let index = parse_decimal(digits)?;
        (index < self.count as u64).then_some(index as u32)
    }
}

/// A payload that parsed and whose checksum matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedPayload<'a> {
    pub emitter_id: &'a [u8],
    pub unix_nanos: u64,
    pub counter: u64,
}

/// Why a payload was rejected, and whose it seems to be if that much was readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectedPayload<'a> {
    pub emitter_id: Option<&'a [u8]>,
    pub reason: &'static str,
}

fn parse_decimal(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parse a payload and check its checksum.
pub fn verify(
    payload: &[u8],
    checksum: ChecksumKind,
) -> Result<VerifiedPayload<'_>, RejectedPayload<'_>> {
    let mut fields = payload.splitn(4, |&b| b == b':');
    let emitter_id = fields
        .next()
        .filter(|f| !f.is_empty() && f.len() < payload.len());
    let reject = |reason| RejectedPayload { emitter_id, reason };
    let Some(id) = emitter_id else {
        return Err(reject("malformed payload: no emitter id"));
    };
    let nanos = fields.next().and_then(parse_decimal);
    let counter = fields.next().and_then(parse_decimal);
    let rest = fields.next();
    let (Some(unix_nanos), Some(counter), Some(rest)) = (nanos, counter, rest) else {
        return Err(reject("malformed payload: bad timestamp or counter field"));
    };
    let hex_len = checksum.hex_len();
    if rest.len() < hex_len {
        return Err(reject("malformed payload: too short for its checksum"));
    }
    let body = &payload[..payload.len() - hex_len];
    let mut expected = [0u8; 64];
    let n = checksum.hex_into(body, &mut expected);
    if payload[payload.len() - hex_len..] != expected[..n] {
        return Err(reject("checksum mismatch"));
    }
    Ok(VerifiedPayload {
        emitter_id: id,
        unix_nanos,
        counter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_the_seed_format() {
        let w = PayloadWriter::new("em-1", ChecksumKind::Sha256);
        let mut out = Vec::new();
        w.write(1_700_000_000_123_456_789, 42, 200, &mut out);
        assert_eq!(out.len(), 200);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("em-1:1700000000123456789:42:"), "{text}");
        let (body, sum) = text.split_at(text.len() - 64);
        assert!(
            sum.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let digest = Sha256::digest(body.as_bytes());
        let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sum, expected);
    }

    #[test]
    fn round_trip_both_checksums() {
        for kind in [ChecksumKind::Sha256, ChecksumKind::Fnv] {
            let w = PayloadWriter::new("e7", kind);
            let mut out = Vec::new();
            for size in [0, 10, 100, 512, 5000] {
                w.write(123, 9, size, &mut out);
                assert_eq!(out.len(), size.max("e7:123:9:".len() + kind.hex_len()));
                let v = verify(&out, kind).unwrap();
                assert_eq!(
                    (v.emitter_id, v.unix_nanos, v.counter),
                    (&b"e7"[..], 123, 9)
                );
            }
        }
    }

    #[test]
    fn corruption_is_detected_and_attributed() {
        let w = PayloadWriter::new("e7", ChecksumKind::Sha256);
        let mut out = Vec::new();
        w.write(123, 9, 300, &mut out);
        let mut bad = out.clone();
        bad[100] ^= 0x01;
        let r = verify(&bad, ChecksumKind::Sha256).unwrap_err();
        assert_eq!(r.reason, "checksum mismatch");
        assert_eq!(r.emitter_id, Some(&b"e7"[..]));

        let mut truncated = out.clone();
        truncated.truncate(out.len() - 1);
        assert!(verify(&truncated, ChecksumKind::Sha256).is_err());

        assert!(
            verify(b"garbage", ChecksumKind::Sha256)
                .unwrap_err()
                .reason
                .contains("malformed")
        );
        assert!(
            verify(b"e1:12x:3:abc", ChecksumKind::Fnv)
                .unwrap_err()
                .reason
                .contains("malformed")
        );
        assert!(verify(b"", ChecksumKind::Fnv).is_err());
        // The wrong checksum kind never validates.
        assert!(verify(&out, ChecksumKind::Fnv).is_err());
    }

    #[test]
    fn emitter_naming_round_trips_and_rejects_other_runs() {
        let n = EmitterNaming::new(0xabc, 5);
        assert_eq!(n.id(3), "lt00000abc-e3");
        assert_eq!(n.index_of(n.id(3).as_bytes()), Some(3));
        assert_eq!(n.index_of(b"lt00000abc-e5"), None);
        assert_eq!(
            n.index_of(EmitterNaming::new(0xabd, 5).id(1).as_bytes()),
            None
        );
        assert_eq!(n.index_of(b"lt00000abc-e"), None);
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
