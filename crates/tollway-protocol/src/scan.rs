//! A JSON scanner for the usual shape of an upstream's answers and stream chunks, read without
//! serde's per-field machinery (about half the cost of a streamed chunk).
//!
//! It is a fast path only. Every method returns `None` for anything it does not read exactly as
//! serde_json would (an escape in a key, a `\u` escape in a skipped string, a number with a
//! fraction where a count is expected, a duplicate field, invalid JSON...), and the caller then
//! parses the same text with serde, which gives the answer or the error. So the scanner never
//! accepts a text serde rejects, and never reads one differently: the tests compare both on every
//! sample and on thousands of mutations of them.

use std::borrow::Cow;

use crate::json::lax;

/// Nesting deeper than this is left to serde (its own limit is 128).
const MAX_DEPTH: u32 = 100;

pub(crate) struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scan { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        let b = self.bytes();
        while let Some(&c) = b.get(self.at) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    /// The next byte after whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.skip_ws();
        let rest = self.bytes().get(self.at..)?;
        rest.starts_with(word).then(|| self.at += word.len())
    }

    /// `null`, consumed; false (nothing consumed) for anything else.
    pub(crate) fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// Only whitespace is left.
    pub(crate) fn end(&mut self) -> Option<()> {
        self.skip_ws();
        (self.at == self.text.len()).then_some(())
    }

    /// An object: `field` is called with each key and must read its value. Inlined into each
    /// caller, where `field` becomes a plain `match` (left to itself, the compiler's choice moved
    /// with unrelated code: +4% instructions per streamed chunk once).
    #[inline]
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.plain_str()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array: `item` is called for each element (its index) and must read it.
    #[inline]
    pub(crate) fn array(
        &mut self,
        mut item: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        let mut i = 0;
        loop {
            item(self, i)?;
            i += 1;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// From `from`, the next quote or backslash; `None` if a control byte (which JSON forbids
    /// in strings) or the end comes first. Eight bytes at a time (no vector set-up, which costs
    /// more than it saves on the short strings of an answer).
    fn next_special(&self, from: usize) -> Option<usize> {
        let b = self.bytes();
        let mut i = from;
        while let Some(block) = b.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(block);
            let hits = special_bytes(u64::from_le_bytes(word));
            if hits != 0 {
                // the lowest flagged byte is exact (higher ones may be false alarms)
                i += (hits.trailing_zeros() / 8) as usize;
                return (b[i] >= 0x20).then_some(i);
            }
            i += 8;
        }
        let at = i + b
            .get(i..)?
            .iter()
            .position(|&c| crate::json::is_special(c))?;
        (b[at] >= 0x20).then_some(at)
    }

    /// A string without escapes (keys): borrowed.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let end = self.next_special(start)?;
        if self.bytes()[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// A string value: borrowed when it has no escapes, else unescaped into a new one.
    pub(crate) fn str(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let end = self.next_special(start)?;
        self.at = end;
        if self.bytes()[end] == b'"' {
            self.at = end + 1;
            return self.text.get(start..end).map(Cow::Borrowed);
        }
        self.unescape(start).map(Cow::Owned)
    }

    /// The rest of a string from `start`, the first escape being at `self.at`.
    fn unescape(&mut self, start: usize) -> Option<String> {
        let b = self.bytes();
        let mut out = String::with_capacity(self.at - start + 16);
        out.push_str(self.text.get(start..self.at)?);
        loop {
            match *b.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(out);
                }
                _ => {
                    // a backslash
                    let c = *b.get(self.at + 1)?;
                    self.at += 2;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return None,
                    }
                    let run = self.at;
                    self.at = self.next_special(run)?;
                    out.push_str(self.text.get(run..self.at)?);
                }
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes().get(self.at..self.at + 4)?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + char::from(d).to_digit(16)?;
        }
        self.at += 4;
        Some(v)
    }

    /// After `\u`: one code point, a surrogate pair taken together (a lone surrogate: `None`).
    fn unicode_escape(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        match hi {
            0xD800..=0xDBFF => {
                if self.bytes().get(self.at..self.at + 2)? != b"\\u" {
                    return None;
                }
                self.at += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return None;
                }
                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
            }
            0xDC00..=0xDFFF => None,
            _ => char::from_u32(hi),
        }
    }

    /// A non-negative integer that fits a `u64` (`0`, `42`); `None` for anything else (a
    /// fraction, an exponent, a sign), which serde reads differently.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.skip_ws();
        let b = self.bytes();
        let start = self.at;
        let mut v: u64 = 0;
        while let Some(&d) = b.get(self.at) {
            if !d.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && b[start] == b'0') {
            return None;
        }
        match b.get(self.at) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(v),
        }
    }

    /// Any value, checked as serde_json checks a value it ignores, and dropped.
    pub(crate) fn skip(&mut self) -> Option<()> {
        self.skip_at(0)
    }

    fn skip_at(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' => self.object(|s, _| s.skip_at(depth + 1)),
            b'[' => self.array(|s, _| s.skip_at(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    /// A string whose value is not needed. A `\u` escape is left to serde.
    fn skip_str(&mut self) -> Option<()> {
        self.eat(b'"')?;
        let b = self.bytes();
        loop {
            self.at = self.next_special(self.at)?;
            if b[self.at] == b'"' {
                self.at += 1;
                return Some(());
            }
            match *b.get(self.at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                _ => return None,
            }
            self.at += 2;
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn skip_number(&mut self) -> Option<()> {
        let b = self.bytes();
        let digits = |at: &mut usize| {
            let from = *at;
            while b.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at - from
        };
        let mut at = self.at;
        if b.get(at) == Some(&b'-') {
            at += 1;
        }
        let first = *b.get(at)?;
        let n = digits(&mut at);
        if n == 0 || (first == b'0' && n > 1) {
            return None;
        }
        if b.get(at) == Some(&b'.') {
            at += 1;
            if digits(&mut at) == 0 {
                return None;
            }
        }
        if matches!(b.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(b.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            if digits(&mut at) == 0 {
                return None;
            }
        }
        self.at = at;
        Some(())
    }
}

// The fields of the `lax` types (`crate::json::lax`), for the usual values; anything else
// is left to serde.

/// A `lax::Str` field as serde reads the usual values (a string or `null`).
pub(crate) fn scan_str<'a>(s: &mut Scan<'a>) -> Option<lax::Str<'a>> {
    if s.null() {
        return Some(lax::Str(None));
    }
    if s.peek()? != b'"' {
        return None;
    }
    s.str().map(|v| lax::Str(Some(v)))
}

/// A `lax::Obj` field: `null`, or an object read by `read`.
pub(crate) fn scan_obj<'a, T>(
    s: &mut Scan<'a>,
    read: impl FnOnce(&mut Scan<'a>) -> Option<T>,
) -> Option<lax::Obj<T>> {
    if s.null() {
        return Some(lax::Obj(None));
    }
    if s.peek()? != b'{' {
        return None;
    }
    read(s).map(|v| lax::Obj(Some(v)))
}

/// `choices` as `lax::First` reads it, for `null`, `[]` and one object.
pub(crate) fn scan_first<'a, T>(
    s: &mut Scan<'a>,
    mut read: impl FnMut(&mut Scan<'a>) -> Option<T>,
) -> Option<lax::First<T>> {
    if s.null() {
        return Some(lax::First(None));
    }
    let mut first = None;
    s.array(|s, i| {
        if i > 0 || s.peek()? != b'{' {
            return None;
        }
        first = Some(read(s)?);
        Some(())
    })?;
    Some(lax::First(first))
}

/// `candidates` as `lax::Head` reads it: `null` and `[]` (none), or an array whose first element
/// is an object read by `read` (the others checked and skipped, as serde skips them).
pub(crate) fn scan_head<'a, T>(
    s: &mut Scan<'a>,
    mut read: impl FnMut(&mut Scan<'a>) -> Option<T>,
) -> Option<lax::Head<T>> {
    if s.null() {
        return Some(lax::Head(None));
    }
    let mut first = None;
    s.array(|s, i| {
        if i > 0 {
            return s.skip();
        }
        // the first: serde reads it as a value, not skipping it (`1e400` is an error there):
        // an object only
        if s.peek()? != b'{' {
            return None;
        }
        first = Some(lax::Obj(Some(read(s)?)));
        Some(())
    })?;
    Some(lax::Head(first))
}

/// A `lax::Bool` field: `true`, `false`, or `null` (none).
pub(crate) fn scan_bool(s: &mut Scan<'_>) -> Option<lax::Bool> {
    match s.peek()? {
        b't' => s.literal(b"true").map(|()| lax::Bool(Some(true))),
        b'f' => s.literal(b"false").map(|()| lax::Bool(Some(false))),
        _ => s.null().then_some(lax::Bool(None)),
    }
}

/// A `lax::Count` field: a non-negative integer, or `null` (0).
pub(crate) fn scan_count(s: &mut Scan<'_>) -> Option<lax::Count> {
    if s.null() {
        return Some(lax::Count(0));
    }
    s.u64().map(lax::Count)
}

/// A `lax::List` field: `null`, or an array of objects each read by `read`.
pub(crate) fn scan_list<'a, T>(
    s: &mut Scan<'a>,
    mut read: impl FnMut(&mut Scan<'a>) -> Option<T>,
) -> Option<lax::List<T>> {
    if s.null() {
        return Some(lax::List(None));
    }
    let mut items = Vec::new();
    s.array(|s, _| {
        if s.peek()? != b'{' {
            return None;
        }
        items.push(read(s)?);
        Some(())
    })?;
    Some(lax::List(Some(items)))
}

/// A `lax::U64` field: a non-negative integer, or `null` (none).
pub(crate) fn scan_u64(s: &mut Scan<'_>) -> Option<lax::U64> {
    if s.null() {
        return Some(lax::U64(None));
    }
    s.u64().map(|v| lax::U64(Some(v)))
}

/// The high bit of each byte of `w` that is special (`crate::json::is_special`: `"`, `\\` or
/// below 0x20) is set, exactly for the lowest such byte (the subtractions may borrow into the bytes above it).
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
}

/// Fields of one object already read, to refuse a duplicate (serde's derive rejects one).
#[derive(Default)]
pub(crate) struct Seen(u32);

impl Seen {
    /// Marks field `bit`; `None` if it was already there.
    pub(crate) fn first(&mut self, bit: u32) -> Option<()> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(())
    }

    /// Reads field `bit` into `slot` with `read`; `None` for a duplicate or what `read` leaves.
    pub(crate) fn read<'a, T>(
        &mut self,
        bit: u32,
        slot: &mut T,
        s: &mut Scan<'a>,
        read: impl FnOnce(&mut Scan<'a>) -> Option<T>,
    ) -> Option<()> {
        self.first(bit)?;
        *slot = read(s)?;
        Some(())
    }
}

/// For the scanner's tests: whether the scanner took `text` (`fast`), after checking that serde
/// took it too (`general`) and that `same` holds of the two readings.
#[cfg(test)]
pub(crate) fn agrees<F, G, E: std::fmt::Debug>(
    text: &str,
    fast: Option<F>,
    general: Result<G, E>,
    same: impl FnOnce(&F, &G),
) -> bool {
    let Some(fast) = fast else {
        return false;
    };
    match general {
        Ok(general) => {
            same(&fast, &general);
            true
        }
        Err(e) => panic!("the scanner took what serde refuses ({e:?}): {text}"),
    }
}

/// An object's text with a first key spelled with an escape (`"\u0020"`), which the scanner
/// leaves to serde: the same answer, read the other way (`{}` too).
#[cfg(test)]
pub(crate) fn with_escaped_first_key(text: &str) -> String {
    let rest = &text.trim_start()[1..];
    let comma = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!("{{\"\\u0020\":0{comma}{rest}")
}

#[cfg(test)]
/// `samples`, mutated many ways (a deterministic xorshift); `agrees` checks one text and says
/// whether the scanner took it. Returns (taken, total).
pub(crate) fn mutate_and_check(
    samples: &[&str],
    rounds: usize,
    mut agrees: impl FnMut(&str) -> bool,
) -> (usize, usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    const PIECES: &[&str] = &[
        " ",
        "\n",
        "\"",
        "\\",
        ",",
        ":",
        "{",
        "}",
        "[",
        "]",
        "0",
        "1",
        "-",
        ".",
        "e",
        "null",
        "true",
        "\\u00e9",
        "\\ud83d",
        "\\n",
        "é",
        "\u{1}",
        "\"content\":\"x\",",
        "\"usage\":null,",
        "\"id\":\"y\",",
        "{\"a\":[]}",
        "\"delta\":{},",
        "x",
        "\"prompt_tokens\":7,",
        "\"created\":-1,",
        "\"tool_calls\":[],",
        "12345678901234567890",
    ];
    let (mut taken, mut total) = (0, 0);
    for round in 0..rounds {
        let base = samples[round % samples.len()];
        let mut t: Vec<char> = base.chars().collect();
        for _ in 0..1 + next(3) {
            let at = next(t.len() + 1);
            match next(3) {
                0 => {
                    let piece = PIECES[next(PIECES.len())];
                    for (k, c) in piece.chars().enumerate() {
                        t.insert(at + k, c);
                    }
                }
                1 if at < t.len() => {
                    t.remove(at);
                }
                _ => {
                    let end = (at + next(8)).min(t.len());
                    let cut: Vec<char> = t[at..end].to_vec();
                    let to = next(t.len() + 1);
                    for (k, c) in cut.into_iter().enumerate() {
                        t.insert(to + k, c);
                    }
                }
            }
        }
        let text: String = t.into_iter().collect();
        total += 1;
        taken += usize::from(agrees(&text));
    }
    (taken, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<Cow<'_, str>> {
        let mut s = Scan::new(text);
        let v = s.str()?;
        s.end()?;
        Some(v)
    }

    #[test]
    fn strings_read_as_serde_reads_them() {
        for text in [
            r#""plain""#,
            r#""""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""caf\u00e9 \u4e2d \ud83d\ude00""#,
            "\"raw UTF-8: é 中 😀\"",
        ] {
            let want: String = serde_json::from_str(text).unwrap();
            assert_eq!(value(text).as_deref(), Some(want.as_str()), "{text}");
        }
        // what serde refuses, the scanner leaves to it
        for text in [
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\u12g4""#,
            r#""\x""#,
            "\"tab\there\"",
            r#""unterminated"#,
        ] {
            assert!(serde_json::from_str::<String>(text).is_err(), "{text}");
            assert_eq!(value(text), None, "{text}");
        }
    }

    #[test]
    fn the_first_special_byte_is_found_at_every_offset() {
        // before it: ASCII, multi-byte UTF-8 and bytes that differ from the special ones by one
        // bit or borrow (`!`, `#`, `[`, `]`, space)
        let filler = ["a", "é", "中", "!", "#", "[", "]", " ", "😀"];
        for special in ["\"", "\\", "\u{1}", "\u{1f}"] {
            for len in 0..24 {
                let mut text = String::new();
                for k in 0..len {
                    text.push_str(filler[(k * 7 + len) % filler.len()]);
                }
                let at = text.len();
                text.push_str(special);
                text.push_str("\"tail \\ \u{2}");
                let found = Scan::new(&text).next_special(0);
                let want = (special == "\"" || special == "\\").then_some(at);
                assert_eq!(found, want, "{special:?} after {len} characters");
            }
        }
        assert_eq!(
            Scan::new("no end in sight, eight+ bytes").next_special(0),
            None
        );
    }

    #[test]
    fn counts_are_plain_non_negative_integers() {
        let read = |t: &str| {
            let mut s = Scan::new(t);
            let v = s.u64()?;
            s.end()?;
            Some(v)
        };
        assert_eq!(read("0"), Some(0));
        assert_eq!(read(" 42 "), Some(42));
        assert_eq!(read("18446744073709551615"), Some(u64::MAX));
        for t in ["18446744073709551616", "-1", "1.0", "1e3", "01", "", "x"] {
            assert_eq!(read(t), None, "{t}");
        }
    }

    #[test]
    fn skipped_values_are_checked_as_json() {
        let skips = |t: &str| {
            let mut s = Scan::new(t);
            s.skip().and_then(|()| s.end()).is_some()
        };
        for t in [
            "null",
            "true",
            "false",
            "-0.5e+10",
            "12",
            r#"{"a": [1, {"b": "c\n"}, []], "d": {}}"#,
            r#"  [ "x" , 2 ]  "#,
        ] {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok(),
                "{t}"
            );
            assert!(skips(t), "{t}");
        }
        for t in [
            "nul",
            "01",
            "1.",
            "-",
            "1e",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "[1 2]",
            "\"a",
            "{",
            "tru",
        ] {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(t).is_err(),
                "{t}"
            );
            assert!(!skips(t), "{t}");
        }
        // deeper than the scanner goes: left to serde
        let deep = format!("{}{}", "[".repeat(120), "]".repeat(120));
        assert!(!skips(&deep));
    }
}
