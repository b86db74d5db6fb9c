//! Path-aware reading of JSON request bodies: every type error names the field it is about
//! (`messages[2].content`), so clients learn exactly what to fix.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tollway_core::ProviderError;

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses a request body that must be a JSON object, with clear errors for bad UTF-8, bad JSON and
/// a body of the wrong type.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ProviderError> {
    parse_object_str(body_text(bytes)?)
}

/// A request body as text, or the error naming the first byte that is not UTF-8.
pub fn body_text(bytes: &[u8]) -> Result<&str, ProviderError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ProviderError::invalid(format!(
            "Request body is not valid UTF-8 (invalid byte at offset {}).",
            e.valid_up_to()
        ))
    })
}

/// [`parse_object`] for a body already checked as UTF-8 ([`body_text`]).
pub fn parse_object_str(text: &str) -> Result<Map<String, Value>, ProviderError> {
    if text.bytes().all(|b| b.is_ascii_whitespace()) {
        return Err(ProviderError::invalid(
            "Request body is empty: expected a JSON object.",
        ));
    }
    // from the checked text: serde_json then does not check each string's UTF-8 again
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ProviderError::invalid(format!("Request body is not valid JSON: {e}.")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ProviderError::invalid(format!(
            "Invalid type for the request body: expected a JSON object, got {}.",
            type_name(&other)
        ))),
    }
}

/// Parses an upstream's JSON answer (no path needed: the upstream, not the client, is at fault).
pub fn parse_upstream(bytes: &[u8], what: &str) -> Result<Value, ProviderError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ProviderError::new(
            tollway_core::ErrorKind::InvalidResponse,
            format!("the provider sent {what} that is not valid JSON: {e}"),
        )
    })
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn wrong_type(path: &str, expected: &str, got: &Value) -> ProviderError {
    ProviderError::invalid(format!(
        "Invalid type for `{path}`: expected {expected}, got {}.",
        type_name(got)
    ))
    .with_param(path)
}

pub fn invalid_value(path: &str, problem: impl std::fmt::Display) -> ProviderError {
    ProviderError::invalid(format!("Invalid value for `{path}`: {problem}.")).with_param(path)
}

pub fn missing(path: &str) -> ProviderError {
    ProviderError::invalid(format!("Missing required field `{path}`.")).with_param(path)
}

pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A client's request body through `fast` when it takes it (the common shape, read into typed
/// fields), else through `general` (any body; every error names its field). The two must agree
/// wherever `fast` accepts a body: [`same_both_ways`] checks it in each format's tests.
///
/// The body is checked as UTF-8 once, here, for both paths (a body the fast path leaves, such as
/// one with images, is not checked a second time).
pub fn fast_or_general<T>(
    bytes: &[u8],
    fast: impl FnOnce(&str) -> Option<T>,
    general: impl FnOnce(&str) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let text = body_text(bytes)?;
    match fast(text) {
        Some(r) => Ok(r),
        None => general(text),
    }
}

/// Whether `fast` took `text`; panics if it took it and `general` gives anything else.
#[cfg(test)]
pub(crate) fn same_both_ways<T: PartialEq + std::fmt::Debug>(
    text: &str,
    fast: impl FnOnce(&str) -> Option<T>,
    general: impl FnOnce(&str) -> Result<T, ProviderError>,
) -> bool {
    match fast(text) {
        None => false,
        Some(f) => {
            let g = general(text);
            assert_eq!(
                g.as_ref().ok(),
                Some(&f),
                "fast and general differ on {text}"
            );
            true
        }
    }
}

/// Appends `s` as a JSON string, byte for byte as serde_json writes it. The usual string needs
/// no escape at all, and is found so 64 bytes at a time and copied in one piece; serde_json
/// checks and copies byte by byte. With a ~4 KB prompt, escaping cost 40.1 k instructions per
/// request through serde_json and 6.0 k through this (callgrind, bench/RESULTS.md).
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // writing to a Vec cannot fail
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Appends `v` as serde_json writes it: the rarer parts of bodies written by hand from fragments
/// (tool calls, image parts, extra fields). Writing plain data with string keys to a `Vec` cannot
/// fail; `null` stands in if it ever did.
pub fn put_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Appends each entry of `rest` as `,"key":value`: the extra fields after a body's typed ones.
pub fn put_entries(out: &mut Vec<u8>, rest: &serde_json::Map<String, serde_json::Value>) {
    for (k, v) in rest {
        out.push(b',');
        put_str(out, k);
        out.push(b':');
        put_value(out, v);
    }
}

/// A byte a JSON string cannot hold as it is: a control character, `"` or `\` (what serde_json
/// escapes when writing, and what ends a run of plain content when reading, `crate::scan`).
pub(crate) fn is_special(x: u8) -> bool {
    x < 0x20 || x == b'"' || x == b'\\'
}

/// Whether JSON needs any of `b` escaped ([`is_special`]; serde_json writes everything else as
/// it is).
fn needs_escape(b: &[u8]) -> bool {
    // 64 bytes a step, no early exit inside a step and a byte-wide accumulator, so that the
    // compiler checks each step as a few vectors and tests the result once: 0.039 ns per byte
    // against 0.080 for 16-byte steps with a `bool` (a 100 KB prompt, this machine)
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        let mut m = 0u8;
        for &x in c {
            m |= u8::from(x < 0x20) | u8::from(x == b'"') | u8::from(x == b'\\');
        }
        if m != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&x| is_special(x))
}

/// A JSON object being taken apart field by field. Fields are removed as they are read, so what
/// remains at the end is exactly the set of fields the reader did not understand.
pub struct Obj {
    pub map: Map<String, Value>,
    pub path: String,
}

impl Obj {
    pub fn new(map: Map<String, Value>, path: impl Into<String>) -> Self {
        Obj {
            map,
            path: path.into(),
        }
    }

    /// Reads `v` (found at `path`) as an object.
    pub fn from_value(v: Value, path: String) -> Result<Self, ProviderError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(wrong_type(&path, "an object", &other)),
        }
    }

    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The field, or `None` when absent or `null`.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn require(&mut self, key: &str) -> Result<Value, ProviderError> {
        self.take(key).ok_or_else(|| missing(&self.path_of(key)))
    }

    pub fn str(&mut self, key: &str) -> Result<Option<String>, ProviderError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.path_of(key), "a string", &other)),
        }
    }

    pub fn req_str(&mut self, key: &str) -> Result<String, ProviderError> {
        self.str(key)?.ok_or_else(|| missing(&self.path_of(key)))
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ProviderError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(wrong_type(&self.path_of(key), "a boolean", &other)),
        }
    }

    pub fn f64(&mut self, key: &str) -> Result<Option<f64>, ProviderError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(wrong_type(&self.path_of(key), "a number", &other)),
        }
    }

    pub fn u32(&mut self, key: &str) -> Result<Option<u32>, ProviderError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= u64::from(u32::MAX) => Ok(Some(v as u32)),
                _ => Err(invalid_value(
                    &self.path_of(key),
                    format!("expected a non-negative integer, got {n}"),
                )),
            },
            Some(other) => Err(wrong_type(&self.path_of(key), "an integer", &other)),
        }
    }

    pub fn array(&mut self, key: &str) -> Result<Option<Vec<Value>>, ProviderError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(wrong_type(&self.path_of(key), "an array", &other)),
        }
    }

    pub fn obj(&mut self, key: &str) -> Result<Option<Obj>, ProviderError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => Obj::from_value(v, self.path_of(key)).map(Some),
        }
    }

    /// A string or an array of strings (OpenAI `stop`).
    pub fn strings(&mut self, key: &str) -> Result<Vec<String>, ProviderError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::Array(a)) => {
                let path = self.path_of(key);
                a.into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        other => Err(wrong_type(&index(&path, i), "a string", &other)),
                    })
                    .collect()
            }
            Some(other) => Err(wrong_type(
                &self.path_of(key),
                "a string or an array of strings",
                &other,
            )),
        }
    }

    pub fn into_rest(self) -> Map<String, Value> {
        self.map
    }
}

/// A number from a JSON value, as an unsigned integer (upstream usage counters).
pub fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// Lenient typed fields for decoding upstream answers without building a `Value` tree: a field
/// of the wrong JSON type reads as absent (as `Value::as_str` / `as_u64` would), and strings are
/// borrowed from the input unless they hold escapes.
pub mod lax {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// A string, or `None` for any other JSON value.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Str<'a>(pub Option<Cow<'a, str>>);

    impl<'a> Str<'a> {
        pub fn as_str(&self) -> Option<&str> {
            self.0.as_deref()
        }
    }

    /// A non-negative integer, or 0 for any other JSON value.
    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    pub struct Count(pub u64);

    /// An unsigned integer, or `None` for any other JSON value.
    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    pub struct U64(pub Option<u64>);

    /// The visitor methods of the JSON values a lax type does not take, each answering `$none`
    /// (arrays and objects are skipped whole; `Some` is looked through): a visitor names what it
    /// takes itself and lists the rest here.
    macro_rules! ignore {
        ($none:expr; $($kind:ident),* $(,)?) => { $( ignore!(@one $none, $kind); )* };
        (@one $none:expr, str) => {
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok($none)
            }
        };
        (@one $none:expr, i64) => {
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok($none)
            }
        };
        (@one $none:expr, u64) => {
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok($none)
            }
        };
        (@one $none:expr, bool) => {
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok($none)
            }
        };
        (@one $none:expr, f64) => {
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok($none)
            }
        };
        (@one $none:expr, unit) => {
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok($none)
            }
        };
        (@one $none:expr, none) => {
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok($none)
            }
        };
        (@one $none:expr, some) => {
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        };
        (@one $none:expr, seq) => {
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok($none)
            }
        };
        (@one $none:expr, map) => {
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok($none)
            }
        };
    }

    struct StrVisitor;

    impl<'de> Visitor<'de> for StrVisitor {
        type Value = Str<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Str(Some(Cow::Borrowed(v))))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Str(Some(Cow::Owned(v.to_string()))))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Str(Some(Cow::Owned(v))))
        }
        ignore!(Str(None); i64, u64, bool, f64, unit, none, some, seq, map);
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrVisitor)
        }
    }

    struct U64Visitor;

    impl<'de> Visitor<'de> for U64Visitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        ignore!(None; str, bool, f64, unit, none, some, seq, map);
    }

    impl<'de> Deserialize<'de> for U64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(U64Visitor).map(U64)
        }
    }

    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(U64Visitor).map(|v| Count(v.unwrap_or(0)))
        }
    }

    /// An object of type `T`, or `None` for any other JSON value (`T` itself may still reject
    /// an object whose fields do not fit).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Obj<T>(pub Option<T>);

    impl<T> Default for Obj<T> {
        fn default() -> Self {
            Obj(None)
        }
    }

    /// A JSON array of `T`, or empty for any other JSON value.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Seq<T>(pub Vec<T>);

    impl<T> Default for Seq<T> {
        fn default() -> Self {
            Seq(Vec::new())
        }
    }

    struct ObjVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(a)).map(Some)
        }
        ignore!(None; str, i64, u64, bool, f64, unit, none, some, seq);
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ObjVisitor(std::marker::PhantomData))
                .map(Obj)
        }
    }

    /// A JSON array of `T` (elements that are not objects skipped), or `None` for any other JSON
    /// value: for a field whose absence is an error.
    #[derive(Debug, Clone, PartialEq)]
    pub struct List<T>(pub Option<Vec<T>>);

    impl<T> Default for List<T> {
        fn default() -> Self {
            List(None)
        }
    }

    /// What a list visitor keeps of an array's objects: all of them, or only the first.
    trait Keep<T>: Default {
        fn keep(&mut self, x: T);
    }

    impl<T> Keep<T> for Vec<T> {
        fn keep(&mut self, x: T) {
            self.push(x);
        }
    }

    impl<T> Keep<T> for Option<T> {
        fn keep(&mut self, x: T) {
            if self.is_none() {
                *self = Some(x);
            }
        }
    }

    struct ListVisitor<T, K>(std::marker::PhantomData<(T, K)>);

    impl<'de, T: Deserialize<'de>, K: Keep<T>> Visitor<'de> for ListVisitor<T, K> {
        type Value = Option<K>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut kept = K::default();
            while let Some(x) = a.next_element::<Obj<T>>()? {
                if let Some(x) = x.0 {
                    kept.keep(x);
                }
            }
            Ok(Some(kept))
        }
        ignore!(None; str, i64, u64, bool, f64, unit, none, some, map);
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ListVisitor::<T, Vec<T>>(std::marker::PhantomData))
                .map(List)
        }
    }

    /// The first object of a JSON array (the others, and elements that are not objects,
    /// skipped), or `None` for an empty array or any other JSON value: for `choices`, of which
    /// the gateway reads the first. No `Vec` per answer or per streamed chunk.
    #[derive(Debug, Clone, PartialEq)]
    pub struct First<T>(pub Option<T>);

    impl<T> Default for First<T> {
        fn default() -> Self {
            First(None)
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ListVisitor::<T, Option<T>>(std::marker::PhantomData))
                .map(|kept| First(kept.flatten()))
        }
    }

    /// Elements that are not objects are skipped.
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Seq<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            List::deserialize(d).map(|l| Seq(l.0.unwrap_or_default()))
        }
    }

    /// The first element of a JSON array as an object of type `T` (`Obj(None)` for one that is
    /// not an object; the other elements skipped), or `None` for an empty array or any other JSON
    /// value: what `array[0]` finds, for Gemini's `candidates` (the gateway reads the first,
    /// whatever it is, and a list that has one is not a refused prompt).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Head<T>(pub Option<Obj<T>>);

    impl<T> Default for Head<T> {
        fn default() -> Self {
            Head(None)
        }
    }

    struct HeadVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for HeadVisitor<T> {
        type Value = Option<Obj<T>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let first = a.next_element::<Obj<T>>()?;
            if first.is_some() {
                while a.next_element::<IgnoredAny>()?.is_some() {}
            }
            Ok(first)
        }
        ignore!(None; str, i64, u64, bool, f64, unit, none, some, map);
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Head<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(HeadVisitor(std::marker::PhantomData))
                .map(Head)
        }
    }

    /// A boolean, or `None` for any other JSON value.
    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    pub struct Bool(pub Option<bool>);

    struct BoolVisitor;

    impl<'de> Visitor<'de> for BoolVisitor {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        ignore!(None; str, i64, u64, f64, unit, none, some, seq, map);
    }

    impl<'de> Deserialize<'de> for Bool {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(BoolVisitor).map(Bool)
        }
    }

    /// A field that is there, whatever its value (`null` included, which `Option` would read as
    /// absent), read by `T`; `None` when absent: for a field whose presence alone means
    /// something (Gemini's `functionCall`: one without a `name` is an error, even `null`).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Present<T>(pub Option<T>);

    impl<T> Default for Present<T> {
        fn default() -> Self {
            Present(None)
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            T::deserialize(d).map(|t| Present(Some(t)))
        }
    }
}

/// Decodes an upstream's JSON answer into a typed, lenient view (see [`lax`]).
pub fn parse_upstream_as<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, ProviderError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_upstream_str_as(text, what),
        // serde_json names the position of the bad byte
        Err(_) => serde_json::from_slice(bytes).map_err(|e| upstream_json_error(e, what)),
    }
}

/// [`parse_upstream_as`] for text already known to be UTF-8 (an SSE event's data). Parsing from a
/// `str` spares serde_json checking every string it reads again (≈ 100 instructions each, dozens
/// per answer): the whole text was checked once, in one fast pass.
pub fn parse_upstream_str_as<'a, T: serde::Deserialize<'a>>(
    text: &'a str,
    what: &str,
) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| upstream_json_error(e, what))
}

fn upstream_json_error(e: serde_json::Error, what: &str) -> ProviderError {
    let problem = if e.is_data() {
        "that does not fit the expected format"
    } else {
        "that is not valid JSON"
    };
    ProviderError::new(
        tollway_core::ErrorKind::InvalidResponse,
        format!("the provider sent {what} {problem}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `First` keeps the first object of an array, as `Seq` keeps them all; anything else is
    /// absent.
    #[test]
    fn first_keeps_the_first_object_of_an_array() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct X {
            #[serde(default)]
            a: lax::U64,
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            #[serde(default)]
            first: lax::First<X>,
            #[serde(default)]
            all: lax::Seq<X>,
        }
        let a = |n| X {
            a: lax::U64(Some(n)),
        };
        for (text, first, all) in [
            (
                r#"[7, {"a": 1}, "x", {"a": 2}]"#,
                Some(a(1)),
                vec![a(1), a(2)],
            ),
            (r#"[]"#, None, vec![]),
            (r#"[1, null]"#, None, vec![]),
            (r#"{"a": 1}"#, None, vec![]),
            (r#""s""#, None, vec![]),
            (r#"null"#, None, vec![]),
        ] {
            let d: Doc =
                parse_upstream_str_as(&format!(r#"{{"first": {text}, "all": {text}}}"#), "t")
                    .unwrap();
            assert_eq!(d.first.0, first, "{text}");
            assert_eq!(d.all.0, all, "{text}");
        }
        let d: Doc = parse_upstream_str_as("{}", "t").unwrap();
        assert_eq!(d.first.0, None);
    }

    /// `Head` is what `array[0]` finds; `Bool` a boolean or nothing; `Present` tells a field
    /// that is `null` from one that is absent.
    #[test]
    fn head_bool_and_present_read_what_a_value_tree_would() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct X {
            #[serde(default)]
            a: lax::U64,
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            #[serde(default)]
            head: lax::Head<X>,
            #[serde(default)]
            flag: lax::Bool,
            #[serde(default)]
            present: lax::Present<lax::Obj<X>>,
        }
        let x = |n| {
            lax::Obj(Some(X {
                a: lax::U64(Some(n)),
            }))
        };
        for (text, head, flag) in [
            (r#"[{"a": 1}, {"a": 2}]"#, Some(x(1)), None),
            (r#"[7, {"a": 2}]"#, Some(lax::Obj(None)), None),
            (r#"[null]"#, Some(lax::Obj(None)), None),
            (r#"[]"#, None, None),
            (r#"{"0": {"a": 1}}"#, None, None),
            (r#"true"#, None, Some(true)),
            (r#"false"#, None, Some(false)),
            (r#""true""#, None, None),
            (r#"1"#, None, None),
            (r#"null"#, None, None),
        ] {
            let d: Doc = parse_upstream_str_as(
                &format!(r#"{{"head": {text}, "flag": {text}, "present": {text}}}"#),
                "t",
            )
            .unwrap();
            assert_eq!(d.head.0, head, "{text}");
            assert_eq!(d.flag.0, flag, "{text}");
            assert!(d.present.0.is_some(), "{text}");
        }
        let d: Doc = parse_upstream_str_as("{}", "t").unwrap();
        assert_eq!((d.head.0, d.flag.0, d.present.0), (None, None, None));
        let d: Doc = parse_upstream_str_as(r#"{"present": null}"#, "t").unwrap();
        assert_eq!(d.present.0, Some(lax::Obj(None)));
    }

    #[test]
    fn bodies_are_checked_in_order_utf8_json_object() {
        let e = parse_object(b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
        let e = parse_object(b"{\"a\":").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse_object(b"  ").unwrap_err();
        assert!(e.message.contains("empty"), "{}", e.message);
        let e = parse_object(b"[1]").unwrap_err();
        assert!(e.message.contains("expected a JSON object, got an array"));
        assert!(parse_object(b"{}").is_ok());
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "héllo ✓ 😀 \u{7f} \u{2028}".into(),
            "a\"b".into(),
            "back\\slash".into(),
            "tab\tnew\nline\r".into(),
            "/slash/ </script>".into(),
        ];
        for c in 0u8..0x20 {
            cases.push(format!("x{}y", c as char));
        }
        // each kind of escape at every position of a long string (two 64-byte steps and a tail),
        // so every step and the tail are checked
        let long = "0123456789abcdef".repeat(9);
        for i in 0..long.len() {
            for e in ["\"", "\\", "\u{1}", "\u{1f}"] {
                let mut t = long.clone();
                t.replace_range(i..i + 1, e);
                cases.push(t);
            }
        }
        cases.push(long);
        for c in &cases {
            let mut out = b"[".to_vec();
            put_str(&mut out, c);
            assert_eq!(out[1..], serde_json::to_vec(c).unwrap()[..], "{c:?}");
        }
    }

    #[test]
    fn field_errors_name_the_path() {
        let map = parse_object(br#"{"n": -1, "s": 5, "o": {"x": true}}"#).unwrap();
        let mut o = Obj::new(map, "");
        assert!(o.u32("n").unwrap_err().message.contains("`n`"));
        let e = o.str("s").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("s"));
        let mut inner = o.obj("o").unwrap().unwrap();
        let e = inner.str("x").unwrap_err();
        assert!(e.message.contains("`o.x`"), "{}", e.message);
        assert!(e.message.contains("got a boolean"));
        assert!(o.req_str("absent").unwrap_err().message.contains("Missing"));
    }
}
