use super::frame::*;
use super::*;
use std::io::Cursor;
use tokio_util::codec::{Decoder, Encoder};

fn every_to_worker() -> Vec<ToWorker> {
    vec![
        ToWorker::Hello { version: PROTOCOL_VERSION },
        ToWorker::Generate(Box::new(GenerateRequest {
            id: RequestId(7),
            prompt: Prompt::Chat(vec![
                ChatMessage::new("user", "héllo ✓"),
                ChatMessage {
                    role: "assistant".into(),
                    content: String::new(),
                    tool_calls: vec![ToolCall { id: "call_1".into(), name: "f".into(), arguments: "{}".into() }],
                    ..Default::default()
                },
                ChatMessage {
                    role: "tool".into(),
                    content: "42".into(),
                    tool_call_id: Some("call_1".into()),
                    name: Some("f".into()),
                    ..Default::default()
                },
            ]),
            sampling: SamplingParams {
                seed: Some(42),
                logit_bias: vec![(2, f32::NEG_INFINITY), (5, 1.5)],
                ..Default::default()
            },
            max_tokens: Some(16),
            stop: vec!["\n\n".into(), "END".into()],
            stream: true,
            cache_prompt: true,
            constraint: Some(Constraint::JsonSchema { schema: r#"{"type":"object"}"#.into(), whitespace: false }),
            logprobs: Some(MAX_TOP_LOGPROBS),
            tools: Some("[]".into()),
            lora: Vec::new(),
            count_only: false,
            speculative: true,
        })),
        ToWorker::Generate(Box::new(GenerateRequest {
            id: RequestId(u64::MAX),
            prompt: Prompt::Tokens(vec![1, 2, 3]),
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: vec![],
            stream: false,
            cache_prompt: false,
            constraint: Some(Constraint::Gbnf("root ::= \"a\"".into())),
            logprobs: None,
            tools: None,
            lora: Vec::new(),
            count_only: false,
            speculative: true,
        })),
        ToWorker::Cancel { id: RequestId(3) },
        ToWorker::Embed(Box::new(EmbedRequest {
            id: RequestId(9),
            inputs: vec![Prompt::Text("a memory".into()), Prompt::Tokens(vec![5, 6])],
            lora: vec![LoraUse { path: "/m/pirate.gguf".into(), scale: 0.5 }],
        })),
        ToWorker::Shutdown { grace_ms: 5000 },
        ToWorker::Allow { bytes: 64 << 20, embed_bytes: 8 << 20 },
    ]
}

fn every_from_worker() -> Vec<FromWorker> {
    vec![
        FromWorker::HelloAck { version: PROTOCOL_VERSION },
        FromWorker::Ready(ReadyInfo {
            load_ms: 120,
            memory_bytes: 1 << 30,
            n_ctx: 4096,
            slots: 4,
            has_chat_template: true,
        }),
        FromWorker::Tokens { id: RequestId(1), text: "Paris".into(), n_tokens: 2, logprobs: vec![] },
        FromWorker::Tokens {
            id: RequestId(1),
            text: "é".into(),
            n_tokens: 1,
            logprobs: vec![TokenLogprob {
                bytes: vec![0xc3],
                logprob: -0.5,
                top: vec![(vec![0xc3], -0.5), (b"a".to_vec(), -1.5)],
            }],
        },
        FromWorker::Done(Box::new(DoneInfo {
            id: RequestId(1),
            finish: FinishReason::Length,
            usage: Usage {
                prompt_tokens: 41,
                completion_tokens: 16,
                cached_tokens: 30,
                cached_from: Some(CacheTier::Disk),
            },
            timings: Timings { queue_ms: 0.5, prompt_ms: 50.0, decode_ms: 150.25, drafted: 12, accepted: 9 },
        })),
        FromWorker::Error { id: Some(RequestId(2)), kind: ErrorKind::PromptTooLong, message: "too long".into() },
        FromWorker::Embeddings { id: RequestId(9), vectors: vec![vec![0.5, -0.25], vec![]], prompt_tokens: 7 },
        FromWorker::Error { id: None, kind: ErrorKind::ProtocolMismatch, message: "v2".into() },
        FromWorker::Loading { progress: 0.5 },
        FromWorker::Held { cache_bytes: 3 << 20, embed_bytes: 0 },
    ]
}

#[test]
fn every_message_round_trips_sync_and_async() {
    let mut wire = Vec::new();
    for m in every_to_worker() {
        encode_into(&m, &mut wire).unwrap();
    }
    let mut r = Cursor::new(&wire);
    let mut buf = Vec::new();
    for m in every_to_worker() {
        assert_eq!(read_frame::<ToWorker>(&mut r, &mut buf).unwrap(), Some(m));
    }
    assert!(read_frame::<ToWorker>(&mut r, &mut buf).unwrap().is_none());

    let mut codec = FrameCodec::<FromWorker, FromWorker>::default();
    let mut bytes = bytes::BytesMut::new();
    for m in every_from_worker() {
        codec.encode(m, &mut bytes).unwrap();
    }
    // The sync reader understands what the async encoder wrote, and vice versa.
    let mut r = Cursor::new(bytes.to_vec());
    for m in every_from_worker() {
        assert_eq!(read_frame::<FromWorker>(&mut r, &mut buf).unwrap(), Some(m));
    }
    for m in every_from_worker() {
        assert_eq!(codec.decode(&mut bytes).unwrap(), Some(m));
    }
    assert!(codec.decode_eof(&mut bytes).unwrap().is_none());
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut wire = Vec::new();
    encode_into(&every_from_worker()[2], &mut wire).unwrap();
    let mut codec = FrameCodec::<FromWorker, FromWorker>::default();
    let mut bytes = bytes::BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        assert!(codec.decode(&mut bytes).unwrap().is_none(), "decoded after {i} bytes");
        bytes.extend_from_slice(&[*b]);
    }
    assert_eq!(codec.decode(&mut bytes).unwrap(), Some(every_from_worker()[2].clone()));
}

#[test]
fn truncated_frames_are_errors() {
    let mut wire = Vec::new();
    encode_into(&every_to_worker()[1], &mut wire).unwrap();
    for cut in 1..wire.len() {
        let mut buf = Vec::new();
        let err = read_frame::<ToWorker>(&mut Cursor::new(&wire[..cut]), &mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "cut {cut}: {err}");
        let mut codec = FrameCodec::<ToWorker, ToWorker>::default();
        let mut bytes = bytes::BytesMut::from(&wire[..cut]);
        assert!(codec.decode_eof(&mut bytes).is_err());
    }
}

#[test]
fn oversized_frames_are_refused_before_allocation() {
    let mut wire = (u32::MAX).to_le_bytes().to_vec();
    wire.extend([0; 16]);
    let mut buf = Vec::new();
    assert!(matches!(read_frame::<ToWorker>(&mut Cursor::new(&wire), &mut buf), Err(FrameError::TooLarge(_))));
    assert!(buf.capacity() < 1024);
    let huge = ToWorker::Generate(Box::new(GenerateRequest {
        id: RequestId(1),
        prompt: Prompt::Text("x".repeat(MAX_FRAME_BYTES + 1)),
        sampling: SamplingParams::default(),
        max_tokens: None,
        stop: vec![],
        stream: true,
        cache_prompt: true,
        constraint: None,
        logprobs: None,
        tools: None,
        lora: Vec::new(),
        count_only: false,
        speculative: true,
    }));
    assert!(encode_into(&huge, &mut Vec::new()).is_err());
}

#[test]
fn garbage_payloads_are_errors_not_panics() {
    // Deterministic xorshift keeps the test repeatable.
    let mut s: u64 = 0x2545f4914f6cdd1d;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut valid = Vec::new();
    encode_into(&every_to_worker()[1], &mut valid).unwrap();
    for round in 0..20_000 {
        let payload: Vec<u8> = if round % 2 == 0 {
            (0..(next() % 64)).map(|_| next() as u8).collect()
        } else {
            let mut p = valid[HEADER_BYTES..].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % p.len();
                p[i] = next() as u8;
            }
            p
        };
        let _ = decode_payload::<ToWorker>(&payload);
        let _ = decode_payload::<FromWorker>(&payload);
    }
    // A length field inside the payload claiming 2^60 bytes must not allocate it.
    let mut p = vec![2u8]; // FromWorker::Tokens
    p.push(1); // id
    p.push(0xff); // varint u64 marker for the text length
    p.extend((1u64 << 60).to_le_bytes());
    assert!(decode_payload::<FromWorker>(&p).is_err());
}

#[test]
fn sampling_ranges_are_checked_once_for_both_sides() {
    let ok = SamplingParams::default();
    assert_eq!(ok.check(), Ok(()));
    let bad = |p: SamplingParams| p.check().unwrap_err().0;
    assert_eq!(bad(SamplingParams { temperature: 2.5, ..ok.clone() }), "temperature");
    assert_eq!(bad(SamplingParams { temperature: f32::NAN, ..ok.clone() }), "temperature");
    assert_eq!(bad(SamplingParams { top_p: 1.5, ..ok.clone() }), "top_p");
    assert_eq!(bad(SamplingParams { min_p: -0.1, ..ok.clone() }), "min_p");
    assert_eq!(bad(SamplingParams { presence_penalty: 3.0, ..ok.clone() }), "presence_penalty");
    assert_eq!(bad(SamplingParams { frequency_penalty: f32::INFINITY, ..ok.clone() }), "frequency_penalty");
    assert_eq!(bad(SamplingParams { repeat_penalty: 0.0, ..ok.clone() }), "repeat_penalty");
    assert_eq!(bad(SamplingParams { logit_bias: vec![(1, 101.0)], ..ok.clone() }), "logit_bias");
    assert_eq!(bad(SamplingParams { logit_bias: vec![(1, f32::NAN)], ..ok.clone() }), "logit_bias");
    assert_eq!(SamplingParams { logit_bias: vec![(1, f32::NEG_INFINITY)], ..ok }.check(), Ok(()), "a ban");
}
