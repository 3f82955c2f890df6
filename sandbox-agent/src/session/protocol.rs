//! Frames between the agent and the REPL driver on the session's control socket
//! (`sandbox-agent/driver/PROTOCOL.md`): a 4-byte big-endian length N, then N
//! bytes — a type letter and a JSON body. This is the only way out of a sandbox,
//! so decoding is strict and bounded.

use serde::{Deserialize, Serialize};

/// Largest frame either side may send.
pub const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is outside 1..={MAX_FRAME}")]
    Length(usize),
    #[error("unknown frame type {0:#04x}")]
    Type(u8),
    #[error("malformed {kind} frame: {source}")]
    Body {
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// Driver → agent.
#[derive(Debug, Clone, PartialEq)]
pub enum FromDriver {
    Ready(Ready),
    Subcall(Subcall),
    Done(Done),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ready {
    pub pid: i64,
    #[serde(default)]
    pub python: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subcall {
    pub id: u64,
    pub kind: SubcallKind,
    pub prompts: Vec<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub batched: bool,
    #[serde(default)]
    pub contexts: Vec<Option<SubcallContext>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubcallKind {
    Llm,
    Rlm,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SubcallContext {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    pub final_called: bool,
    #[serde(default)]
    pub final_value: Option<String>,
    #[serde(default)]
    pub error: Option<CellError>,
    #[serde(default)]
    pub interrupted: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CellError {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub traceback: String,
}

/// Agent → driver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exec<'a> {
    pub code: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubcallAnswer {
    pub id: u64,
    pub results: Vec<SubcallItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubcallItem {
    Text(String),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contexts {
    pub count: usize,
}

/// Encodes a frame of type `kind` with a JSON `body`.
pub fn encode(kind: u8, body: &impl Serialize) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mut frame = Vec::with_capacity(5 + json.len());
    frame.extend_from_slice(&((json.len() + 1) as u32).to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(&json);
    frame
}

/// The payload length announced by a 4-byte header, validated.
pub fn payload_length(header: [u8; 4]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(header) as usize;
    if length == 0 || length > MAX_FRAME {
        return Err(FrameError::Length(length));
    }
    Ok(length)
}

/// Decodes a payload (type letter + body) from the driver.
pub fn decode(payload: &[u8]) -> Result<FromDriver, FrameError> {
    let (&kind, body) = payload.split_first().ok_or(FrameError::Length(0))?;
    let parse = |name: &'static str| move |source| FrameError::Body { kind: name, source };
    match kind {
        b'R' => serde_json::from_slice(body)
            .map(FromDriver::Ready)
            .map_err(parse("READY")),
        b'S' => serde_json::from_slice(body)
            .map(FromDriver::Subcall)
            .map_err(parse("SUBCALL")),
        b'D' => serde_json::from_slice(body)
            .map(FromDriver::Done)
            .map_err(parse("DONE")),
        other => Err(FrameError::Type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let frame = encode(b'E', &Exec { code: "x = 1" });
        assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_be_bytes());
        assert_eq!(&frame[4..], b"E{\"code\":\"x = 1\"}");

        let answer = encode(
            b'A',
            &SubcallAnswer {
                id: 7,
                results: vec![
                    SubcallItem::Text("hi".into()),
                    SubcallItem::Error("boom".into()),
                ],
            },
        );
        assert_eq!(
            &answer[4..],
            br#"A{"id":7,"results":[{"text":"hi"},{"error":"boom"}]}"#
        );

        let done = decode(
            br#"D{"final_called":true,"final_value":"42","error":null,"interrupted":false}"#,
        )
        .expect("done");
        assert_eq!(
            done,
            FromDriver::Done(Done {
                final_called: true,
                final_value: Some("42".into()),
                ..Default::default()
            })
        );
        let subcall = decode(br#"S{"id":1,"kind":"rlm","prompts":["p"],"model":null,"batched":false,"contexts":[{"text":"c"},null]}"#)
            .expect("subcall");
        assert!(matches!(
            subcall,
            FromDriver::Subcall(Subcall {
                id: 1,
                kind: SubcallKind::Rlm,
                ..
            })
        ));

        assert!(matches!(decode(b"X{}"), Err(FrameError::Type(b'X'))));
        assert!(matches!(decode(b"D[1,2"), Err(FrameError::Body { .. })));
        assert!(matches!(
            decode(b"S{\"id\":-1}"),
            Err(FrameError::Body { .. })
        ));
        assert!(decode(b"").is_err());
        assert!(payload_length([0, 0, 0, 0]).is_err());
        assert!(payload_length((MAX_FRAME as u32 + 1).to_be_bytes()).is_err());
        assert_eq!(payload_length(5u32.to_be_bytes()).expect("ok"), 5);
    }
}

/// Property tests: whatever a (hostile) driver writes, decoding returns a
/// value or an error, never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn frame_like() -> impl Strategy<Value = Vec<u8>> {
        let kind = prop_oneof![Just(b'R'), Just(b'S'), Just(b'D'), any::<u8>()];
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            "[ -~]{0,200}".prop_map(String::into_bytes),
            Just(
                br#"{"id":1,"kind":"rlm","prompts":["p"],"contexts":[{"text":"c"},null]}"#.to_vec()
            ),
            Just(br#"{"id":18446744073709551615,"kind":"llm","prompts":[]}"#.to_vec()),
            Just(br#"{"final_called":true,"final_value":null,"error":{"type":1}}"#.to_vec()),
        ];
        (kind, body).prop_map(|(k, mut b)| {
            b.insert(0, k);
            b
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn decode_never_panics(payload in frame_like()) {
            let _ = decode(&payload);
        }

        #[test]
        fn lengths_are_bounded(header in any::<[u8; 4]>()) {
            if let Ok(n) = payload_length(header) {
                prop_assert!(n > 0 && n <= MAX_FRAME);
            }
        }
    }
}
