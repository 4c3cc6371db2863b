//! ConverseStream: AWS event-stream frames into OpenAI `chat.completion.chunk` SSE.

use super::errors::error_of_type;
use super::response::{finish_reason, usage_json, Reasoning, TokenUsage};
use super::{epoch, fnv, protocol, FRAME_OVERHEAD, MAX_FRAME};
use crate::{ProviderError, StreamTranslator, Target, Usage};
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Chat stream

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    start: Option<StartBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    delta: DeltaBody,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeltaBody {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseDelta>,
    #[serde(default)]
    reasoning_content: Option<Reasoning>,
}

#[derive(Deserialize, Default)]
struct ToolUseDelta {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    #[serde(default)]
    stop_reason: String,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ExceptionBody {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default)]
    original_message: Option<String>,
}

/// Translates a ConverseStream event stream into OpenAI `chat.completion.chunk` SSE.
pub struct ConverseStream {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    /// Whether the next bytes start a frame (the decoder has not taken its prelude yet).
    at_frame_start: bool,
    id: String,
    model: String,
    created: u64,
    /// Converse content block index → OpenAI tool call index.
    tools: BTreeMap<u64, usize>,
    role_sent: bool,
    stopped: bool,
    done: bool,
    failed: bool,
    usage: Option<Usage>,
}

impl ConverseStream {
    /// A translator for one stream to `target`.
    pub fn new(target: &Target<'_>) -> Self {
        let (created, nanos) = epoch(target);
        Self {
            decoder: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            at_frame_start: true,
            id: format!("chatcmpl-{:016x}", fnv(nanos, target.model.as_bytes())),
            model: target.model.to_owned(),
            created,
            tools: BTreeMap::new(),
            role_sent: false,
            stopped: false,
            done: false,
            failed: false,
            usage: None,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let body = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        crate::sse::data(body.to_string().as_bytes())
    }

    fn ensure_role(&mut self, out: &mut Vec<Bytes>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    fn tool_index(&mut self, block: u64) -> usize {
        let next = self.tools.len();
        *self.tools.entry(block).or_insert(next)
    }

    fn fail(&mut self, e: ProviderError) -> ProviderError {
        self.failed = true;
        e
    }

    fn on_message(&mut self, message: &Message, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_owned())
        };
        match header(":message-type").as_deref().unwrap_or("event") {
            "event" => {
                let Some(event) = header(":event-type") else {
                    return Err(protocol("upstream sent an event-stream event without :event-type"));
                };
                self.on_event(&event, message.payload(), out)
            }
            "exception" => {
                let ty = header(":exception-type").unwrap_or_else(|| "exception".into());
                let body: ExceptionBody = serde_json::from_slice(message.payload()).unwrap_or_default();
                let mut text = body.message.unwrap_or_else(|| format!("upstream stream failed: {ty}"));
                if let Some(original) = body.original_message {
                    text = format!("{text} ({original})");
                }
                Err(error_of_type(&ty, text, None))
            }
            "error" => {
                let code = header(":error-code").unwrap_or_else(|| "error".into());
                let text = header(":error-message").unwrap_or_else(|| format!("upstream stream failed: {code}"));
                Err(error_of_type(&code, text, None))
            }
            other => Err(protocol(format!(
                "upstream sent an event-stream message of type `{other}`"
            ))),
        }
    }

    fn on_event(&mut self, event: &str, payload: &[u8], out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        fn read<'a, T: Deserialize<'a>>(event: &str, payload: &'a [u8]) -> Result<T, ProviderError> {
            serde_json::from_slice(payload)
                .map_err(|e| protocol(format!("upstream sent an unreadable {event} event: {e}")))
        }
        match event {
            "messageStart" => self.ensure_role(out),
            "contentBlockStart" => {
                let start: BlockStart = read(event, payload)?;
                if let Some(tool) = start.start.and_then(|s| s.tool_use) {
                    self.ensure_role(out);
                    let index = self.tool_index(start.content_block_index);
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": index,
                            "id": tool.tool_use_id,
                            "type": "function",
                            "function": {"name": tool.name, "arguments": ""},
                        }]}),
                        None,
                    ));
                }
            }
            "contentBlockDelta" => {
                let delta: BlockDelta = read(event, payload)?;
                self.ensure_role(out);
                if let Some(text) = delta.delta.text.filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({"content": text}), None));
                }
                if let Some(tool) = delta.delta.tool_use.filter(|t| !t.input.is_empty()) {
                    let index = self.tool_index(delta.content_block_index);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": tool.input}}]}),
                        None,
                    ));
                }
                if let Some(text) = delta
                    .delta
                    .reasoning_content
                    .and_then(|r| r.text)
                    .filter(|t| !t.is_empty())
                {
                    out.push(self.chunk(json!({"reasoning_content": text}), None));
                }
            }
            "messageStop" => {
                let stop: MessageStop = read(event, payload)?;
                self.ensure_role(out);
                out.push(self.chunk(json!({}), Some(finish_reason(&stop.stop_reason))));
                self.stopped = true;
            }
            "metadata" => {
                let meta: Metadata = read(event, payload)?;
                if let Some(u) = meta.usage {
                    let usage = Usage::from(u);
                    self.usage = Some(usage);
                    let body = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage_json(&usage),
                    });
                    out.push(crate::sse::data(body.to_string().as_bytes()));
                }
                if !self.done {
                    self.done = true;
                    out.push(Bytes::from_static(crate::sse::DONE));
                }
            }
            // contentBlockStop carries nothing to send; newer events are ignored.
            _ => {}
        }
        Ok(())
    }
}

impl StreamTranslator for ConverseStream {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.failed {
            return Err(protocol("the upstream stream already failed"));
        }
        self.buf.extend_from_slice(&chunk);
        loop {
            // The decoder trusts the prelude's length until the whole frame is in; refuse a
            // corrupt one now rather than buffer up to 4 GiB waiting for it.
            if self.at_frame_start && self.buf.len() >= 12 {
                let total = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if total > MAX_FRAME {
                    let mut e = protocol(format!(
                        "upstream event-stream frame of {total} bytes exceeds {MAX_FRAME} bytes"
                    ));
                    e.code = Some(crate::sse::EVENT_TOO_LARGE.to_owned());
                    return Err(self.fail(e));
                }
                if total < FRAME_OVERHEAD {
                    let e = protocol(format!("upstream sent a corrupt event-stream frame (length {total})"));
                    return Err(self.fail(e));
                }
                self.at_frame_start = false;
            }
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.at_frame_start = true;
                    if let Err(e) = self.on_message(&message, out) {
                        return Err(self.fail(e));
                    }
                }
                Ok(DecodedFrame::Incomplete) => return Ok(()),
                Err(e) => {
                    let e = protocol(format!("upstream sent a corrupt event-stream frame: {e}"));
                    return Err(self.fail(e));
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.failed {
            return Ok(());
        }
        if !self.buf.is_empty() || !self.at_frame_start {
            return Err(protocol("upstream stream ended inside an event-stream frame"));
        }
        if !self.stopped && !self.done {
            return Err(protocol("upstream stream ended before messageStop"));
        }
        if !self.done {
            self.done = true;
            out.push(Bytes::from_static(crate::sse::DONE));
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn complete(&self) -> bool {
        self.stopped || self.done
    }
}
