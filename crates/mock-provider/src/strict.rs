//! Request validation as strict as the real APIs: required fields, JSON types, enum values,
//! ranges and (where the provider refuses them) unknown fields, declared as one table per API.
//!
//! A check here finds the first [`Violation`]; each provider module words it and answers it in its
//! own error shape and status. The tables follow each provider's API reference (named above each
//! one); they cover what a translation bug in the gateway would get wrong (a missing required
//! field, a misspelt or misplaced field, a wrong type, an unknown role) and nothing deeper. This
//! module must not decide replies: it only says whether the provider would take the request.

use std::fmt;

use serde_json::Value;

/// The JSON type a field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Num,
    Bool,
    Obj,
    Arr,
    /// A string, or an array (of `items`).
    StrOrArr,
    /// Anything, `null` included.
    Any,
}

impl Ty {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Ty::Str => v.is_string(),
            Ty::Int => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            Ty::Num => v.is_number(),
            Ty::Bool => v.is_boolean(),
            Ty::Obj => v.is_object(),
            Ty::Arr => v.is_array(),
            Ty::StrOrArr => v.is_string() || v.is_array(),
            Ty::Any => true,
        }
    }

    /// OpenAI's word for the type.
    pub fn word(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Int => "an integer",
            Ty::Num => "a number",
            Ty::Bool => "a boolean",
            Ty::Obj => "an object",
            Ty::Arr => "an array",
            Ty::StrOrArr => "a string or an array",
            Ty::Any => "a value",
        }
    }
}

/// The word for the type a value has (OpenAI's wording).
pub fn type_word(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One field of an object.
#[derive(Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// A `null` value counts as absent (OpenAI and Gemini take `null` for optional fields).
    pub nullable: bool,
    /// The allowed values of a string field (empty: any).
    pub one_of: &'static [&'static str],
    /// Inclusive bounds of a number.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// An array must not be empty.
    pub non_empty: bool,
    /// The schema of an object field, or of each element of an array field.
    pub schema: Option<&'static Schema>,
}

/// A field of type `ty`, optional, with no further constraint.
pub const fn field(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        nullable: false,
        one_of: &[],
        min: None,
        max: None,
        non_empty: false,
        schema: None,
    }
}

impl Field {
    pub const fn required(self) -> Field {
        Field { required: true, ..self }
    }
    pub const fn nullable(self) -> Field {
        Field { nullable: true, ..self }
    }
    pub const fn one_of(self, values: &'static [&'static str]) -> Field {
        Field { one_of: values, ..self }
    }
    pub const fn range(self, min: f64, max: f64) -> Field {
        Field {
            min: Some(min),
            max: Some(max),
            ..self
        }
    }
    pub const fn at_least(self, min: f64) -> Field {
        Field { min: Some(min), ..self }
    }
    pub const fn non_empty(self) -> Field {
        Field {
            non_empty: true,
            ..self
        }
    }
    pub const fn of(self, schema: &'static Schema) -> Field {
        Field {
            schema: Some(schema),
            ..self
        }
    }
}

/// How an object is checked.
pub struct Schema {
    pub fields: &'static [Field],
    /// Fields not listed are refused.
    pub closed: bool,
    /// Protocol-buffer JSON (Google): `snake_case` names are taken for their `lowerCamelCase`
    /// fields.
    pub proto: bool,
}

/// One step of a path into the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Where in the request a violation is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Step>);

impl Path {
    fn push(&self, step: Step) -> Path {
        let mut p = self.0.clone();
        p.push(step);
        Path(p)
    }

    /// `messages[0].role` (OpenAI).
    pub fn brackets(&self) -> String {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// `messages.0.role` (Anthropic, Cohere).
    pub fn dotted(&self) -> String {
        self.0
            .iter()
            .map(|s| match s {
                Step::Key(k) => k.clone(),
                Step::Index(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// `messages.1.member.role` (Bedrock: AWS counts list members from 1).
    pub fn aws(&self) -> String {
        self.0
            .iter()
            .map(|s| match s {
                Step::Key(k) => k.clone(),
                Step::Index(i) => format!("{}.member", i + 1),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The last key of the path (the field's own name).
    pub fn leaf(&self) -> &str {
        self.0
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::Key(k) => Some(k.as_str()),
                Step::Index(_) => None,
            })
            .unwrap_or("")
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.brackets())
    }
}

/// What is wrong with a request (the first thing found).
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// The body is not a JSON object.
    NotObject,
    Missing(Path),
    Unknown(Path),
    Type {
        path: Path,
        expected: Ty,
        got: Value,
    },
    Enum {
        path: Path,
        got: String,
        allowed: &'static [&'static str],
    },
    Below {
        path: Path,
        min: f64,
        got: f64,
    },
    Above {
        path: Path,
        max: f64,
        got: f64,
    },
    Empty(Path),
}

impl Violation {
    pub fn path(&self) -> Path {
        match self {
            Violation::NotObject => Path::default(),
            Violation::Missing(p) | Violation::Unknown(p) | Violation::Empty(p) => p.clone(),
            Violation::Type { path, .. }
            | Violation::Enum { path, .. }
            | Violation::Below { path, .. }
            | Violation::Above { path, .. } => path.clone(),
        }
    }
}

/// `snake_case` → `lowerCamelCase`.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks `body` against `schema`.
pub fn check(body: &Value, schema: &Schema) -> Result<(), Violation> {
    let Value::Object(_) = body else {
        return Err(Violation::NotObject);
    };
    check_object(body, schema, &Path::default())
}

fn check_object(obj: &Value, schema: &Schema, at: &Path) -> Result<(), Violation> {
    let Value::Object(map) = obj else {
        return Ok(());
    };
    let find = |key: &str| -> Option<&Field> {
        schema
            .fields
            .iter()
            .find(|f| f.name == key || (schema.proto && f.name == camel(key)))
    };
    for f in schema.fields {
        let value = map.get(f.name).or_else(|| {
            schema
                .proto
                .then(|| map.iter().find(|(k, _)| camel(k) == f.name).map(|(_, v)| v))
                .flatten()
        });
        let path = at.push(Step::Key(f.name.to_owned()));
        let value = match value {
            None => None,
            Some(Value::Null) if f.nullable || f.ty == Ty::Any => None,
            Some(v) => Some(v),
        };
        let Some(v) = value else {
            if f.required {
                return Err(Violation::Missing(path));
            }
            continue;
        };
        check_value(v, f, &path)?;
    }
    if schema.closed {
        if let Some(key) = map.keys().find(|k| find(k).is_none()) {
            return Err(Violation::Unknown(at.push(Step::Key(key.clone()))));
        }
    }
    Ok(())
}

fn check_value(v: &Value, f: &Field, path: &Path) -> Result<(), Violation> {
    if !f.ty.accepts(v) {
        return Err(Violation::Type {
            path: path.clone(),
            expected: f.ty,
            got: v.clone(),
        });
    }
    if !f.one_of.is_empty() {
        if let Some(s) = v.as_str() {
            if !f.one_of.contains(&s) {
                return Err(Violation::Enum {
                    path: path.clone(),
                    got: s.to_owned(),
                    allowed: f.one_of,
                });
            }
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = f.min.filter(|m| n < *m) {
            return Err(Violation::Below {
                path: path.clone(),
                min,
                got: n,
            });
        }
        if let Some(max) = f.max.filter(|m| n > *m) {
            return Err(Violation::Above {
                path: path.clone(),
                max,
                got: n,
            });
        }
    }
    match v {
        Value::Array(items) => {
            if f.non_empty && items.is_empty() {
                return Err(Violation::Empty(path.clone()));
            }
            if let Some(schema) = f.schema {
                for (i, item) in items.iter().enumerate() {
                    let at = path.push(Step::Index(i));
                    if !item.is_object() {
                        return Err(Violation::Type {
                            path: at,
                            expected: Ty::Obj,
                            got: item.clone(),
                        });
                    }
                    check_object(item, schema, &at)?;
                }
            }
        }
        Value::Object(_) => {
            if let Some(schema) = f.schema {
                check_object(v, schema, path)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Renders a number as the providers print it (`2`, not `2.0`).
pub fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI: API reference, Chat > Create chat completion; Embeddings > Create embeddings;
// Responses > Create a model response. Unknown top-level arguments are refused with
// `Unrecognized request argument supplied: X`.

/// Every role a chat message may have.
pub const OPENAI_ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

const OPENAI_MESSAGE: Schema = Schema {
    fields: &[
        field("role", Ty::Str).required().one_of(OPENAI_ROLES),
        field("content", Ty::Any),
        field("name", Ty::Str),
        field("tool_call_id", Ty::Str),
        field("tool_calls", Ty::Arr).nullable(),
    ],
    closed: false,
    proto: false,
};

const OPENAI_STREAM_OPTIONS: Schema = Schema {
    fields: &[field("include_usage", Ty::Bool), field("include_obfuscation", Ty::Bool)],
    closed: true,
    proto: false,
};

macro_rules! openai_chat_fields {
    ($model:expr) => {
        &[
            $model,
            field("messages", Ty::Arr).required().non_empty().of(&OPENAI_MESSAGE),
            field("audio", Ty::Obj).nullable(),
            field("frequency_penalty", Ty::Num).nullable().range(-2.0, 2.0),
            field("function_call", Ty::Any),
            field("functions", Ty::Arr).nullable(),
            field("logit_bias", Ty::Obj).nullable(),
            field("logprobs", Ty::Bool).nullable(),
            field("max_completion_tokens", Ty::Int).nullable().at_least(1.0),
            field("max_tokens", Ty::Int).nullable().at_least(1.0),
            field("metadata", Ty::Obj).nullable(),
            field("modalities", Ty::Arr).nullable(),
            field("n", Ty::Int).nullable().range(1.0, 128.0),
            field("parallel_tool_calls", Ty::Bool).nullable(),
            field("prediction", Ty::Obj).nullable(),
            field("presence_penalty", Ty::Num).nullable().range(-2.0, 2.0),
            field("prompt_cache_key", Ty::Str).nullable(),
            field("prompt_cache_retention", Ty::Str).nullable(),
            field("reasoning_effort", Ty::Str)
                .nullable()
                .one_of(&["none", "minimal", "low", "medium", "high", "xhigh"]),
            field("response_format", Ty::Obj).nullable(),
            field("safety_identifier", Ty::Str).nullable(),
            field("seed", Ty::Int).nullable(),
            field("service_tier", Ty::Str)
                .nullable()
                .one_of(&["auto", "default", "flex", "scale", "priority"]),
            field("stop", Ty::StrOrArr).nullable(),
            field("store", Ty::Bool).nullable(),
            field("stream", Ty::Bool).nullable(),
            field("stream_options", Ty::Obj).nullable().of(&OPENAI_STREAM_OPTIONS),
            field("temperature", Ty::Num).nullable().range(0.0, 2.0),
            field("tool_choice", Ty::Any),
            field("tools", Ty::Arr),
            field("top_logprobs", Ty::Int).nullable().range(0.0, 20.0),
            field("top_p", Ty::Num).nullable().range(0.0, 1.0),
            field("user", Ty::Str).nullable(),
            field("verbosity", Ty::Str)
                .nullable()
                .one_of(&["low", "medium", "high"]),
            field("web_search_options", Ty::Obj).nullable(),
            // Azure OpenAI's own additions ("On your data", user security context).
            field("data_sources", Ty::Arr),
            field("user_security_context", Ty::Obj),
        ]
    };
}

/// The chat completion request body.
pub const OPENAI_CHAT: Schema = Schema {
    fields: openai_chat_fields!(field("model", Ty::Str).required()),
    closed: true,
    proto: false,
};

/// Azure's: the deployment in the path names the model.
pub const AZURE_CHAT: Schema = Schema {
    fields: openai_chat_fields!(field("model", Ty::Str)),
    closed: true,
    proto: false,
};

macro_rules! openai_embeddings_fields {
    ($model:expr) => {
        &[
            $model,
            field("input", Ty::Any).required(),
            field("dimensions", Ty::Int).at_least(1.0),
            field("encoding_format", Ty::Str).one_of(&["float", "base64"]),
            field("user", Ty::Str),
        ]
    };
}

/// The embeddings request body.
pub const OPENAI_EMBEDDINGS: Schema = Schema {
    fields: openai_embeddings_fields!(field("model", Ty::Str).required()),
    closed: true,
    proto: false,
};

/// Azure's: the deployment in the path names the model.
pub const AZURE_EMBEDDINGS: Schema = Schema {
    fields: openai_embeddings_fields!(field("model", Ty::Str)),
    closed: true,
    proto: false,
};

/// The legacy completions request body (Azure's too: `model` is checked by OpenAI only, where
/// the gateway always sets it).
pub const OPENAI_COMPLETIONS: Schema = Schema {
    fields: &[
        field("model", Ty::Str),
        field("prompt", Ty::Any).required(),
        field("best_of", Ty::Int).nullable(),
        field("echo", Ty::Bool).nullable(),
        field("frequency_penalty", Ty::Num).nullable().range(-2.0, 2.0),
        field("logit_bias", Ty::Obj).nullable(),
        field("logprobs", Ty::Int).nullable(),
        field("max_tokens", Ty::Int).nullable().at_least(0.0),
        field("n", Ty::Int).nullable(),
        field("presence_penalty", Ty::Num).nullable().range(-2.0, 2.0),
        field("seed", Ty::Int).nullable(),
        field("stop", Ty::StrOrArr).nullable(),
        field("stream", Ty::Bool).nullable(),
        field("stream_options", Ty::Obj).nullable().of(&OPENAI_STREAM_OPTIONS),
        field("suffix", Ty::Str).nullable(),
        field("temperature", Ty::Num).nullable().range(0.0, 2.0),
        field("top_p", Ty::Num).nullable().range(0.0, 1.0),
        field("user", Ty::Str),
    ],
    closed: true,
    proto: false,
};

/// The Responses API request body.
pub const OPENAI_RESPONSES: Schema = Schema {
    fields: &[
        field("model", Ty::Str),
        field("input", Ty::StrOrArr),
        field("background", Ty::Bool).nullable(),
        field("conversation", Ty::Any),
        field("include", Ty::Arr).nullable(),
        field("instructions", Ty::Any),
        field("max_output_tokens", Ty::Int).nullable().at_least(16.0),
        field("max_tool_calls", Ty::Int).nullable(),
        field("metadata", Ty::Obj).nullable(),
        field("parallel_tool_calls", Ty::Bool).nullable(),
        field("previous_response_id", Ty::Str).nullable(),
        field("prompt", Ty::Obj).nullable(),
        field("prompt_cache_key", Ty::Str),
        field("prompt_cache_retention", Ty::Str).nullable(),
        field("reasoning", Ty::Obj).nullable(),
        field("safety_identifier", Ty::Str),
        field("service_tier", Ty::Str)
            .nullable()
            .one_of(&["auto", "default", "flex", "scale", "priority"]),
        field("store", Ty::Bool).nullable(),
        field("stream", Ty::Bool).nullable(),
        field("stream_options", Ty::Obj).nullable(),
        field("temperature", Ty::Num).nullable().range(0.0, 2.0),
        field("text", Ty::Obj),
        field("tool_choice", Ty::Any),
        field("tools", Ty::Arr),
        field("top_logprobs", Ty::Int).nullable().range(0.0, 20.0),
        field("top_p", Ty::Num).nullable().range(0.0, 1.0),
        field("truncation", Ty::Str).nullable().one_of(&["auto", "disabled"]),
        field("user", Ty::Str),
    ],
    closed: true,
    proto: false,
};

// ---------------------------------------------------------------------------------------------
// Anthropic: API reference, Messages > Create a Message. Extra fields are refused
// (`X: Extra inputs are not permitted`); roles are `user` and `assistant` (they need not
// alternate: consecutive turns of one role are merged); `system` is a string or text blocks.

/// Every content block type a request may carry.
const ANTHROPIC_BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
];

const ANTHROPIC_BLOCK: Schema = Schema {
    fields: &[field("type", Ty::Str).required().one_of(ANTHROPIC_BLOCK_TYPES)],
    closed: false,
    proto: false,
};

const ANTHROPIC_SYSTEM_BLOCK: Schema = Schema {
    fields: &[
        field("type", Ty::Str).required().one_of(&["text"]),
        field("text", Ty::Str).required(),
        field("cache_control", Ty::Obj).nullable(),
        field("citations", Ty::Arr).nullable(),
    ],
    closed: true,
    proto: false,
};

const ANTHROPIC_MESSAGE: Schema = Schema {
    fields: &[
        field("role", Ty::Str).required().one_of(&["user", "assistant"]),
        field("content", Ty::StrOrArr).required().of(&ANTHROPIC_BLOCK),
    ],
    closed: true,
    proto: false,
};

macro_rules! anthropic_fields {
    ($($extra:expr),* $(,)?) => {
        &[
            $($extra,)*
            field("max_tokens", Ty::Int).required().at_least(1.0),
            field("messages", Ty::Arr).required().non_empty().of(&ANTHROPIC_MESSAGE),
            field("cache_control", Ty::Obj).nullable(),
            field("container", Ty::Any),
            field("context_management", Ty::Obj).nullable(),
            field("diagnostics", Ty::Obj).nullable(),
            field("inference_geo", Ty::Str).nullable(),
            field("mcp_servers", Ty::Arr),
            field("metadata", Ty::Obj),
            field("output_config", Ty::Obj),
            field("output_format", Ty::Obj).nullable(),
            field("service_tier", Ty::Str).one_of(&["auto", "standard_only"]),
            field("speed", Ty::Str),
            field("stop_sequences", Ty::Arr),
            field("stream", Ty::Bool),
            field("system", Ty::StrOrArr).of(&ANTHROPIC_SYSTEM_BLOCK),
            field("temperature", Ty::Num).range(0.0, 1.0),
            field("thinking", Ty::Obj),
            field("tool_choice", Ty::Obj),
            field("tools", Ty::Arr),
            field("top_k", Ty::Int).at_least(0.0),
            field("top_p", Ty::Num).range(0.0, 1.0),
            field("user_profile_id", Ty::Str),
            field("workspace_id", Ty::Str),
        ]
    };
}

/// `POST /v1/messages`.
pub const ANTHROPIC_MESSAGES: Schema = Schema {
    fields: anthropic_fields![field("model", Ty::Str).required()],
    closed: true,
    proto: false,
};

/// The Messages body on Vertex (`:rawPredict`) and Bedrock (`InvokeModel`): the model is in the
/// path and `anthropic_version` in the body.
pub const ANTHROPIC_HOSTED: Schema = Schema {
    fields: anthropic_fields![
        field("anthropic_version", Ty::Str).required(),
        field("anthropic_beta", Ty::Arr),
        field("model", Ty::Str),
    ],
    closed: true,
    proto: false,
};

// ---------------------------------------------------------------------------------------------
// Bedrock: API reference, Converse / ConverseStream request syntax. A ContentBlock is a union:
// exactly one member set.

/// The members of Bedrock's `ContentBlock` union.
pub const BEDROCK_BLOCK_MEMBERS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
];

const BEDROCK_MESSAGE: Schema = Schema {
    fields: &[
        field("role", Ty::Str).required().one_of(&["user", "assistant"]),
        field("content", Ty::Arr).required(),
    ],
    closed: true,
    proto: false,
};

const BEDROCK_INFERENCE: Schema = Schema {
    fields: &[
        field("maxTokens", Ty::Int).at_least(1.0),
        field("temperature", Ty::Num).range(0.0, 1.0),
        field("topP", Ty::Num).range(0.0, 1.0),
        field("stopSequences", Ty::Arr),
    ],
    closed: true,
    proto: false,
};

/// `Converse` and `ConverseStream`.
pub const BEDROCK_CONVERSE: Schema = Schema {
    fields: &[
        field("messages", Ty::Arr).required().of(&BEDROCK_MESSAGE),
        field("system", Ty::Arr),
        field("inferenceConfig", Ty::Obj).of(&BEDROCK_INFERENCE),
        field("toolConfig", Ty::Obj),
        field("guardrailConfig", Ty::Obj),
        field("additionalModelRequestFields", Ty::Obj),
        field("additionalModelResponseFieldPaths", Ty::Arr),
        field("promptVariables", Ty::Obj),
        field("requestMetadata", Ty::Obj),
        field("performanceConfig", Ty::Obj),
    ],
    closed: true,
    proto: false,
};

/// The members of Bedrock's `SystemContentBlock` union.
const BEDROCK_SYSTEM_MEMBERS: &[&str] = &["text", "guardContent", "cachePoint"];

/// The first content block of a Converse request that is not a union with exactly one known
/// member set, if any: its path and the members it names.
pub fn bedrock_bad_block(req: &Value) -> Option<(Path, usize)> {
    let union_ok = |b: &Value, members: &[&str]| {
        b.as_object().is_some_and(|o| {
            o.keys().all(|k| members.contains(&k.as_str())) && o.values().filter(|v| !v.is_null()).count() == 1
        })
    };
    let named = |b: &Value| b.as_object().map_or(0, |o| o.len());
    for (i, m) in req["messages"].as_array().into_iter().flatten().enumerate() {
        for (j, b) in m["content"].as_array().into_iter().flatten().enumerate() {
            if !union_ok(b, BEDROCK_BLOCK_MEMBERS) {
                let path = Path(vec![
                    Step::Key("messages".into()),
                    Step::Index(i),
                    Step::Key("content".into()),
                    Step::Index(j),
                ]);
                return Some((path, named(b)));
            }
        }
    }
    for (i, b) in req["system"].as_array().into_iter().flatten().enumerate() {
        if !union_ok(b, BEDROCK_SYSTEM_MEMBERS) {
            return Some((Path(vec![Step::Key("system".into()), Step::Index(i)]), named(b)));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Gemini and Vertex AI: API reference, models.generateContent (GenerateContentRequest, Content,
// Part, GenerationConfig). Protocol-buffer JSON: unknown names are refused, snake_case names
// are taken too.

const GEMINI_PART: Schema = Schema {
    fields: &[
        field("text", Ty::Str),
        field("inlineData", Ty::Obj),
        field("functionCall", Ty::Obj),
        field("functionResponse", Ty::Obj),
        field("fileData", Ty::Obj),
        field("executableCode", Ty::Obj),
        field("codeExecutionResult", Ty::Obj),
        field("thought", Ty::Bool),
        field("thoughtSignature", Ty::Str),
        field("videoMetadata", Ty::Obj),
        field("partMetadata", Ty::Obj),
        field("mediaResolution", Ty::Any),
    ],
    closed: true,
    proto: true,
};

const GEMINI_CONTENT: Schema = Schema {
    fields: &[
        field("role", Ty::Str).one_of(&["user", "model", "function", "tool"]),
        field("parts", Ty::Arr).required().of(&GEMINI_PART),
    ],
    closed: true,
    proto: true,
};

const GEMINI_SYSTEM: Schema = Schema {
    fields: &[
        field("role", Ty::Str),
        field("parts", Ty::Arr).required().of(&GEMINI_PART),
    ],
    closed: true,
    proto: true,
};

const GEMINI_GENERATION_CONFIG: Schema = Schema {
    fields: &[
        field("stopSequences", Ty::Arr),
        field("responseMimeType", Ty::Str),
        field("responseSchema", Ty::Obj),
        field("responseJsonSchema", Ty::Any),
        field("_responseJsonSchema", Ty::Any),
        field("responseModalities", Ty::Arr),
        field("candidateCount", Ty::Int),
        field("maxOutputTokens", Ty::Int).at_least(1.0),
        field("temperature", Ty::Num).range(0.0, 2.0),
        field("topP", Ty::Num).range(0.0, 1.0),
        field("topK", Ty::Num),
        field("seed", Ty::Int),
        field("presencePenalty", Ty::Num),
        field("frequencyPenalty", Ty::Num),
        field("responseLogprobs", Ty::Bool),
        field("logprobs", Ty::Int),
        field("enableEnhancedCivicAnswers", Ty::Bool),
        field("speechConfig", Ty::Obj),
        field("thinkingConfig", Ty::Obj),
        field("imageConfig", Ty::Obj),
        field("mediaResolution", Ty::Str),
        field("audioTimestamp", Ty::Bool),
        field("routingConfig", Ty::Obj),
    ],
    closed: true,
    proto: true,
};

/// `generateContent`, `streamGenerateContent` (and `countTokens`, which takes the same fields).
pub const GEMINI_GENERATE: Schema = Schema {
    fields: &[
        field("contents", Ty::Arr).required().non_empty().of(&GEMINI_CONTENT),
        field("model", Ty::Str),
        field("tools", Ty::Arr),
        field("toolConfig", Ty::Obj),
        field("safetySettings", Ty::Arr),
        field("systemInstruction", Ty::Obj).of(&GEMINI_SYSTEM),
        field("generationConfig", Ty::Obj).of(&GEMINI_GENERATION_CONFIG),
        field("cachedContent", Ty::Str),
        // Vertex AI only, taken here for both front doors.
        field("labels", Ty::Obj),
        field("generateContentRequest", Ty::Obj),
    ],
    closed: true,
    proto: true,
};

// ---------------------------------------------------------------------------------------------
// Cohere: API reference, Chat (v2). Roles `user`, `assistant`, `system`, `tool`.

const COHERE_MESSAGE: Schema = Schema {
    fields: &[
        field("role", Ty::Str)
            .required()
            .one_of(&["user", "assistant", "system", "tool"]),
        field("content", Ty::Any),
        field("tool_calls", Ty::Arr),
        field("tool_call_id", Ty::Str),
        field("tool_plan", Ty::Str),
    ],
    closed: false,
    proto: false,
};

/// `POST /v2/chat`.
pub const COHERE_CHAT: Schema = Schema {
    fields: &[
        field("model", Ty::Str).required(),
        field("messages", Ty::Arr).required().of(&COHERE_MESSAGE),
        field("stream", Ty::Bool),
        field("tools", Ty::Arr),
        field("documents", Ty::Arr),
        field("citation_options", Ty::Obj),
        field("response_format", Ty::Obj),
        field("safety_mode", Ty::Str).one_of(&["CONTEXTUAL", "STRICT", "OFF"]),
        field("max_tokens", Ty::Int).at_least(1.0),
        field("stop_sequences", Ty::Arr),
        field("temperature", Ty::Num).at_least(0.0),
        field("seed", Ty::Int),
        field("frequency_penalty", Ty::Num).range(0.0, 1.0),
        field("presence_penalty", Ty::Num).range(0.0, 1.0),
        field("k", Ty::Int).range(0.0, 500.0),
        field("p", Ty::Num).range(0.01, 0.99),
        field("logprobs", Ty::Bool),
        field("tool_choice", Ty::Str).one_of(&["REQUIRED", "NONE"]),
        field("strict_tools", Ty::Bool),
        field("thinking", Ty::Obj),
        field("priority", Ty::Int),
    ],
    closed: true,
    proto: false,
};

// ---------------------------------------------------------------------------------------------
// Wording shared by more than one provider.

/// `'a', 'b', and 'c'` (OpenAI's list).
pub fn quoted_list(values: &[&str], conjunction: &str, oxford: bool) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => {
            let comma = if oxford && init.len() > 1 { "," } else { "" };
            format!("{}{comma} {conjunction} {last}", init.join(", "))
        }
    }
}

/// What Anthropic's validation (pydantic) says about a violation, without the path.
pub fn pydantic_words(v: &Violation) -> String {
    match v {
        Violation::NotObject => "Input should be a valid dictionary".to_owned(),
        Violation::Missing(_) => "Field required".to_owned(),
        Violation::Unknown(_) => "Extra inputs are not permitted".to_owned(),
        Violation::Type { expected, .. } => format!(
            "Input should be a valid {}",
            match expected {
                Ty::Str | Ty::StrOrArr => "string",
                Ty::Int => "integer",
                Ty::Num => "number",
                Ty::Bool => "boolean",
                Ty::Obj => "dictionary",
                Ty::Arr => "list",
                Ty::Any => "value",
            }
        ),
        Violation::Enum { path, got, allowed } if path.leaf() == "type" && allowed.len() > 1 => format!(
            "Input tag '{got}' found using 'type' does not match any of the expected tags: {}",
            quoted_list(allowed, "or", false).replace(" or ", ", ")
        ),
        Violation::Enum { allowed, .. } => format!("Input should be {}", quoted_list(allowed, "or", false)),
        Violation::Below { min, .. } => format!("Input should be greater than or equal to {}", num(*min)),
        Violation::Above { max, .. } => format!("Input should be less than or equal to {}", num(*max)),
        Violation::Empty(_) => "List should have at least 1 item after validation, not 0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_render_per_provider() {
        let p = Path(vec![
            Step::Key("messages".into()),
            Step::Index(1),
            Step::Key("role".into()),
        ]);
        assert_eq!(p.brackets(), "messages[1].role");
        assert_eq!(p.dotted(), "messages.1.role");
        assert_eq!(p.aws(), "messages.2.member.role");
        assert_eq!(p.leaf(), "role");
    }

    #[test]
    fn proto_names_take_snake_case() {
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                          "generation_config": {"max_output_tokens": 5}});
        assert_eq!(check(&body, &GEMINI_GENERATE), Ok(()));
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}], "generation_config": {"max_tokens": 5}});
        assert_eq!(
            check(&body, &GEMINI_GENERATE).map_err(|v| v.path().brackets()),
            Err("generationConfig.max_tokens".to_owned())
        );
    }

    #[test]
    fn bedrock_blocks_are_unions() {
        let ok = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]});
        assert_eq!(bedrock_bad_block(&ok), None);
        let two = json!({"messages": [{"role": "user", "content": [{"text": "hi", "image": {}}]}]});
        assert_eq!(
            bedrock_bad_block(&two).map(|(p, n)| (p.aws(), n)),
            Some(("messages.1.member.content.1.member".to_owned(), 2))
        );
    }
}
