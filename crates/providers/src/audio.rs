//! Audio wire formats, pure: the duration of a WAV upload and the billed usage of a
//! transcription answer. The gateway's `audio` module does the I/O (multipart uploads streamed
//! upstream, speech streamed back); nothing here reads or buffers a whole upload.
//!
//! Units, as providers bill: transcription models that report token usage (GPT-4o transcribe:
//! `usage.type = "tokens"`) are billed by tokens; the others (Whisper) by seconds of audio,
//! counted as prompt units, so a Whisper backend's `pricing.input` is the price of a million
//! seconds (whisper-1 at $0.006 a minute: `input: 100`). Speech is billed per input character,
//! counted the same way (tts-1 at $15 per million characters: `input: 15`).

use serde::Deserialize;

use crate::Usage;

/// The duration in seconds of a WAV file from its header (`RIFF`/`WAVE`, the `fmt ` chunk's
/// byte rate, the `data` chunk's size), given the file's first bytes; `None` for anything else.
/// The data size comes from the header, so the whole file need not be seen.
pub fn wav_seconds(head: &[u8]) -> Option<f64> {
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let size = u32::from_le_bytes(head[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " && body + 12 <= head.len() {
            byte_rate = Some(u32::from_le_bytes(head[body + 8..body + 12].try_into().ok()?));
        } else if id == b"data" {
            let rate = byte_rate.filter(|r| *r > 0)?;
            return Some(size as f64 / f64::from(rate));
        }
        // Chunks are padded to an even size.
        at = body.checked_add(size)?.checked_add(size & 1)?;
    }
    None
}

/// The usage to bill for a transcription or translation answer: the provider's token usage when
/// it reports one, else its duration (`usage.seconds`, or verbose_json's `duration`), else
/// `estimate` (seconds the gateway read from the upload's WAV header). Seconds are rounded up
/// and counted as prompt units. `None` when nothing tells.
pub fn transcription_usage(body: &[u8], estimate: Option<f64>) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        usage: Option<WireUsage>,
        #[serde(default)]
        duration: Option<f64>,
    }
    #[derive(Deserialize)]
    struct WireUsage {
        #[serde(default, rename = "type")]
        kind: String,
        #[serde(default)]
        input_tokens: u64,
        #[serde(default)]
        output_tokens: u64,
        #[serde(default)]
        seconds: Option<f64>,
    }
    // A streamed answer (`stream: true`) carries its usage in its last event,
    // `transcript.text.done`; text, SRT and VTT answers are not JSON: the estimate is all there is.
    let answer: Option<Answer> = serde_json::from_slice(body).ok().or_else(|| {
        let text = std::str::from_utf8(body).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Answer>(d.trim()).ok())
            .find(|a| a.usage.is_some())
    });
    let (usage, duration) = answer.map_or((None, None), |a| (a.usage, a.duration));
    if let Some(u) = usage.as_ref().filter(|u| u.kind == "tokens") {
        return Some(Usage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            ..Usage::default()
        });
    }
    let seconds = usage.and_then(|u| u.seconds).or(duration).or(estimate)?;
    Some(seconds_usage(seconds))
}

/// `seconds` of audio as prompt units, rounded up to the second.
pub fn seconds_usage(seconds: f64) -> Usage {
    let whole = if seconds.is_finite() && seconds > 0.0 {
        seconds.ceil() as u64
    } else {
        0
    };
    Usage {
        prompt_tokens: whole,
        ..Usage::default()
    }
}

/// The usage to bill for speech: the input's characters, as prompt units.
pub fn speech_usage(input: &str) -> Usage {
    Usage {
        prompt_tokens: input.chars().count() as u64,
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCM WAV header: 16 kHz mono 16-bit, `data_bytes` of samples, a `LIST` chunk before `data`.
    fn wav(data_bytes: u32) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVE".to_vec();
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes()); // PCM
        v.extend_from_slice(&1u16.to_le_bytes()); // mono
        v.extend_from_slice(&16_000u32.to_le_bytes());
        v.extend_from_slice(&32_000u32.to_le_bytes()); // byte rate
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"LIST");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(b"abc\0");
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_bytes.to_le_bytes());
        v
    }

    #[test]
    fn the_wav_header_gives_the_duration_without_the_samples() {
        assert_eq!(wav_seconds(&wav(32_000 * 90)), Some(90.0));
        assert_eq!(wav_seconds(&wav(16_000)), Some(0.5));
        assert_eq!(wav_seconds(b"ID3\x04mp3 frames"), None);
        assert_eq!(wav_seconds(&wav(16_000)[..30]), None, "cut before the data chunk");
    }

    #[test]
    fn transcriptions_bill_tokens_then_duration_then_the_estimate() {
        let tokens =
            br#"{"text":"hi","usage":{"type":"tokens","input_tokens":14,"output_tokens":45,"total_tokens":59}}"#;
        let u = transcription_usage(tokens, Some(3.0)).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (14, 45));
        let duration = br#"{"text":"hi","usage":{"type":"duration","seconds":2.2}}"#;
        assert_eq!(transcription_usage(duration, None).unwrap().prompt_tokens, 3);
        let verbose = br#"{"task":"transcribe","language":"english","duration":8.47,"text":"hi"}"#;
        assert_eq!(transcription_usage(verbose, Some(1.0)).unwrap().prompt_tokens, 9);
        assert_eq!(
            transcription_usage(b"hello there\n", Some(4.5)).unwrap().prompt_tokens,
            5
        );
        assert_eq!(transcription_usage(br#"{"text":"hi"}"#, None), None);
        // A stream's usage is in its last event.
        let sse = b"data: {\"type\":\"transcript.text.delta\",\"delta\":\"hi\"}\n\ndata: {\"type\":\"transcript.text.done\",\"text\":\"hi\",\"usage\":{\"type\":\"tokens\",\"input_tokens\":7,\"output_tokens\":2}}\n\n";
        assert_eq!(transcription_usage(sse, Some(9.0)).unwrap().prompt_tokens, 7);
    }

    #[test]
    fn speech_counts_characters_not_bytes() {
        assert_eq!(speech_usage("héllo").prompt_tokens, 5);
    }
}
