//! Syslog emitters (`emitters.formats`): each message is an RFC 5424 message
//! carrying the seed payload as its MSG, sent with RFC 6587 octet counting or
//! LF framing, so a profile can mix syslog with binary frames.
//!
//! A syslog message has no priority of its own: logdist maps its severity
//! through `[priorities] syslog` (default `[0, 0, 0, 1, 2, 3, 3, 4]`). The
//! emitter picks, for the priority the plan wants, the severity that default
//! table maps to it; priorities above 4 have none and are sent as debug (4).
//! [`delivered_priority`] is what an analyzer must then see.

use bytes::BytesMut;
use logdist_wire::{
    DEFAULT_SYSLOG_PRIORITIES, encode_frame, encode_octet_counted, encode_syslog_line,
};

/// How an open-loop emitter encodes its messages.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitterFormat {
    /// Seed binary frames with the plan's priority byte.
    #[default]
    Frame,
    /// RFC 5424 with octet counting (`MSG-LEN SP SYSLOG-MSG`).
    SyslogOctet,
    /// RFC 5424 ended by `\n` (non-transparent framing).
    SyslogLf,
}

impl EmitterFormat {
    pub fn is_syslog(self) -> bool {
        self != EmitterFormat::Frame
    }

    pub fn name(self) -> &'static str {
        match self {
            EmitterFormat::Frame => "frame",
            EmitterFormat::SyslogOctet => "syslog_octet",
            EmitterFormat::SyslogLf => "syslog_lf",
        }
    }
}

/// The format of emitter `index` when `formats` are cycled over emitters.
pub fn format_of(formats: &[EmitterFormat], index: usize) -> EmitterFormat {
    formats
        .get(index % formats.len().max(1))
        .copied()
        .unwrap_or_default()
}

/// The severity whose default mapping is `priority` (debug past 4).
fn severity_for(priority: u8) -> u8 {
    match priority {
        0 => 0, // emerg
        1 => 3, // err
        2 => 4, // warning
        3 => 6, // info
        _ => 7, // debug
    }
}

/// The priority logdist gives a syslog message sent for `priority`.
pub fn delivered_priority(priority: u8) -> u8 {
    DEFAULT_SYSLOG_PRIORITIES[usize::from(severity_for(priority))]
}

/// Appends one message in `format`: `payload` at `priority` (a frame), or as
/// the MSG of `<PRI>1 - loadtest lt - - - <payload>` (facility local0).
pub fn encode(
    format: EmitterFormat,
    priority: u8,
    payload: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
) {
    if format == EmitterFormat::Frame {
        encode_frame(priority, payload, out);
        return;
    }
    scratch.clear();
    let pri = 16 * 8 + u32::from(severity_for(priority));
    scratch.extend_from_slice(format!("<{pri}>1 - loadtest lt - - - ").as_bytes());
    scratch.extend_from_slice(payload);
    match format {
        EmitterFormat::SyslogOctet => encode_octet_counted(scratch, out),
        _ => encode_syslog_line(scratch, out),
    }
}

/// The seed payload inside a syslog message as received (its MSG: after the
/// last space; seed payloads hold none).
pub fn payload_of(message: &[u8]) -> &[u8] {
    match message.iter().rposition(|&b| b == b' ') {
        Some(space) => &message[space + 1..],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logdist_wire::{Decoded, IngestDecoder, IngestLimits, PriorityTable};
    use std::sync::Arc;
    use tokio_util::codec::Decoder;

    #[test]
    fn logdist_decodes_each_format_to_the_payload_and_delivered_priority() {
        let mut wire = BytesMut::new();
        let mut scratch = Vec::new();
        let formats = [
            EmitterFormat::Frame,
            EmitterFormat::SyslogOctet,
            EmitterFormat::SyslogLf,
        ];
        let mut sent = Vec::new();
        for priority in [0u8, 1, 2, 3, 4, 9] {
            for format in formats {
                let payload = format!("e1:123:{priority}:pad{}", format.name());
                encode(
                    format,
                    priority,
                    payload.as_bytes(),
                    &mut scratch,
                    &mut wire,
                );
                let expected = if format.is_syslog() {
                    delivered_priority(priority)
                } else {
                    priority
                };
                sent.push((expected, payload));
            }
        }
        let mut decoder =
            IngestDecoder::new(IngestLimits::default(), Arc::new(PriorityTable::default()));
        let mut got = Vec::new();
        while let Some(item) = decoder.decode(&mut wire).unwrap() {
            let Decoded::Message(message) = item else {
                panic!("{item:?}");
            };
            let payload = message.payload();
            let payload = if payload.first() == Some(&b'<') {
                payload_of(&payload).to_vec()
            } else {
                payload.to_vec()
            };
            got.push((message.priority(), String::from_utf8(payload).unwrap()));
        }
        assert_eq!(got, sent);
        assert_eq!(delivered_priority(9), 4);
        assert_eq!(format_of(&formats, 4), EmitterFormat::SyslogOctet);
    }
}
