//! Lexical features of a prompt: signed-hashed word 1–2-grams and character n-grams, plus a few
//! dense features.
//!
//! Text is lowercased and split into words (maximal runs of alphanumeric characters). Word unigrams
//! and bigrams, and character n-grams of each word padded with one space on either side (sklearn's
//! `char_wb`), are hashed with 64-bit FNV-1a over Unicode code points, finished with one multiply
//! ([`finish`]): the low `hash_bits` bits pick the bucket, the top bit the sign. Counts per bucket get
//! sublinear tf (`sign · (1 + ln |count|)`); the word block and the character block are each
//! L2-normalised and scaled by their block weight. Hashing depends only on the text, never on the
//! platform or the process.
//!
//! The dense features ([`DENSE_NAMES`]) are standardised with the training mean and deviation kept in
//! the model file.
//!
//! [`Featurizer`] owns the reusable buffers (a count per bucket and the list of touched buckets):
//! nothing is allocated per n-gram. Scoring ([`Featurizer::dot`]) keeps the block's dot product
//! and sum of squares up to date as each n-gram changes its bucket's value, so the end of a block
//! only zeroes the touched buckets; materialising ([`Featurizer::hashed`], for training) reads
//! them out.

use serde::{Deserialize, Serialize};

/// What the featurizer extracts; stored in the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// The hashed space has `2^hash_bits` buckets.
    pub hash_bits: u32,
    /// Word unigrams and bigrams.
    pub word_ngrams: bool,
    /// Character n-gram lengths, inclusive; `char_min = 0` disables them.
    pub char_min: u32,
    pub char_max: u32,
    /// Scale of the L2-normalised word block and character block.
    pub word_weight: f32,
    pub char_weight: f32,
    /// Use `1 + ln(tf)` instead of raw counts.
    pub sublinear_tf: bool,
    /// Use the dense features.
    pub dense: bool,
    /// Character n-grams come from the words of the first `char_prefix` characters only (0: all);
    /// they are the bulk of the scoring time, and a prompt's opening says most of what they can.
    pub char_prefix: u32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            hash_bits: 16,
            word_ngrams: true,
            char_min: 3,
            char_max: 4,
            word_weight: 1.0,
            char_weight: 1.0,
            sublinear_tf: true,
            dense: true,
            char_prefix: 600,
        }
    }
}

impl FeatureConfig {
    /// Number of hashed buckets.
    pub fn buckets(&self) -> usize {
        1usize << self.hash_bits
    }

    /// A description of what is wrong, if anything.
    pub fn check(&self) -> Result<(), String> {
        if !(4..=24).contains(&self.hash_bits) {
            return Err(format!(
                "features.hash_bits must be in 4..=24, not {}",
                self.hash_bits
            ));
        }
        if self.char_min != 0
            && !(1 <= self.char_min && self.char_min <= self.char_max && self.char_max <= 8)
        {
            return Err(format!(
                "features.char_min..char_max must satisfy 1 <= min <= max <= 8 (or min = 0), not {}..{}",
                self.char_min, self.char_max
            ));
        }
        if !self.word_weight.is_finite()
            || !self.char_weight.is_finite()
            || self.word_weight < 0.0
            || self.char_weight < 0.0
        {
            return Err("features.word_weight and char_weight must be finite and >= 0".into());
        }
        Ok(())
    }
}

/// Names of the dense features, in order.
pub const DENSE_NAMES: [&str; 9] = [
    "log_chars",
    "log_words",
    "digit_ratio",
    "has_code",
    "has_math",
    "log_questions",
    "log_numbers",
    "mean_word_len",
    "log_lines",
];
/// Number of dense features.
pub const DENSE: usize = DENSE_NAMES.len();

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const NS_WORD: u64 = 0x77;
const NS_CHAR: u64 = 0x63;

#[inline]
fn fnv_step(h: u64, unit: u32) -> u64 {
    (h ^ unit as u64).wrapping_mul(FNV_PRIME)
}

/// The lowercase of a word character, as a code point (the first character of a multi-character
/// lowercase). ASCII never comes here: [`WORD_BYTE`] lowercases it.
#[inline]
fn lower(c: char) -> u32 {
    c.to_lowercase().next().unwrap_or(c) as u32
}

/// The (signed) tf transform of a count: `sign · (1 + ln |count|)` with sublinear tf, else the
/// count itself.
fn tf_value(c: i32, sublinear: bool) -> f64 {
    let a = c.unsigned_abs() as f64;
    let v = if sublinear && c != 0 { 1.0 + a.ln() } else { a };
    v.copysign(c as f64)
}

/// Spreads FNV's weak low bits: one multiply by the golden ratio, then the well-mixed high half
/// moved down (bucket from the low bits, sign from the top bit).
#[inline]
fn finish(h: u64) -> u64 {
    h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(32)
}

/// The counts behind the dense features. Scoring takes the word-level ones from the word pass
/// it makes anyway and the rest from a vectorised pass over the bytes; [`dense_features`] (for
/// training) feeds them one character at a time, the definition the tests hold scoring to.
#[derive(Debug, Clone, Copy, Default)]
struct DenseCounts {
    chars: usize,
    digits: usize,
    questions: usize,
    lines: usize,
    words: usize,
    numbers: usize,
    word_chars: usize,
}

impl DenseCounts {
    /// `starts_word`: `c` is alphanumeric and the character before it was not.
    #[inline]
    fn feed(&mut self, c: char, alnum: bool, starts_word: bool) {
        self.chars += 1;
        match c {
            '?' => self.questions += 1,
            '\n' => self.lines += 1,
            _ => {}
        }
        if alnum {
            let digit = c.is_ascii_digit();
            self.digits += digit as usize;
            if starts_word {
                self.words += 1;
                self.numbers += digit as usize;
            }
            self.word_chars += 1;
        }
    }

    /// The dense features, with the markers searched in `prompt`.
    fn features(&self, prompt: &str) -> [f64; DENSE] {
        let (has_code, has_math) = markers(prompt);
        let (chars, words) = (self.chars, self.words);
        [
            (1.0 + chars as f64).ln(),
            (1.0 + words as f64).ln(),
            if chars == 0 {
                0.0
            } else {
                self.digits as f64 / chars as f64
            },
            has_code as u8 as f64,
            has_math as u8 as f64,
            (1.0 + self.questions as f64).ln(),
            (1.0 + self.numbers as f64).ln(),
            if words == 0 {
                0.0
            } else {
                self.word_chars as f64 / words as f64
            },
            ((1 + self.lines) as f64).ln(),
        ]
    }
}

/// The raw dense features of a prompt (not standardised).
pub fn dense_features(prompt: &str) -> [f64; DENSE] {
    let mut d = DenseCounts::default();
    let mut in_word = false;
    for c in prompt.chars() {
        let alnum = c.is_alphanumeric();
        d.feed(c, alnum, alnum && !in_word);
        in_word = alnum;
    }
    d.features(prompt)
}

/// The code markers ([`markers`]).
const CODE_MARKERS: [&str; 8] = [
    "```",
    "#include",
    "};",
    "def ",
    "return ",
    "function ",
    "printf",
    "print(",
];
/// The math markers of more than one byte ([`markers`]).
const MATH_MARKERS: [&str; 4] = ["\\frac", "\\(", "\\[", "sqrt"];

/// Whether `text` has a code marker ([`CODE_MARKERS`]) and a math marker (`^`, `$`, `=` or one
/// of [`MATH_MARKERS`]), as plain substrings. Each search runs on `memchr`'s vectorised
/// substring finders, built once; the standard library's `contains` took four to five times as
/// long (5.1–6.6 µs against 1.2–1.3 µs on 4,000 bytes).
fn markers(text: &str) -> (bool, bool) {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    type Finders = (Vec<Finder<'static>>, Vec<Finder<'static>>);
    static FINDERS: LazyLock<Finders> = LazyLock::new(|| {
        let build = |ms: &[&'static str]| ms.iter().map(|m| Finder::new(m.as_bytes())).collect();
        (build(&CODE_MARKERS), build(&MATH_MARKERS))
    });
    let (code, math) = &*FINDERS;
    let t = text.as_bytes();
    let found = |fs: &[Finder<'static>]| fs.iter().any(|f| f.find(t).is_some());
    (
        found(code),
        memchr::memchr3(b'^', b'$', b'=', t).is_some() || found(math),
    )
}

/// Per byte: its lowercase if it is an ASCII letter or digit, else 0 (a word byte is never 0).
static WORD_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    t
};

/// The character of `text` at byte `at` (a character boundary), if any: its lowercase as a
/// code point if it is alphanumeric (else 0), whether it is an ASCII digit, and where the next
/// character starts. ASCII, the usual case, takes one table lookup; other characters are
/// decoded and classified by Unicode's tables. `ASCII`: the caller knows `text` is ASCII (the
/// scanning loops are compiled once for that case, without the decoding).
#[inline(always)]
fn next_char<const ASCII: bool>(text: &str, at: usize) -> Option<(u32, bool, usize)> {
    let byte = *text.as_bytes().get(at)?;
    if ASCII || byte.is_ascii() {
        return Some((
            WORD_BYTE[byte as usize] as u32,
            byte.is_ascii_digit(),
            at + 1,
        ));
    }
    let c = text.get(at..)?.chars().next()?;
    let lc = if c.is_alphanumeric() { lower(c) } else { 0 };
    Some((lc, false, at + c.len_utf8()))
}

/// The ASCII digits, question marks, line feeds and UTF-8 continuation bytes in `text` (its
/// length less the last is its number of characters), counted in blocks of 255 bytes with
/// byte-wide counters (a form the compiler turns into vector compares).
fn byte_counts(text: &[u8]) -> (usize, usize, usize, usize) {
    let (mut digits, mut questions, mut lines, mut continuation) = (0, 0, 0, 0);
    for block in text.chunks(255) {
        let (mut d, mut q, mut l, mut c) = (0u8, 0u8, 0u8, 0u8);
        for &b in block {
            d += b.is_ascii_digit() as u8;
            q += (b == b'?') as u8;
            l += (b == b'\n') as u8;
            c += (b & 0xc0 == 0x80) as u8;
        }
        digits += d as usize;
        questions += q as usize;
        lines += l as usize;
        continuation += c as usize;
    }
    (digits, questions, lines, continuation)
}

/// Reusable buffers for featurising prompts with one [`FeatureConfig`].
pub struct Featurizer {
    config: FeatureConfig,
    mask: u64,
    /// A signed count per bucket, saturating at ±32,767 (`i16`: half the cache footprint of
    /// `i32`, and the counts are read at random).
    counts: Vec<i16>,
    /// The buckets whose count was zero when an n-gram reached them, in order: the first
    /// `touched_len` entries (the rest is room written ahead). The block's end clears them.
    touched: Vec<u32>,
    touched_len: usize,
    /// The word whose character n-grams are being taken, padded with a space on either side.
    padded: Vec<u32>,
    /// The signed tf transform of counts in -64..64, at `count + 64` (a `ln` per n-gram would
    /// dominate scoring time).
    tf: [f64; 128],
    /// For a count `c` in -64..64 moved by one n-gram of sign `s` (0: +1, 1: -1), at
    /// `2 (c + 64) + s`: how much the bucket's value and its square change.
    step: [(f64, f64); 256],
}

/// The running sums of the block being scored: its dot product with `weights` and its sum of
/// squares. Without weights (materialising for training), nothing is summed.
struct Acc<'w> {
    weights: Option<&'w [f32]>,
    num: f64,
    ss: f64,
}

impl<'w> Acc<'w> {
    fn new(weights: Option<&'w [f32]>) -> Self {
        Acc {
            weights,
            num: 0.0,
            ss: 0.0,
        }
    }

    /// The block's L2-normalised dot product, scaled by `weight`; clears the sums.
    fn take_block(&mut self, weight: f64) -> f64 {
        let (num, ss) = (self.num, self.ss);
        (self.num, self.ss) = (0.0, 0.0);
        // every non-zero count adds at least 1 to the sum of squares (|tf| >= 1); anything
        // below that is the rounding left by values that came and went: an empty block
        if ss >= 0.5 {
            num * weight / ss.sqrt()
        } else {
            0.0
        }
    }
}

impl Featurizer {
    pub fn new(config: &FeatureConfig) -> Self {
        let tf = |c: i32| tf_value(c, config.sublinear_tf);
        Featurizer {
            mask: (1u64 << config.hash_bits) - 1,
            counts: vec![0; config.buckets()],
            touched: vec![0; 4096],
            touched_len: 0,
            padded: Vec::with_capacity(64),
            tf: std::array::from_fn(|i| tf(i as i32 - 64)),
            step: std::array::from_fn(|i| {
                let old = (i >> 1) as i32 - 64;
                let new = old + if i & 1 == 0 { 1 } else { -1 };
                let (vo, vn) = (tf(old), tf(new));
                (vn - vo, vn * vn - vo * vo)
            }),
            config: config.clone(),
        }
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The (signed, tf-transformed) value of a count.
    #[inline(always)]
    fn tf_of(&self, c: i16) -> f64 {
        match self.tf.get((c as i32 + 64) as usize) {
            Some(&v) => v,
            None => tf_value(c.into(), self.config.sublinear_tf),
        }
    }

    /// Counts one n-gram of hash `h` and lists its bucket if it was at zero. Scoring (`acc` with
    /// weights) also moves the block's dot product and sum of squares by the change of the
    /// bucket's value, so the block needs no walk over its buckets at the end.
    #[inline(always)]
    fn add(&mut self, h: u64, acc: &mut Acc<'_>) {
        let h = finish(h);
        let b = (h & self.mask) as usize;
        if self.touched_len == self.touched.len() {
            self.touched.resize(2 * self.touched.len(), 0);
        }
        let c = &mut self.counts[b];
        let old = *c;
        // Whether the bucket is new is a coin toss for the processor: no branch on it. The
        // bucket is written at the end of the list, and the list grows by one when it was new.
        // A bucket whose signed count returns to zero may be listed twice.
        self.touched[self.touched_len] = b as u32;
        self.touched_len += (old == 0) as usize;
        let negative = (h >> 63) as usize;
        let new = old.saturating_add(1 - 2 * negative as i16);
        *c = new;
        if let Some(w) = acc.weights {
            let (dv, dsq) = match self.step.get(((old as i32 + 64) as usize) << 1 | negative) {
                Some(&d) => d,
                None => {
                    let (vo, vn) = (self.tf_of(old), self.tf_of(new));
                    (vn - vo, vn * vn - vo * vo)
                }
            };
            acc.num += dv * w[b] as f64;
            acc.ss += dsq;
        }
    }

    /// Ends a block: every bucket counts zero again.
    fn clear_block(&mut self) {
        for &b in &self.touched[..self.touched_len] {
            self.counts[b as usize] = 0;
        }
        self.touched_len = 0;
    }

    /// Word unigrams and bigrams of the whole prompt, with the dense counts in `dense` when
    /// given (equal to [`dense_features`]' own pass). The text is compiled in two forms, for
    /// ASCII and for the rest ([`next_char`]).
    ///
    /// One step per character, a branch on whether it is in a word. On 4,000 bytes of English
    /// this took 13 µs where going a word at a time (a search for each word's start and end,
    /// then a loop over its bytes) took 19, and 40% less than a branch-free step carrying the
    /// hashes by selects (18.5 against 30.9 µs in one slow run; the selects lengthen the hash's
    /// dependency chain on every byte).
    fn word_pass(&mut self, prompt: &str, dense: Option<&mut DenseCounts>, acc: &mut Acc<'_>) {
        if prompt.is_ascii() {
            self.word_scan::<true>(prompt, dense, acc)
        } else {
            self.word_scan::<false>(prompt, dense, acc)
        }
    }

    /// [`word_pass`](Self::word_pass) over text that is all ASCII if `ASCII`.
    #[inline(always)]
    fn word_scan<const ASCII: bool>(
        &mut self,
        prompt: &str,
        dense: Option<&mut DenseCounts>,
        acc: &mut Acc<'_>,
    ) {
        let (mut words, mut numbers, mut word_chars) = (0, 0, 0);
        let mut prev: Option<u64> = None;
        let (mut uni, mut bi, mut in_word) = (0u64, 0u64, false);
        let mut at = 0;
        while let Some((lc, digit, next)) = next_char::<ASCII>(prompt, at) {
            at = next;
            if lc != 0 {
                if !in_word {
                    uni = FNV_OFFSET ^ NS_WORD;
                    // the bigram's hash is only used after the first word
                    bi = fnv_step(prev.unwrap_or(0), ' ' as u32);
                    in_word = true;
                    words += 1;
                    numbers += digit as usize;
                }
                uni = fnv_step(uni, lc);
                bi = fnv_step(bi, lc);
                word_chars += 1;
            } else if in_word {
                self.end_word(uni, bi, &mut prev, acc);
                in_word = false;
            }
        }
        if in_word {
            self.end_word(uni, bi, &mut prev, acc);
        }
        if let Some(d) = dense {
            let (digits, questions, lines, continuation) = byte_counts(prompt.as_bytes());
            *d = DenseCounts {
                chars: prompt.len() - continuation,
                digits,
                questions,
                lines,
                words,
                numbers,
                word_chars,
            };
        }
    }

    #[inline]
    fn end_word(&mut self, uni: u64, bi: u64, prev: &mut Option<u64>, acc: &mut Acc<'_>) {
        self.add(uni, acc);
        if prev.is_some() {
            self.add(bi, acc);
        }
        *prev = Some(uni);
    }

    /// The character n-grams of the words of the first `limit` characters of `prompt` (0: all):
    /// each word is gathered lowercased and padded with a space on either side, then every run
    /// of `char_min..=char_max` of it is hashed.
    fn char_pass(&mut self, prompt: &str, limit: u32, acc: &mut Acc<'_>) {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        // ASCII: the first `limit` characters are the first `limit` bytes
        let head = &prompt.as_bytes()[..prompt.len().min(limit)];
        if head.is_ascii() {
            self.char_scan::<true>(prompt, limit, acc)
        } else {
            self.char_scan::<false>(prompt, limit, acc)
        }
    }

    /// [`char_pass`](Self::char_pass) over a head that is all ASCII if `ASCII`.
    #[inline(always)]
    fn char_scan<const ASCII: bool>(&mut self, prompt: &str, limit: usize, acc: &mut Acc<'_>) {
        let mut padded = std::mem::take(&mut self.padded);
        padded.clear();
        padded.push(' ' as u32);
        let (mut at, mut chars) = (0, 0);
        while chars < limit {
            let Some((lc, _, next)) = next_char::<ASCII>(prompt, at) else {
                break;
            };
            (at, chars) = (next, chars + 1);
            if lc != 0 {
                padded.push(lc);
            } else if padded.len() > 1 {
                padded.push(' ' as u32);
                self.grams(&padded, acc);
                padded.truncate(1);
            }
        }
        if padded.len() > 1 {
            padded.push(' ' as u32);
            self.grams(&padded, acc);
        }
        self.padded = padded;
    }

    /// The character n-grams of a padded word. The shipped configuration (3- and 4-grams) has a
    /// loop of its own: each 4-gram extends its start's 3-gram by one step.
    #[inline]
    fn grams(&mut self, padded: &[u32], acc: &mut Acc<'_>) {
        let (lo, hi) = (self.config.char_min as usize, self.config.char_max as usize);
        let n = padded.len();
        if (lo, hi) == (3, 4) {
            for (start, w) in padded.windows(3).enumerate() {
                let h = [w[0], w[1], w[2]]
                    .into_iter()
                    .fold(FNV_OFFSET ^ NS_CHAR, fnv_step);
                self.add(h, acc);
                if let Some(&u) = padded.get(start + 3) {
                    self.add(fnv_step(h, u), acc);
                }
            }
            return;
        }
        for start in 0..(n + 1).saturating_sub(lo) {
            let gram = &padded[start..(start + hi).min(n)];
            let mut h = FNV_OFFSET ^ NS_CHAR;
            for &u in &gram[..lo - 1] {
                h = fnv_step(h, u);
            }
            for &u in &gram[lo - 1..] {
                h = fnv_step(h, u);
                self.add(h, acc);
            }
        }
    }

    /// Drains the block counted by [`hashed`](Self::hashed)'s passes: calls `f(bucket, value)`
    /// with each non-zero (tf-transformed) value and returns the sum of squares, then starts a
    /// new block.
    fn drain(&mut self, mut f: impl FnMut(u32, f64)) -> f64 {
        let mut ss = 0.0;
        for &b in &self.touched[..self.touched_len] {
            let c = std::mem::take(&mut self.counts[b as usize]);
            if c == 0 {
                continue; // listed twice: taken on the first visit
            }
            let v = self.tf_of(c);
            ss += v * v;
            f(b, v);
        }
        self.touched_len = 0;
        ss
    }

    fn flush_block(&mut self, weight: f64, out: &mut Vec<(u32, f32)>, pairs: &mut Vec<(u32, f64)>) {
        pairs.clear();
        let ss = self.drain(|b, v| pairs.push((b, v)));
        if ss > 0.0 {
            let k = weight / ss.sqrt();
            out.extend(pairs.iter().map(|&(b, v)| (b, (v * k) as f32)));
        }
    }

    /// The hashed features of `prompt` as (bucket, value) pairs appended to `out` (a bucket may
    /// appear once per block).
    pub fn hashed(&mut self, prompt: &str, out: &mut Vec<(u32, f32)>) {
        let mut pairs = Vec::new();
        let acc = &mut Acc::new(None);
        if self.config.word_ngrams {
            self.word_pass(prompt, None, acc);
            self.flush_block(self.config.word_weight as f64, out, &mut pairs);
        }
        if self.config.char_min > 0 {
            self.char_pass(prompt, self.config.char_prefix, acc);
            self.flush_block(self.config.char_weight as f64, out, &mut pairs);
        }
    }

    /// The dot product of the hashed features of `prompt` with `weights` (one per bucket), without
    /// materialising them.
    pub fn dot(&mut self, prompt: &str, weights: &[f32]) -> f64 {
        self.dot_dense(prompt, weights, false).0
    }

    /// [`dot`](Self::dot), and with `dense` the raw dense features too ([`dense_features`]),
    /// counted during the word pass rather than in a pass of their own.
    ///
    /// # Panics
    /// If `weights` has fewer entries than the configuration has buckets.
    pub fn dot_dense(
        &mut self,
        prompt: &str,
        weights: &[f32],
        dense: bool,
    ) -> (f64, Option<[f64; DENSE]>) {
        assert!(
            weights.len() >= self.config.buckets(),
            "one weight per bucket"
        );
        let mut s = 0.0f64;
        // counted in the word pass when there is one
        let mut counts = (dense && self.config.word_ngrams).then(DenseCounts::default);
        let acc = &mut Acc::new(Some(weights));
        if self.config.word_ngrams {
            self.word_pass(prompt, counts.as_mut(), acc);
            s += acc.take_block(self.config.word_weight as f64);
            self.clear_block();
        }
        if self.config.char_min > 0 {
            self.char_pass(prompt, self.config.char_prefix, acc);
            s += acc.take_block(self.config.char_weight as f64);
            self.clear_block();
        }
        let features = dense.then(|| match counts {
            Some(c) => c.features(prompt),
            None => dense_features(prompt),
        });
        (s, features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ASCII prompt takes the byte path of the word pass; the same words followed by a
    /// non-ASCII separator (which adds no n-gram) take the `char` path: same features.
    #[test]
    fn the_ascii_word_pass_equals_the_unicode_one() {
        let mut f = Featurizer::new(&FeatureConfig::default());
        for p in [
            "What is 12 + 30?\nA. 42\nB. 7x",
            "Mixed CASE words, digits 0123456789 and punctuation!?",
            "tail word",
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f.hashed(p, &mut a);
            f.hashed(&format!("{p}\u{2014}"), &mut b);
            assert!(!a.is_empty());
            assert_eq!(a, b, "{p:?}");
        }
    }

    /// The n-gram hashes of `prompt` by the definition, written plainly: words are maximal runs
    /// of alphanumeric characters, lowercased; unigrams, bigrams (the unigram before, a space,
    /// the word), and the character n-grams of each word of the first `limit` characters,
    /// padded with a space on either side.
    fn reference_hashes(prompt: &str, config: &FeatureConfig, limit: usize) -> [Vec<u64>; 2] {
        let words = |chars: &mut dyn Iterator<Item = char>| -> Vec<Vec<u32>> {
            let mut out = vec![Vec::new()];
            for c in chars {
                if c.is_alphanumeric() {
                    out.last_mut()
                        .unwrap()
                        .push(c.to_lowercase().next().unwrap() as u32);
                } else if !out.last().unwrap().is_empty() {
                    out.push(Vec::new());
                }
            }
            out.retain(|w| !w.is_empty());
            out
        };
        let fnv = |seed: u64, units: &[u32]| units.iter().fold(seed, |h, &u| fnv_step(h, u));
        let mut word_hashes = Vec::new();
        let mut prev = None;
        for w in words(&mut prompt.chars()) {
            let uni = fnv(FNV_OFFSET ^ NS_WORD, w.as_slice());
            word_hashes.push(uni);
            if let Some(p) = prev {
                word_hashes.push(fnv(fnv_step(p, ' ' as u32), w.as_slice()));
            }
            prev = Some(uni);
        }
        let mut char_hashes = Vec::new();
        for w in words(&mut prompt.chars().take(limit)) {
            let padded: Vec<u32> = [' ' as u32]
                .into_iter()
                .chain(w)
                .chain([' ' as u32])
                .collect();
            for n in config.char_min as usize..=config.char_max as usize {
                for gram in padded.windows(n) {
                    char_hashes.push(fnv(FNV_OFFSET ^ NS_CHAR, gram));
                }
            }
        }
        [word_hashes, char_hashes]
    }

    /// Both passes against [`reference_hashes`]: the same buckets with the same counts, on
    /// ASCII, mixed and non-Latin text, with the character prefix cut before, inside and after
    /// multi-byte characters and words; for the shipped 3- and 4-grams (a loop of their own) and
    /// other lengths.
    #[test]
    fn passes_count_the_n_grams_of_the_definition() {
        let drained = |f: &mut Featurizer| {
            let mut v = Vec::new();
            f.drain(|b, x| v.push((b, x.to_bits())));
            v.sort_unstable();
            v
        };
        let long = "Which of the following is NOT a Prime number? A. 2 B. 9 C. 13\n".repeat(12);
        let mixed = "Ünïcödé wörds — “quoted” ﬁ ligature, 中文字符 and ½ ⅔ İstanbul ΣΑΣ 👩‍💻 x².\n"
            .repeat(12);
        let prompts = [
            long.as_str(),
            &long[..599],
            &long[..601],
            mixed.as_str(),
            "x",
            "",
            "  ",
            "UPPER lower 123abc",
            "a\u{301}b c\u{200d}d",
        ];
        for (lo, hi) in [(3, 4), (1, 1), (2, 5), (4, 4)] {
            let config = FeatureConfig {
                char_min: lo,
                char_max: hi,
                ..FeatureConfig::default()
            };
            let mut f = Featurizer::new(&config);
            for p in prompts {
                for limit in [600, 3, 40, 0] {
                    let [words, chars] =
                        reference_hashes(p, &config, if limit == 0 { usize::MAX } else { limit });
                    let acc = &mut Acc::new(None);
                    for h in words {
                        f.add(h, acc);
                    }
                    let want_words = drained(&mut f);
                    for h in chars {
                        f.add(h, acc);
                    }
                    let want_chars = drained(&mut f);
                    f.word_pass(p, None, acc);
                    assert_eq!(drained(&mut f), want_words, "{p:?}");
                    f.char_pass(p, limit as u32, acc);
                    assert_eq!(drained(&mut f), want_chars, "{p:?} {limit} {lo}..{hi}");
                    if lo <= 3 {
                        // a padded word has at least three characters
                        assert_eq!(
                            want_chars.is_empty(),
                            !p.chars()
                                .take(if limit == 0 { usize::MAX } else { limit })
                                .any(char::is_alphanumeric)
                        );
                    }
                }
            }
        }
    }

    /// Every marker is found on its own, anywhere in the text, and plain prose has none.
    #[test]
    fn markers_find_each_marker() {
        assert_eq!(
            markers("Plain prose, with commas; and a question?"),
            (false, false)
        );
        assert_eq!(markers(""), (false, false));
        for m in CODE_MARKERS {
            for t in [
                m.to_string(),
                format!("some text {m}"),
                format!("{m} then text"),
            ] {
                assert_eq!(markers(&t), (true, false), "{t:?}");
            }
        }
        for m in MATH_MARKERS.iter().chain(&["^", "$", "="]) {
            for t in [
                m.to_string(),
                format!("some text {m}"),
                format!("{m} then text"),
            ] {
                assert_eq!(markers(&t), (false, true), "{t:?}");
            }
        }
        assert_eq!(markers("def f(x): return x = 1"), (true, true));
    }

    /// Scoring's running sums against the materialised features, in a space of 16 buckets where
    /// n-grams collide, counts rise past the tf table and signed counts cancel back to zero
    /// (blocks that cancel entirely included).
    #[test]
    fn running_dot_product_equals_the_materialised_one() {
        let config = FeatureConfig {
            hash_bits: 4,
            ..FeatureConfig::default()
        };
        let mut f = Featurizer::new(&config);
        let weights: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 4.0).collect();
        let mut long = String::new();
        for i in 0..300 {
            long.push_str(&format!("w{} ", i % 37));
        }
        for p in [
            "",
            "a",
            "Hello World",
            "the the the the the the the the the the the the the the the the the the",
            long.as_str(),
            "Ünïcödé wörds, 中文字符 and ½ numerals; ends in a word",
            "x y",
            "ab ab",
        ] {
            let mut pairs = Vec::new();
            f.hashed(p, &mut pairs);
            let want: f64 = pairs
                .iter()
                .map(|&(b, v)| v as f64 * weights[b as usize] as f64)
                .sum();
            let got = f.dot(p, &weights);
            assert!((got - want).abs() < 1e-5, "{p:?}: {got} vs {want}");
        }
        // the buffers are left clean: the same prompt scores the same after others
        let first = f.dot("Hello World", &weights);
        f.dot(&long, &weights);
        assert_eq!(f.dot("Hello World", &weights).to_bits(), first.to_bits());

        // two n-grams of one bucket with opposite signs cancel: the block is empty, and stays
        // so however its sums rounded; a third brings the bucket back to one
        let bucket_sign = |h: u64| (finish(h) & 15, finish(h) >> 63);
        let h1 = 1u64;
        let h2 = (2..10_000u64)
            .find(|&h| {
                let ((b1, s1), (b2, s2)) = (bucket_sign(h1), bucket_sign(h));
                b1 == b2 && s1 != s2
            })
            .expect("a colliding hash of the other sign");
        let mut acc = Acc::new(Some(&weights));
        for h in [h1, h1, h1, h2, h2, h2] {
            f.add(h, &mut acc);
        }
        assert_eq!(acc.take_block(1.0), 0.0);
        f.clear_block();
        for h in [h1, h2, h1] {
            f.add(h, &mut acc);
        }
        let (b, sign) = bucket_sign(h1);
        let w = weights[b as usize] as f64;
        assert_eq!(acc.take_block(1.0), if sign == 0 { w } else { -w });
        f.clear_block();
    }

    /// Counts saturate instead of overflowing: a word repeated past `i16::MAX` times weighs as
    /// much as one repeated exactly that often.
    #[test]
    fn bucket_counts_saturate() {
        let mut f = Featurizer::new(&FeatureConfig {
            char_min: 0,
            ..FeatureConfig::default()
        });
        let (mut at_max, mut beyond) = (Vec::new(), Vec::new());
        f.hashed(&"a ".repeat(i16::MAX as usize + 1), &mut at_max);
        f.hashed(&"a ".repeat(40_000), &mut beyond);
        assert_eq!(at_max.len(), 2, "the unigram and the bigram");
        assert_eq!(at_max, beyond);
    }

    /// Scoring counts the dense features during its word pass; they must be exactly the ones
    /// training computes on its own pass, for every kind of text.
    #[test]
    fn dense_features_from_the_word_pass_equal_their_own_pass() {
        let prompts = [
            "",
            "?",
            "What is 12 + 30?\nA. 42\nB. 7x",
            "  leading spaces, trailing 9 ",
            "Ünïcödé wörds, ﬁ ligature, 中文字符 and ½ ⅔ numerals\n\n\n",
            "emoji 👩‍💻 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 letters: 4-byte characters? 9",
            "def f(x):\n    return x ** 2  # code\n```\n$x^2$ = \\frac{1}{2}",
            "word1word 2word3 33 a1 1a",
        ];
        for config in [
            FeatureConfig::default(),
            FeatureConfig {
                char_min: 0,
                ..FeatureConfig::default()
            },
            FeatureConfig {
                word_ngrams: false,
                ..FeatureConfig::default()
            },
        ] {
            let mut f = Featurizer::new(&config);
            let weights: Vec<f32> = (0..config.buckets())
                .map(|i| ((i % 97) as f32 - 48.0) / 100.0)
                .collect();
            for p in prompts {
                let (dot, dense) = f.dot_dense(p, &weights, true);
                assert_eq!(dense, Some(dense_features(p)), "{p:?}");
                assert_eq!(dot.to_bits(), f.dot(p, &weights).to_bits(), "{p:?}");
                assert_eq!(f.dot_dense(p, &weights, false).1, None);
            }
        }
    }
}
