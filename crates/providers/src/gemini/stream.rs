//! `streamGenerateContent?alt=sse` into OpenAI `chat.completion.chunk` SSE.

use super::errors::google_error;
use super::response::{blocked, chat_id, finish_reason, turn, GenerateResponse, UsageMetadata};
use super::unix_seconds;
use crate::sse::{self, Parser};
use crate::wire::unreadable;
use crate::{ErrorKind, Json, ProviderError, StreamTranslator, Target, Usage};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------

/// Translates `streamGenerateContent?alt=sse`: each event is a whole `GenerateContentResponse`
/// holding the next slice of each candidate; usage is cumulative; a candidate ends with its
/// `finishReason`. There is no terminator event, so the stream is complete once every candidate
/// seen has finished.
pub struct GeminiStream {
    parser: Parser,
    id: Option<String>,
    created: u64,
    model: String,
    next_call: usize,
    /// Per choice: whether its role was sent, and how many tool calls it made.
    choices: BTreeMap<u32, (bool, usize)>,
    finished: BTreeSet<u32>,
    usage: Option<UsageMetadata>,
    done: bool,
}

impl GeminiStream {
    /// A translator for one response.
    pub fn new(target: &Target<'_>) -> Self {
        Self {
            parser: Parser::default(),
            id: None,
            created: unix_seconds(target.now),
            model: target.model.to_owned(),
            next_call: 0,
            choices: BTreeMap::new(),
            finished: BTreeSet::new(),
            usage: None,
            done: false,
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Result<Bytes, ProviderError> {
        let mut c = json!({
            "id": self.id.as_deref().unwrap_or(""),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Ok(sse::data(&serde_json::to_vec(&c).map_err(unreadable)?))
    }

    fn event(&mut self, data: &str, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let value: Value = serde_json::from_str(data)
            .map_err(|_| ProviderError::new(ErrorKind::Protocol, "upstream sent a malformed stream event"))?;
        if value.get("error").is_some() {
            let status = value["error"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            return Err(google_error(status, &HeaderMap::new(), data.as_bytes()));
        }
        let r: GenerateResponse = serde_json::from_value(value).map_err(unreadable)?;
        if self.id.is_none() {
            self.id = Some(chat_id(r.response_id.as_deref(), self.created));
            if let Some(m) = &r.model_version {
                self.model.clone_from(m);
            }
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u);
        }
        if r.candidates.is_empty() {
            if let Some(e) = r.prompt_feedback.as_ref().and_then(blocked) {
                return Err(e);
            }
        }
        for (i, c) in r.candidates.iter().enumerate() {
            let index = c.index.unwrap_or(i as u32);
            let t = turn(c.content.as_ref(), &mut self.next_call);
            let (role_sent, calls) = self.choices.entry(index).or_insert((false, 0));
            let mut delta = Json::new();
            if !*role_sent {
                delta.insert("role".into(), "assistant".into());
                *role_sent = true;
            }
            if !t.text.is_empty() {
                delta.insert("content".into(), t.text.into());
            }
            if !t.reasoning.is_empty() {
                delta.insert("reasoning_content".into(), t.reasoning.into());
            }
            if !t.tool_calls.is_empty() {
                let indexed: Vec<Value> = t
                    .tool_calls
                    .into_iter()
                    .map(|mut tc| {
                        tc["index"] = (*calls).into();
                        *calls += 1;
                        tc
                    })
                    .collect();
                delta.insert("tool_calls".into(), Value::Array(indexed));
            }
            let finish = c.finish_reason.as_deref().map(|f| finish_reason(f, *calls > 0));
            if delta.is_empty() && finish.is_none() {
                continue;
            }
            if finish.is_some() {
                self.finished.insert(index);
            }
            let choice = json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
            out.push(self.chunk(choice, None)?);
        }
        Ok(())
    }
}

impl StreamTranslator for GeminiStream {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        for ev in self.parser.feed(&chunk)? {
            if ev.data.is_empty() {
                continue;
            }
            self.event(&ev.data, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if !self.complete() {
            return Err(ProviderError::new(
                ErrorKind::Protocol,
                "upstream stream ended before every candidate finished",
            ));
        }
        if !self.done {
            if let Some(u) = self.usage {
                out.push(self.chunk(json!([]), Some(u.json()))?);
            }
            out.push(Bytes::from_static(sse::DONE));
            self.done = true;
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.usage())
    }

    fn complete(&self) -> bool {
        !self.finished.is_empty() && self.choices.keys().all(|i| self.finished.contains(i))
    }
}
