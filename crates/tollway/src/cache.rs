//! The exact-match response cache (`cache` in the config): an answer is kept for a while, and a
//! later request that is the same in every field that shapes the answer gets it again without
//! reaching a provider, at no cost.
//!
//! - **What counts as the same**: the key is a SHA-256 over every canonical field of the request
//!   (messages, tools, sampling, response format, the other API's extra fields) and the model
//!   group it was routed to, within a namespace: the caller's team, its key, or everyone
//!   (`scope`). Whether the client streams, asks for stream usage, or names an end user does not
//!   change the answer, so it is left out: a streamed request is answered from a whole answer and
//!   the other way round. The client API is part of the key only through fields that exist in one
//!   API alone.
//! - **Where**: in memory, least recently used first out, bounded in bytes; with `shared: true`
//!   also in Redis (`shared_state`), so that several instances answer from each other's answers.
//! - **Per request**: `Cache-Control: no-store` (neither read nor keep), `no-cache` (do not read,
//!   keep the fresh answer), `max-age=N` (only an answer younger than N seconds), and
//!   `x-tollway-cache-ttl: N` (keep this answer N seconds). The answer says what happened in
//!   `x-tollway-cache` (`hit`, `miss`, `refresh`, `bypass`) and, on a hit, `age`.
//! - **Cost truth**: a hit is a ledger row with `cache_hit`, no tokens and no cost, since no
//!   provider was paid; its body still carries the usage of the answer it repeats.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollway_core::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, ImageSource, Message, Part,
    ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, ToolDef, ToolResult,
    Usage,
};

/// Who may be answered from whose answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Callers with the same virtual key.
    Key,
    /// Callers of the same team (a key without a team: that key alone).
    Team,
    /// Every caller.
    Global,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "key" => Some(Scope::Key),
            "team" => Some(Scope::Team),
            "global" => Some(Scope::Global),
            _ => None,
        }
    }
}

/// The `cache` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// How long an answer is kept unless the request says otherwise.
    pub ttl: Duration,
    /// The memory held by cached answers, at most (least recently used leave first).
    pub max_bytes: usize,
    /// Larger answers are not kept.
    pub max_entry_bytes: usize,
    pub scope: Scope,
    /// Also keep answers in Redis (`shared_state`), for every instance.
    pub shared: bool,
    /// Only models with `cache: true`, and requests that send a cache header, use the cache
    /// (`mode: opt-in`); otherwise every model but those with `cache: false`.
    pub opt_in: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(3600),
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            scope: Scope::Team,
            shared: false,
            opt_in: false,
        }
    }
}

/// A request's cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }
}

/// Feeds a request's fields to the hash, each one delimited (a length or a tag before it), so
/// that no two different requests feed the same bytes.
struct Feed(Sha256);

impl Feed {
    fn tag(&mut self, t: u8) {
        self.0.update([t]);
    }
    fn str(&mut self, s: &str) {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.tag(0),
            Some(s) => {
                self.tag(1);
                self.str(s);
            }
        }
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                self.0.update(v.to_le_bytes());
            }
        }
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                self.0.update(v.to_bits().to_le_bytes());
            }
        }
    }
    fn opt_bool(&mut self, v: Option<bool>) {
        self.tag(match v {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }
    /// JSON text is self-delimiting; a map keeps the client's key order.
    fn value(&mut self, v: &Value) {
        // serialising into the hasher cannot fail: it has no I/O errors
        let _ = serde_json::to_writer(&mut HashWriter(&mut self.0), v);
    }
    fn opt_value(&mut self, v: Option<&Value>) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                self.value(v);
            }
        }
    }
    fn parts(&mut self, parts: &[Part]) {
        self.0.update((parts.len() as u64).to_le_bytes());
        for p in parts {
            match p {
                Part::Text {
                    text,
                    cache_control,
                } => {
                    self.tag(1);
                    self.str(text);
                    self.opt_value(cache_control.as_ref());
                }
                Part::Image(ImageSource::Base64 { media_type, data }) => {
                    self.tag(2);
                    self.str(media_type);
                    self.str(data);
                }
                Part::Image(ImageSource::Url(u)) => {
                    self.tag(3);
                    self.str(u);
                }
                Part::ToolCall(ToolCall {
                    id,
                    name,
                    arguments,
                }) => {
                    self.tag(4);
                    self.str(id);
                    self.str(name);
                    self.str(arguments);
                }
                Part::ToolResult(ToolResult {
                    tool_call_id,
                    content,
                    is_error,
                }) => {
                    self.tag(5);
                    self.str(tool_call_id);
                    self.parts(content);
                    self.opt_bool(Some(*is_error));
                }
                Part::Thinking { text, signature } => {
                    self.tag(6);
                    self.str(text);
                    self.opt_str(signature.as_deref());
                }
            }
        }
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The key of `req` (its `model` the group it goes to) in `namespace`.
pub fn key(req: &ChatRequest, namespace: &str) -> Key {
    // Every field is named, so that a field added to the request is a compile error here until
    // it is either hashed or said to leave the answer unchanged.
    let ChatRequest {
        model,
        messages,
        max_tokens,
        temperature,
        top_p,
        top_k,
        stop,
        stream: _,        // a whole answer serves a stream and the other way round
        include_usage: _, // only shapes what a streaming client sees
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user: _, // an end-user id for the provider's abuse monitoring
        betas,
        extra,
    } = req;
    let mut f = Feed(Sha256::new());
    f.str("tollway-cache-1");
    f.str(namespace);
    f.str(model);
    f.0.update((messages.len() as u64).to_le_bytes());
    for Message { role, content } in messages {
        f.tag(match role {
            Role::System => 1,
            Role::User => 2,
            Role::Assistant => 3,
            Role::Tool => 4,
        });
        f.parts(content);
    }
    f.opt_u32(*max_tokens);
    f.opt_f64(*temperature);
    f.opt_f64(*top_p);
    f.opt_u32(*top_k);
    f.0.update((stop.len() as u64).to_le_bytes());
    for s in stop {
        f.str(s);
    }
    f.0.update((tools.len() as u64).to_le_bytes());
    for ToolDef {
        name,
        description,
        parameters,
        strict,
    } in tools
    {
        f.str(name);
        f.opt_str(description.as_deref());
        f.value(parameters);
        f.opt_bool(*strict);
    }
    match tool_choice {
        None => f.tag(0),
        Some(ToolChoice::Auto) => f.tag(1),
        Some(ToolChoice::None) => f.tag(2),
        Some(ToolChoice::Required) => f.tag(3),
        Some(ToolChoice::Tool(name)) => {
            f.tag(4);
            f.str(name);
        }
    }
    f.opt_bool(*parallel_tool_calls);
    match response_format {
        None => f.tag(0),
        Some(ResponseFormat::Text) => f.tag(1),
        Some(ResponseFormat::JsonObject) => f.tag(2),
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        }) => {
            f.tag(3);
            f.str(name);
            f.opt_str(description.as_deref());
            f.value(schema);
            f.opt_bool(*strict);
        }
    }
    f.0.update((betas.len() as u64).to_le_bytes());
    for b in betas {
        f.str(b);
    }
    // Fields of one API alone: the API is part of the key only when there are some.
    if extra.fields.is_empty() {
        f.tag(0);
    } else {
        f.str(extra.family.as_str());
        for (k, v) in &extra.fields {
            f.str(k);
            f.value(v);
        }
    }
    Key(f.0.finalize().into())
}

/// The key of an embeddings request (its `model` the public name) in `namespace`. The encoding
/// the client asked for (floats or base64) is not part of it.
pub fn embeddings_key(req: &EmbeddingsRequest, namespace: &str) -> Key {
    let EmbeddingsRequest {
        model,
        input,
        dimensions,
        input_type,
        user: _,
    } = req;
    let mut f = Feed(Sha256::new());
    f.str("tollway-cache-embeddings-1");
    f.str(namespace);
    f.str(model);
    f.0.update((input.len() as u64).to_le_bytes());
    for i in input {
        f.str(i);
    }
    f.opt_u32(*dimensions);
    f.opt_str(input_type.map(|t| t.as_str()));
    Key(f.0.finalize().into())
}

/// What a request asks of the cache (its `Cache-Control` and `x-tollway-cache-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    /// May be answered from the cache.
    pub read: bool,
    /// Its answer may be kept.
    pub write: bool,
    /// Only an answer at most this old will do.
    pub max_age: Option<Duration>,
    /// Keep its answer this long (instead of the configured `ttl_secs`).
    pub ttl: Option<Duration>,
    /// The request sent a cache header (which opts it in under `mode: opt-in`).
    pub asked: bool,
}

pub const H_CACHE: http::HeaderName = http::HeaderName::from_static("x-tollway-cache");
pub const H_CACHE_TTL: http::HeaderName = http::HeaderName::from_static("x-tollway-cache-ttl");

impl Directives {
    /// Reads the request's headers; a value that cannot be read is an error naming it.
    pub fn of(headers: &HeaderMap) -> Result<Directives, String> {
        let mut d = Directives {
            read: true,
            write: true,
            max_age: None,
            ttl: None,
            asked: false,
        };
        for v in headers.get_all(http::header::CACHE_CONTROL) {
            d.asked = true;
            let v = v
                .to_str()
                .map_err(|_| "the Cache-Control header is not text".to_string())?;
            for item in v.split(',') {
                let item = item.trim();
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (item, None),
                };
                if name.eq_ignore_ascii_case("no-store") {
                    d.read = false;
                    d.write = false;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    d.read = false;
                } else if name.eq_ignore_ascii_case("max-age") {
                    let secs = value.and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
                        format!("Cache-Control `{item}`: max-age takes a number of seconds")
                    })?;
                    d.max_age = Some(Duration::from_secs(secs));
                }
                // other directives (max-stale, only-if-cached...) do not apply to a gateway
            }
        }
        if let Some(v) = headers.get(H_CACHE_TTL) {
            d.asked = true;
            let secs = v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    "the x-tollway-cache-ttl header takes a number of seconds".to_string()
                })?;
            if secs == 0 {
                d.write = false;
            }
            d.ttl = Some(Duration::from_secs(secs));
        }
        Ok(d)
    }

    /// `x-tollway-cache` for an answer that was not a hit.
    pub fn status(&self) -> HeaderValue {
        HeaderValue::from_static(match (self.read, self.write) {
            (true, _) => "miss",
            (false, true) => "refresh",
            (false, false) => "bypass",
        })
    }
}

/// What is kept: a chat answer, or embeddings.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Chat(ChatResponse),
    Embeddings(EmbeddingsResponse),
}

impl Answer {
    /// Whether it can be kept (see [`Entry::keepable`] for chat answers).
    pub fn keepable(&self) -> bool {
        match self {
            Answer::Chat(a) => Entry::keepable(a),
            Answer::Embeddings(_) => true,
        }
    }
}

/// A kept answer and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub answer: Answer,
    /// The provider account and `provider/model` that gave it.
    pub provider: String,
    pub deployment: String,
    /// Unix milliseconds.
    pub stored_ms: i64,
    pub expires_ms: i64,
}

impl Entry {
    /// Roughly the memory it holds.
    pub fn size(&self) -> usize {
        let a = match &self.answer {
            Answer::Chat(a) => a,
            Answer::Embeddings(e) => {
                let floats: usize = e.data.iter().map(|v| 24 + 4 * v.len()).sum();
                return 256 + floats + e.model.len() + self.provider.len() + self.deployment.len();
            }
        };
        let parts: usize = a
            .content
            .iter()
            .map(|p| {
                48 + match p {
                    Part::Text { text, .. } => text.len(),
                    Part::ToolCall(c) => c.id.len() + c.name.len() + c.arguments.len(),
                    Part::Thinking { text, signature } => {
                        text.len() + signature.as_ref().map_or(0, String::len)
                    }
                    _ => 0,
                }
            })
            .sum();
        256 + parts + a.id.len() + a.model.len() + self.provider.len() + self.deployment.len()
    }

    /// Whether an answer can be kept: a complete one, of text, tool calls and thinking.
    pub fn keepable(answer: &ChatResponse) -> bool {
        !matches!(
            answer.stop_reason,
            StopReason::ContentFilter | StopReason::Other(_)
        ) && answer.content.iter().all(|p| {
            matches!(
                p,
                Part::Text { .. } | Part::ToolCall(_) | Part::Thinking { .. }
            )
        })
    }

    /// Seconds since it was stored.
    pub fn age_secs(&self, now_ms: i64) -> u64 {
        u64::try_from((now_ms - self.stored_ms).max(0) / 1000).unwrap_or(0)
    }
}

/// A least-recently-used map bounded in bytes.
struct Lru {
    map: lru::LruCache<Key, Arc<Entry>>,
    bytes: usize,
    max_bytes: usize,
}

impl Lru {
    fn evict_to(&mut self, max: usize) {
        while self.bytes > max {
            match self.map.pop_lru() {
                Some((_, e)) => self.bytes = self.bytes.saturating_sub(e.size()),
                None => {
                    self.bytes = 0;
                    break;
                }
            }
        }
    }
}

/// The in-memory cache, shared by every lane and kept across reloads.
pub struct Cache {
    lru: Mutex<Lru>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            lru: Mutex::new(Lru {
                map: lru::LruCache::unbounded(),
                bytes: 0,
                max_bytes: CacheConfig::default().max_bytes,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a (re)loaded config: the new bound, or nothing kept when caching is off.
    pub fn configure(&self, cfg: Option<&CacheConfig>) {
        let mut l = self.lock();
        l.max_bytes = cfg.map_or(0, |c| c.max_bytes);
        let max = l.max_bytes;
        l.evict_to(max);
        if max == 0 {
            l.map.clear();
            l.bytes = 0;
        }
    }

    /// The answer kept under `key`, if it is still fresh and no older than `max_age`.
    pub fn get(&self, key: &Key, now_ms: i64, max_age: Option<Duration>) -> Option<Arc<Entry>> {
        let mut l = self.lock();
        let e = l.map.get(key)?.clone();
        if e.expires_ms <= now_ms {
            l.map.pop(key);
            l.bytes = l.bytes.saturating_sub(e.size());
            return None;
        }
        drop(l);
        if max_age.is_some_and(|m| now_ms - e.stored_ms > m.as_millis() as i64) {
            return None;
        }
        Some(e)
    }

    pub fn put(&self, key: Key, entry: Arc<Entry>) {
        let size = entry.size();
        let mut l = self.lock();
        if size > l.max_bytes {
            return;
        }
        if let Some(old) = l.map.put(key, entry) {
            l.bytes = l.bytes.saturating_sub(old.size());
        }
        l.bytes += size;
        let max = l.max_bytes;
        l.evict_to(max);
    }

    /// Forgets every kept answer; how many there were.
    pub fn clear(&self) -> usize {
        let mut l = self.lock();
        let n = l.map.len();
        l.map.clear();
        l.bytes = 0;
        n
    }

    /// Entries and bytes held (for `/metrics`).
    pub fn held(&self) -> (usize, usize) {
        let l = self.lock();
        (l.map.len(), l.bytes)
    }

    pub fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The stream events that replay a whole answer to a streaming client: each block in one delta.
pub fn replay(answer: &ChatResponse) -> Vec<StreamEvent> {
    let u = answer.usage;
    let mut out = Vec::with_capacity(3 + 3 * answer.content.len());
    out.push(StreamEvent::Start {
        id: answer.id.clone(),
        model: answer.model.clone(),
        usage: Usage {
            input_tokens: u.input_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
            ..Usage::default()
        },
    });
    let mut index = 0u32;
    for p in &answer.content {
        match p {
            Part::Text { text, .. } => out.push(StreamEvent::TextDelta {
                index,
                text: text.clone(),
            }),
            Part::Thinking { text, signature } => {
                out.push(StreamEvent::ThinkingDelta {
                    index,
                    text: text.clone(),
                });
                if let Some(s) = signature {
                    out.push(StreamEvent::ThinkingSignature {
                        index,
                        signature: s.clone(),
                    });
                }
            }
            Part::ToolCall(c) => {
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: c.id.clone(),
                    name: c.name.clone(),
                });
                out.push(StreamEvent::ToolCallDelta {
                    index,
                    arguments: c.arguments.clone(),
                });
            }
            Part::Image(_) | Part::ToolResult(_) => continue,
        }
        out.push(StreamEvent::BlockStop { index });
        index += 1;
    }
    out.push(StreamEvent::Usage(u));
    out.push(StreamEvent::Finish {
        stop_reason: answer.stop_reason.clone(),
        stop_sequence: answer.stop_sequence.clone(),
    });
    out
}

/// Gathers a streamed answer into a whole one, to keep it. Gives up (and lets go of what it
/// gathered) past `max_bytes`.
pub struct Collector {
    answer: ChatResponse,
    /// Block index → position in `answer.content`.
    blocks: HashMap<u32, usize>,
    finished: bool,
    bytes: usize,
    max_bytes: usize,
    gave_up: bool,
}

impl Collector {
    pub fn new(max_bytes: usize) -> Self {
        Collector {
            answer: ChatResponse {
                id: String::new(),
                model: String::new(),
                content: Vec::new(),
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: Usage::default(),
                created: tollway_protocol::now_unix(),
            },
            blocks: HashMap::new(),
            finished: false,
            bytes: 0,
            max_bytes,
            gave_up: false,
        }
    }

    fn block(&mut self, index: u32, make: impl FnOnce() -> Part) -> &mut Part {
        let content = &mut self.answer.content;
        let at = *self.blocks.entry(index).or_insert_with(|| {
            content.push(make());
            content.len() - 1
        });
        &mut content[at]
    }

    pub fn push(&mut self, ev: &StreamEvent) {
        if self.gave_up {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, usage } => {
                self.answer.id.clone_from(id);
                self.answer.model.clone_from(model);
                self.answer.usage.merge(usage);
            }
            StreamEvent::TextDelta { index, text } => {
                self.bytes += text.len();
                if let Part::Text { text: t, .. } = self.block(*index, || Part::text("")) {
                    t.push_str(text);
                }
            }
            StreamEvent::ThinkingDelta { index, text } => {
                self.bytes += text.len();
                if let Part::Thinking { text: t, .. } = self.block(*index, || Part::Thinking {
                    text: String::new(),
                    signature: None,
                }) {
                    t.push_str(text);
                }
            }
            StreamEvent::ThinkingSignature { index, signature } => {
                self.bytes += signature.len();
                if let Part::Thinking { signature: s, .. } = self.block(*index, || Part::Thinking {
                    text: String::new(),
                    signature: None,
                }) {
                    s.get_or_insert_with(String::new).push_str(signature);
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.bytes += id.len() + name.len();
                let (id, name) = (id.clone(), name.clone());
                self.block(*index, || {
                    Part::ToolCall(ToolCall {
                        id,
                        name,
                        arguments: String::new(),
                    })
                });
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.bytes += arguments.len();
                if let Part::ToolCall(c) = self.block(*index, || {
                    Part::ToolCall(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    })
                }) {
                    c.arguments.push_str(arguments);
                }
            }
            StreamEvent::BlockStop { .. } => {}
            StreamEvent::Finish {
                stop_reason,
                stop_sequence,
            } => {
                self.finished = true;
                self.answer.stop_reason = stop_reason.clone();
                self.answer.stop_sequence.clone_from(stop_sequence);
            }
            StreamEvent::Usage(u) => self.answer.usage.merge(u),
        }
        if self.bytes > self.max_bytes {
            self.gave_up = true;
            self.answer.content = Vec::new();
            self.blocks = HashMap::new();
        }
    }

    /// The whole answer, when the stream finished and it can be kept.
    pub fn finish(self) -> Option<ChatResponse> {
        (self.finished && !self.gave_up && Entry::keepable(&self.answer)).then_some(self.answer)
    }
}

/// An entry as Redis keeps it (JSON).
#[derive(Serialize, Deserialize)]
struct Stored {
    answer: StoredAnswer,
    provider: String,
    deployment: String,
    stored_ms: i64,
    expires_ms: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredAnswer {
    Chat {
        id: String,
        model: String,
        content: Vec<StoredPart>,
        stop: StoredStop,
        #[serde(default)]
        stop_sequence: Option<String>,
        usage: [u64; 5],
        created: u64,
    },
    Embeddings {
        model: String,
        data: Vec<Vec<f32>>,
        usage: [u64; 5],
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum StoredPart {
    Text {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    Thinking {
        text: String,
        signature: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredStop {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
}

fn usage_array(u: &Usage) -> [u64; 5] {
    [
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    ]
}

fn usage_of(a: [u64; 5]) -> Usage {
    let [input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens] = a;
    Usage {
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
    }
}

/// The entry as bytes for Redis; `None` for what cannot be kept.
pub fn encode(e: &Entry) -> Option<Vec<u8>> {
    let answer = match &e.answer {
        Answer::Embeddings(r) => StoredAnswer::Embeddings {
            model: r.model.clone(),
            data: r.data.clone(),
            usage: usage_array(&r.usage),
        },
        Answer::Chat(a) => StoredAnswer::Chat {
            id: a.id.clone(),
            model: a.model.clone(),
            content: a
                .content
                .iter()
                .map(|p| match p {
                    Part::Text { text, .. } => Some(StoredPart::Text { text: text.clone() }),
                    Part::ToolCall(c) => Some(StoredPart::ToolCall {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    }),
                    Part::Thinking { text, signature } => Some(StoredPart::Thinking {
                        text: text.clone(),
                        signature: signature.clone(),
                    }),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
            stop: match a.stop_reason {
                StopReason::EndTurn => StoredStop::EndTurn,
                StopReason::MaxTokens => StoredStop::MaxTokens,
                StopReason::StopSequence => StoredStop::StopSequence,
                StopReason::ToolUse => StoredStop::ToolUse,
                _ => return None,
            },
            stop_sequence: a.stop_sequence.clone(),
            usage: usage_array(&a.usage),
            created: a.created,
        },
    };
    serde_json::to_vec(&Stored {
        answer,
        provider: e.provider.clone(),
        deployment: e.deployment.clone(),
        stored_ms: e.stored_ms,
        expires_ms: e.expires_ms,
    })
    .ok()
}

/// An entry read back from Redis; `None` for bytes that are not one (another version's, say).
pub fn decode(bytes: &[u8]) -> Option<Entry> {
    let s: Stored = serde_json::from_slice(bytes).ok()?;
    let answer = match s.answer {
        StoredAnswer::Embeddings { model, data, usage } => Answer::Embeddings(EmbeddingsResponse {
            model,
            data,
            usage: usage_of(usage),
        }),
        StoredAnswer::Chat {
            id,
            model,
            content,
            stop,
            stop_sequence,
            usage,
            created,
        } => Answer::Chat(ChatResponse {
            id,
            model,
            content: content
                .into_iter()
                .map(|p| match p {
                    StoredPart::Text { text } => Part::text(text),
                    StoredPart::ToolCall {
                        id,
                        name,
                        arguments,
                    } => Part::ToolCall(ToolCall {
                        id,
                        name,
                        arguments,
                    }),
                    StoredPart::Thinking { text, signature } => Part::Thinking { text, signature },
                })
                .collect(),
            stop_reason: match stop {
                StoredStop::EndTurn => StopReason::EndTurn,
                StoredStop::MaxTokens => StopReason::MaxTokens,
                StoredStop::StopSequence => StopReason::StopSequence,
                StoredStop::ToolUse => StopReason::ToolUse,
            },
            stop_sequence,
            usage: usage_of(usage),
            created,
        }),
    };
    Some(Entry {
        answer,
        provider: s.provider,
        deployment: s.deployment,
        stored_ms: s.stored_ms,
        expires_ms: s.expires_ms,
    })
}

/// The Redis key of an entry.
pub fn redis_key(prefix: &str, key: &Key) -> String {
    format!("{prefix}cache:{}", key.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(text: &str) -> ChatRequest {
        ChatRequest::simple("gpt", text)
    }

    fn answer(text: &str) -> ChatResponse {
        ChatResponse {
            id: "chatcmpl-1".into(),
            model: "gpt-4.1".into(),
            content: vec![
                Part::Thinking {
                    text: "hmm".into(),
                    signature: Some("sig".into()),
                },
                Part::text(text),
                Part::ToolCall(ToolCall {
                    id: "call_1".into(),
                    name: "lookup".into(),
                    arguments: r#"{"q":"x"}"#.into(),
                }),
            ],
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 2,
                cache_write_tokens: 0,
                reasoning_tokens: 1,
            },
            created: 1_700_000_000,
        }
    }

    fn entry(text: &str, stored_ms: i64, ttl_ms: i64) -> Arc<Entry> {
        Arc::new(Entry {
            answer: Answer::Chat(answer(text)),
            provider: "oai".into(),
            deployment: "oai/gpt-4.1".into(),
            stored_ms,
            expires_ms: stored_ms + ttl_ms,
        })
    }

    #[test]
    fn keys_change_with_what_shapes_the_answer_and_only_that() {
        let base = key(&req("hi"), "team:a");
        assert_eq!(
            base,
            key(&req("hi"), "team:a"),
            "the same request, the same key"
        );

        // presentation and end-user ids do not change the answer
        let mut r = req("hi");
        r.stream = true;
        r.include_usage = true;
        r.user = Some("u-1".into());
        assert_eq!(key(&r, "team:a"), base);

        // everything else does
        let mut variants: Vec<ChatRequest> = Vec::new();
        variants.push(req("hi!"));
        let mut r = req("hi");
        r.model = "gpt2".into();
        variants.push(r);
        let mut r = req("hi");
        r.temperature = Some(0.0);
        variants.push(r);
        let mut r = req("hi");
        r.max_tokens = Some(5);
        variants.push(r);
        let mut r = req("hi");
        r.stop = vec!["\n".into()];
        variants.push(r);
        let mut r = req("hi");
        r.messages[0].role = Role::System;
        variants.push(r);
        let mut r = req("hi");
        r.tools.push(ToolDef {
            name: "t".into(),
            description: None,
            parameters: json!({"type": "object"}),
            strict: None,
        });
        variants.push(r);
        let mut r = req("hi");
        r.response_format = Some(ResponseFormat::JsonObject);
        variants.push(r);
        let mut r = req("hi");
        r.extra.fields.insert("seed".into(), json!(7));
        variants.push(r);
        let mut r = req("hi");
        r.betas.push("context-1m-2025-08-07".into());
        variants.push(r);
        let mut r = req("hi");
        r.messages.push(Message::text(Role::Assistant, ""));
        variants.push(r);
        let mut keys: Vec<Key> = variants.iter().map(|r| key(r, "team:a")).collect();
        keys.push(base);
        keys.push(key(&req("hi"), "team:b"));
        let n = keys.len();
        keys.sort_by_key(|k| k.0);
        keys.dedup();
        assert_eq!(keys.len(), n, "every variant and namespace has its own key");
    }

    #[test]
    fn embeddings_keys_are_apart_from_chat_keys_and_follow_the_inputs() {
        let e = |input: &[&str], dimensions: Option<u32>| EmbeddingsRequest {
            model: "emb".into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            dimensions,
            input_type: None,
            user: None,
        };
        let base = embeddings_key(&e(&["a", "b"], None), "n");
        assert_eq!(base, embeddings_key(&e(&["a", "b"], None), "n"));
        let mut with_user = e(&["a", "b"], None);
        with_user.user = Some("u".into());
        assert_eq!(embeddings_key(&with_user, "n"), base);
        for other in [
            embeddings_key(&e(&["ab"], None), "n"),
            embeddings_key(&e(&["b", "a"], None), "n"),
            embeddings_key(&e(&["a", "b"], Some(8)), "n"),
            embeddings_key(&e(&["a", "b"], None), "m"),
            embeddings_key(
                &EmbeddingsRequest {
                    input_type: Some(tollway_core::InputType::SearchQuery),
                    ..e(&["a", "b"], None)
                },
                "n",
            ),
            key(&ChatRequest::simple("emb", "a\nb"), "n"),
        ] {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn text_split_differently_between_parts_is_another_request() {
        let mut a = req("");
        a.messages[0].content = vec![Part::text("ab"), Part::text("c")];
        let mut b = req("");
        b.messages[0].content = vec![Part::text("a"), Part::text("bc")];
        assert_ne!(key(&a, "n"), key(&b, "n"));
    }

    #[test]
    fn directives_follow_cache_control_and_the_ttl_header() {
        let of = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            Directives::of(&h)
        };
        let d = of(&[]).expect("none");
        assert!(d.read && d.write && d.max_age.is_none() && d.ttl.is_none() && !d.asked);
        assert_eq!(d.status(), "miss");
        let d = of(&[("cache-control", "no-cache")]).expect("no-cache");
        assert!(!d.read && d.write);
        assert_eq!(d.status(), "refresh");
        let d = of(&[("cache-control", "No-Store")]).expect("no-store");
        assert!(!d.read && !d.write);
        assert_eq!(d.status(), "bypass");
        let d = of(&[("cache-control", "max-age=60, stale-if-error=5")]).expect("max-age");
        assert_eq!(d.max_age, Some(Duration::from_secs(60)));
        let d = of(&[("x-tollway-cache-ttl", "30")]).expect("ttl");
        assert_eq!(d.ttl, Some(Duration::from_secs(30)));
        assert!(d.asked);
        assert!(d.write);
        assert!(!of(&[("x-tollway-cache-ttl", "0")]).expect("ttl 0").write);
        let e = of(&[("cache-control", "max-age=soon")]).expect_err("bad max-age");
        assert!(e.contains("max-age"), "{e}");
        let e = of(&[("x-tollway-cache-ttl", "-1")]).expect_err("bad ttl");
        assert!(e.contains("x-tollway-cache-ttl"), "{e}");
    }

    #[test]
    fn the_cache_forgets_expired_and_least_recently_used_answers() {
        let c = Cache::default();
        let size = entry("x", 0, 1).size();
        c.configure(Some(&CacheConfig {
            max_bytes: size * 2 + size / 2,
            ..CacheConfig::default()
        }));
        let (k1, k2, k3) = (Key([1; 32]), Key([2; 32]), Key([3; 32]));
        c.put(k1, entry("x", 1_000, 10_000));
        c.put(k2, entry("x", 1_000, 10_000));
        assert!(
            c.get(&k1, 2_000, None).is_some(),
            "k1 used: k2 is now the oldest"
        );
        c.put(k3, entry("x", 1_000, 10_000));
        assert!(
            c.get(&k2, 2_000, None).is_none(),
            "evicted to stay within the bound"
        );
        assert!(c.get(&k1, 2_000, None).is_some());
        assert_eq!(c.held(), (2, 2 * size));
        // max-age: too old for this request, still there for others
        assert!(c.get(&k1, 5_000, Some(Duration::from_secs(3))).is_none());
        assert!(c.get(&k1, 5_000, Some(Duration::from_secs(4))).is_some());
        // expired: gone
        assert!(c.get(&k1, 11_000, None).is_none());
        assert_eq!(c.held().0, 1);
        // an entry larger than the whole cache is not kept
        c.configure(Some(&CacheConfig {
            max_bytes: size / 2,
            ..CacheConfig::default()
        }));
        assert_eq!(c.held(), (0, 0));
        c.put(k1, entry("x", 1_000, 10_000));
        assert_eq!(c.held(), (0, 0));
        // turned off: nothing kept
        c.configure(Some(&CacheConfig::default()));
        c.put(k1, entry("x", 1_000, 10_000));
        c.configure(None);
        assert_eq!(c.held(), (0, 0));
    }

    #[test]
    fn a_replayed_answer_collects_back_into_the_same_answer() {
        let a = answer("hello");
        let mut c = Collector::new(1 << 20);
        for ev in replay(&a) {
            c.push(&ev);
        }
        let mut back = c.finish().expect("a finished stream");
        back.created = a.created;
        assert_eq!(back, a);
    }

    #[test]
    fn streams_that_did_not_finish_or_grew_too_large_are_not_kept() {
        let a = answer("hello");
        let events = replay(&a);
        let mut c = Collector::new(1 << 20);
        for ev in &events[..events.len() - 1] {
            c.push(ev);
        }
        assert!(c.finish().is_none(), "no Finish: the stream broke off");
        let mut c = Collector::new(4);
        for ev in &events {
            c.push(ev);
        }
        assert!(c.finish().is_none(), "past the entry bound");
        let mut filtered = answer("x");
        filtered.stop_reason = StopReason::ContentFilter;
        assert!(!Entry::keepable(&filtered));
    }

    #[test]
    fn entries_cross_redis_and_back_unchanged() {
        let e = entry("héllo \"quoted\"", 1_000, 60_000);
        let bytes = encode(&e).expect("encodable");
        assert_eq!(decode(&bytes).as_ref(), Some(&*e));
        let emb = Entry {
            answer: Answer::Embeddings(EmbeddingsResponse {
                model: "text-embedding-3-small".into(),
                data: vec![vec![0.1, -2.5e-8, 1.0 / 3.0], vec![f32::MIN_POSITIVE, 7.0]],
                usage: Usage {
                    input_tokens: 4,
                    ..Usage::default()
                },
            }),
            provider: "oai".into(),
            deployment: "oai/text-embedding-3-small".into(),
            stored_ms: 5,
            expires_ms: 10,
        };
        let bytes = encode(&emb).expect("encodable");
        assert_eq!(decode(&bytes), Some(emb), "floats back bit for bit");
        assert!(decode(b"{\"not\": \"an entry\"}").is_none());
        assert!(decode(b"\xff\xfe").is_none());
        assert_eq!(
            redis_key("tw:", &Key([0xab; 32])),
            format!("tw:cache:{}", "ab".repeat(32))
        );
    }
}
