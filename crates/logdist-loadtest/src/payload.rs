//! The seed payload format: `<emitter_id>:<unix_nanos>:<counter>:<padding><checksum>`.
//!
//! The checksum covers everything before it and is lowercase hex: 64 characters of
//! SHA-256 by default (what the seed analyzers check), or 16 characters of 64-bit
//! FNV-1a when hashing cost matters more than compatibility.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BufMut;
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

    /// The hex checksum of `body` into `hex`; returns its length.
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

/// FNV-1a's offset basis: the state before the first byte.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a's 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a.
pub fn fnv1a64(data: &[u8]) -> u64 {
    fnv1a64_continue(FNV_OFFSET, data)
}

/// FNV-1a from `state` on over `data`.
fn fnv1a64_continue(state: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// FNV-1a over the padding, in a few table look-ups instead of a multiply
/// per byte.
///
/// FNV-1a is a chain of `h = (h ^ b) * P`, one link per byte, about 4 cycles
/// each: for a 512-byte payload that is most of what the load tester spends
/// per message, twice (emitter and analyzer). But XOR with a byte changes
/// only the low 8 bits of `h`, so `h ^ b = h + d` with `d` depending only on
/// `b` and `h`'s low byte; and the low byte of a product depends only on the
/// low bytes of its factors. Over a fixed run of bytes the low byte's path,
/// and so every `d`, is therefore fixed by the low byte at the start, and
/// `h_n = P^n * h_0 + C(low byte of h_0)`. The padding is the 64-character
/// alphabet over and over, so two tables cover every length: one whole
/// period (64 bytes) and every shorter prefix of it.
struct PaddingJump {
    /// `P^64` and `C` for one whole period of the padding.
    period_mul: u64,
    period_add: [u64; 256],
    /// `P^r` and `C` for its first `r` bytes, r in 0..64.
    prefix_mul: [u64; PADDING_PERIOD],
    prefix_add: Box<[[u64; 256]; PADDING_PERIOD]>,
}

/// The padding repeats after this many bytes (the length of its alphabet).
const PADDING_PERIOD: usize = 64;
const PADDING_ALPHABET: &[u8; PADDING_PERIOD] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

impl PaddingJump {
    fn get() -> &'static PaddingJump {
        static JUMP: OnceLock<PaddingJump> = OnceLock::new();
        JUMP.get_or_init(|| {
            let mut prefix_mul = [1u64; PADDING_PERIOD];
            for r in 1..PADDING_PERIOD {
                prefix_mul[r] = prefix_mul[r - 1].wrapping_mul(FNV_PRIME);
            }
            let period_mul = prefix_mul[PADDING_PERIOD - 1].wrapping_mul(FNV_PRIME);
            let mut prefix_add = Box::new([[0u64; 256]; PADDING_PERIOD]);
            let mut period_add = [0u64; 256];
            for low in 0..256u64 {
                // Start from a state whose only bits are the low byte: what
                // the chain adds beyond `P^n * h_0` is then `h_n - P^n * low`.
                let mut h = low;
                for (r, &b) in PADDING_ALPHABET.iter().enumerate() {
                    prefix_add[r][low as usize] = h.wrapping_sub(prefix_mul[r].wrapping_mul(low));
                    h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
                }
                period_add[low as usize] = h.wrapping_sub(period_mul.wrapping_mul(low));
            }
            PaddingJump {
                period_mul,
                period_add,
                prefix_mul,
                prefix_add,
            }
        })
    }

    /// FNV-1a from `state` on over the first `len` bytes of the padding.
    fn over_padding(&self, mut h: u64, len: usize) -> u64 {
        for _ in 0..len / PADDING_PERIOD {
            h = self
                .period_mul
                .wrapping_mul(h)
                .wrapping_add(self.period_add[(h & 0xff) as usize]);
        }
        let r = len % PADDING_PERIOD;
        self.prefix_mul[r]
            .wrapping_mul(h)
            .wrapping_add(self.prefix_add[r][(h & 0xff) as usize])
    }
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
        PADDING_ALPHABET
            .iter()
            .copied()
            .cycle()
            .take(64 * 1024)
            .collect()
    })
}

/// `v` in decimal followed by `:`, at the end of `buf`; returns where it starts.
fn decimal_field(mut v: u64, buf: &mut [u8; 21]) -> usize {
    let mut i = buf.len() - 1;
    buf[i] = b':';
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

/// What the payloads of one batch share: the send time, as text, and the
/// FNV-1a state after `<emitter_id>:<unix_nanos>:`.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    nanos: [u8; 21],
    start: usize,
    fnv: u64,
}

impl Stamp {
    /// `<unix_nanos>:`
    fn text(&self) -> &[u8] {
        &self.nanos[self.start..]
    }
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

    /// The stamp of payloads sent at `unix_nanos`: made once per batch, so
    /// each payload only adds its counter.
    pub fn stamp(&self, unix_nanos: u64) -> Stamp {
        let mut nanos = [0u8; 21];
        let start = decimal_field(unix_nanos, &mut nanos);
        let fnv = fnv1a64_continue(
            fnv1a64_continue(fnv1a64(&self.emitter_id), b":"),
            &nanos[start..],
        );
        Stamp { nanos, start, fnv }
    }

    /// Replace `out` with the payload for message `counter` sent at `unix_nanos`,
    /// padded so the whole payload is `size` bytes (or as short as the header and
    /// checksum allow).
    pub fn write(&self, unix_nanos: u64, counter: u64, size: usize, out: &mut Vec<u8>) {
        out.clear();
        self.append(&self.stamp(unix_nanos), counter, size, out);
    }

    /// Append the payload for message `counter` of the batch `stamp` to
    /// `out` (a frame being built, or a scratch buffer), `size` bytes long
    /// (or as short as the header and checksum allow). With FNV the checksum
    /// costs a hash of the counter and a few look-ups for the padding
    /// ([`PaddingJump`]); SHA-256 hashes the whole payload.
    pub fn append<B: BufMut + AsRef<[u8]>>(
        &self,
        stamp: &Stamp,
        counter: u64,
        size: usize,
        out: &mut B,
    ) {
        let start = out.as_ref().len();
        let mut digits = [0u8; 21];
        let from = decimal_field(counter, &mut digits);
        let counter_text = &digits[from..];
        out.put_slice(&self.emitter_id);
        out.put_u8(b':');
        out.put_slice(stamp.text());
        out.put_slice(counter_text);
        let header = self.emitter_id.len() + 1 + stamp.text().len() + counter_text.len();
        let padding = size.saturating_sub(header + self.checksum.hex_len());
        let source = padding_source();
        let mut left = padding;
        while left > 0 {
            let n = left.min(source.len());
            out.put_slice(&source[..n]);
            left -= n;
        }
        let mut hex = [0u8; 64];
        let n = match self.checksum {
            ChecksumKind::Fnv => {
                let h = fnv1a64_continue(stamp.fnv, counter_text);
                hex_encode(
                    &PaddingJump::get().over_padding(h, padding).to_be_bytes(),
                    &mut hex,
                )
            }
            ChecksumKind::Sha256 => self.checksum.hex_into(&out.as_ref()[start..], &mut hex),
        };
        out.put_slice(&hex[..n]);
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
    let padding = &rest[..rest.len() - hex_len];
    let source = padding_source();
    let n = if checksum == ChecksumKind::Fnv
        && padding.len() <= source.len()
        && padding == &source[..padding.len()]
    {
        // The padding of this load tester: hash the header, jump over the rest.
        let header = &payload[..payload.len() - rest.len()];
        let h = PaddingJump::get().over_padding(fnv1a64(header), padding.len());
        hex_encode(&h.to_be_bytes(), &mut expected)
    } else {
        checksum.hex_into(body, &mut expected)
    };
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

    /// The padding jump is FNV-1a byte by byte, from any state, over any
    /// length (whole periods, prefixes, and past the 64 KiB source).
    #[test]
    fn padding_jump_equals_fnv_byte_by_byte() {
        let jump = PaddingJump::get();
        let source = padding_source();
        let mut state = 0x0123_4567_89ab_cdefu64;
        let long: Vec<u8> = PADDING_ALPHABET
            .iter()
            .copied()
            .cycle()
            .take(70_000)
            .collect();
        for len in (0..=300).chain([511, 512, 4096, 65_536, 70_000]) {
            for _ in 0..8 {
                state = state
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .wrapping_add(len as u64);
                let bytes = if len <= source.len() {
                    &source[..len]
                } else {
                    &long[..]
                };
                assert_eq!(
                    jump.over_padding(state, len),
                    fnv1a64_continue(state, bytes),
                    "length {len}"
                );
            }
        }
    }

    /// The fast writer and the fast check agree with the plain definition:
    /// FNV-1a (or SHA-256) of everything before the checksum; payloads
    /// padded otherwise (another generator) are checked byte by byte.
    #[test]
    fn checksums_are_those_of_the_whole_body() {
        for kind in [ChecksumKind::Fnv, ChecksumKind::Sha256] {
            let w = PayloadWriter::new("em-2", kind);
            let stamp = w.stamp(1_700_000_000_000_000_001);
            let mut out = bytes::BytesMut::new();
            for (counter, size) in [(0u64, 64usize), (9, 511), (12_345_678, 4096)] {
                out.clear();
                w.append(&stamp, counter, size, &mut out);
                let (body, sum) = out.split_at(out.len() - kind.hex_len());
                let mut hex = [0u8; 64];
                let n = kind.hex_into(body, &mut hex);
                assert_eq!(sum, &hex[..n]);
                assert_eq!(verify(&out, kind).unwrap().counter, counter);
            }
            let mut other = b"em-2:5:6:other padding".to_vec();
            kind.append_hex_for_test(&mut other);
            assert_eq!(verify(&other, kind).unwrap().counter, 6);
        }
    }

    impl ChecksumKind {
        fn append_hex_for_test(self, out: &mut Vec<u8>) {
            let mut hex = [0u8; 64];
            let n = self.hex_into(out, &mut hex);
            out.extend_from_slice(&hex[..n]);
        }
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
