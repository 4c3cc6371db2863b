//! Stream: Anthropic events -> OpenAI chat.completion.chunk events.

use super::errors::{stream_error, WireError};
use super::response::{finish_reason, openai_usage, Counts, WireUsage};
use crate::sse::{self, Parser};
use crate::{ErrorKind, ProviderError, StreamTranslator, Usage};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Stream: Anthropic events -> OpenAI chat.completion.chunk events.

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping`, `content_block_stop`, and event types of later API versions.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta`, `citations_delta` and later kinds.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Translates an Anthropic event stream into OpenAI `chat.completion.chunk` events: a role
/// chunk, content and tool-call deltas (index, id and name on a call's first delta, argument
/// fragments after), a `finish_reason` chunk, a usage chunk with no choices, `data: [DONE]`.
pub struct StreamToOpenAi {
    parser: Parser,
    created: u64,
    id: String,
    model: String,
    counts: Option<Counts>,
    /// Anthropic content block index -> OpenAI tool call index.
    tools: Vec<(u64, usize)>,
    done: bool,
}

impl StreamToOpenAi {
    /// A translator stamping chunks with `created` (Unix seconds).
    pub fn new(created: u64) -> Self {
        Self {
            parser: Parser::default(),
            created,
            id: String::new(),
            model: String::new(),
            counts: None,
            tools: Vec::new(),
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        sse::data(&serde_json::to_vec(&v).unwrap_or_default())
    }

    fn event(&mut self, ev: StreamEvent, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                let mut counts = Counts::default();
                if let Some(u) = &message.usage {
                    counts.merge(u);
                }
                self.counts = Some(counts);
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            StreamEvent::ContentBlockStart { index, content_block } => match content_block {
                StartBlock::Text { text } if !text.is_empty() => {
                    out.push(self.chunk(json!({ "content": text }), None));
                }
                StartBlock::ToolUse { id, name } => {
                    let call = self.tools.len();
                    self.tools.push((index, call));
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": call,
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }]}),
                        None,
                    ));
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    out.push(self.chunk(json!({ "content": text }), None));
                }
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    // Server tool blocks (web search...) stream input too; they are not the
                    // client's to call.
                    if let Some(&(_, call)) = self.tools.iter().find(|(block, _)| *block == index) {
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": call, "function": {"arguments": partial_json}}]}),
                            None,
                        ));
                    }
                }
                BlockDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                    out.push(self.chunk(json!({ "reasoning_content": thinking }), None));
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.counts.get_or_insert_with(Counts::default).merge(u);
                }
                if let Some(reason) = delta.stop_reason.as_deref() {
                    out.push(self.chunk(json!({}), Some(finish_reason(reason))));
                }
            }
            StreamEvent::MessageStop => {
                self.done = true;
                let usage = self.counts.unwrap_or_default().usage();
                let v = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": openai_usage(&usage),
                });
                out.push(sse::data(&serde_json::to_vec(&v).unwrap_or_default()));
                out.push(Bytes::from_static(sse::DONE));
            }
            StreamEvent::Error { error } => return Err(stream_error(error)),
            StreamEvent::Other => {}
        }
        Ok(())
    }
}

impl StreamTranslator for StreamToOpenAi {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        for ev in self.parser.feed(&chunk)? {
            if self.done {
                break;
            }
            let event: StreamEvent = serde_json::from_str(&ev.data).map_err(|e| {
                ProviderError::new(
                    ErrorKind::Protocol,
                    format!("upstream sent a malformed stream event: {e}"),
                )
            })?;
            self.event(event, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.done {
            Ok(())
        } else {
            Err(ProviderError::new(
                ErrorKind::Protocol,
                "upstream stream ended before message_stop",
            ))
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.counts.map(|c| c.usage())
    }

    fn complete(&self) -> bool {
        self.done
    }
}
