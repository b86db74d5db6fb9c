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
//! nothing is allocated per n-gram, and scoring a prompt walks it once per block.

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
            hash_bits: 18,
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
/// lowercase).
#[inline]
fn lower(c: char) -> u32 {
    if c.is_ascii() {
        c.to_ascii_lowercase() as u32
    } else {
        c.to_lowercase().next().unwrap_or(c) as u32
    }
}

/// Spreads FNV's weak low bits: one multiply by the golden ratio, then the well-mixed high half
/// moved down (bucket from the low bits, sign from the top bit).
#[inline]
fn finish(h: u64) -> u64 {
    h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(32)
}

/// The counts behind the dense features, fed one character at a time: scoring feeds them from
/// the word pass it makes anyway, so the prompt is not walked once more for them.
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

/// Whether `text` has a code marker (```` ``` ````, `def `, `return `, `#include`, `function `,
/// `printf`, `};`, `print(`) and a math marker (`\\frac`, `\\(`, `\\[`, `sqrt`, `^`, `$`, `=`), in
/// plain substring searches.
fn markers(text: &str) -> (bool, bool) {
    const CODE: [&str; 8] = [
        "```",
        "#include",
        "};",
        "def ",
        "return ",
        "function ",
        "printf",
        "print(",
    ];
    const MATH: [&str; 4] = ["\\frac", "\\(", "\\[", "sqrt"];
    let code = CODE.iter().any(|m| text.contains(m));
    let math = text.bytes().any(|c| matches!(c, b'^' | b'$' | b'='))
        || MATH.iter().any(|m| text.contains(m));
    (code, math)
}

/// Where the word pass is: the running hashes of the current word's unigram and of its bigram
/// with the word before.
#[derive(Default)]
struct WordState {
    /// The unigram hash of the word before, which starts the bigram's hash.
    prev: Option<u64>,
    uni: u64,
    bi: u64,
    in_word: bool,
}

/// Reusable buffers for featurising prompts with one [`FeatureConfig`].
pub struct Featurizer {
    config: FeatureConfig,
    mask: u64,
    /// A signed count per bucket, saturating at ±32,767 (`i16`: half the cache footprint of
    /// `i32`, and the counts are read at random).
    counts: Vec<i16>,
    touched: Vec<u32>,
    word: Vec<u32>,
    /// The tf transform of counts below 64 (a `ln` per bucket would dominate scoring time).
    tf: [f64; 64],
}

impl Featurizer {
    pub fn new(config: &FeatureConfig) -> Self {
        Featurizer {
            mask: (1u64 << config.hash_bits) - 1,
            counts: vec![0; config.buckets()],
            touched: Vec::with_capacity(4096),
            word: Vec::with_capacity(64),
            tf: std::array::from_fn(|c| {
                if config.sublinear_tf && c > 0 {
                    1.0 + (c as f64).ln()
                } else {
                    c as f64
                }
            }),
            config: config.clone(),
        }
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    #[inline]
    fn add(&mut self, h: u64) {
        let h = finish(h);
        let b = (h & self.mask) as usize;
        let c = &mut self.counts[b];
        if *c == 0 {
            self.touched.push(b as u32);
        }
        // A bucket whose signed count returns to zero may be pushed twice; `drain` skips the
        // duplicate because it zeroes the bucket on the first visit.
        *c = c.saturating_add(if h >> 63 == 0 { 1 } else { -1 });
    }

    /// Word unigrams and bigrams of the whole prompt, hashed as the characters arrive (no word
    /// buffer); feeds `dense` with every character when given.
    fn word_pass(&mut self, prompt: &str, mut dense: Option<&mut DenseCounts>) {
        let mut st = WordState::default();
        if prompt.is_ascii() {
            // ASCII, the common case: bytes are characters, no decoding or Unicode tables
            for &b in prompt.as_bytes() {
                let alnum = b.is_ascii_alphanumeric();
                let lc = b.to_ascii_lowercase() as u32;
                self.word_step(&mut st, b as char, alnum, lc, dense.as_deref_mut());
            }
        } else {
            for c in prompt.chars() {
                let alnum = c.is_alphanumeric();
                let lc = if alnum { lower(c) } else { 0 };
                self.word_step(&mut st, c, alnum, lc, dense.as_deref_mut());
            }
        }
        if st.in_word {
            self.end_word(st.uni, st.bi, &mut st.prev);
        }
    }

    /// One character of [`word_pass`](Self::word_pass): `lc` is its lowercase when `alnum`.
    #[inline(always)]
    fn word_step(
        &mut self,
        st: &mut WordState,
        c: char,
        alnum: bool,
        lc: u32,
        dense: Option<&mut DenseCounts>,
    ) {
        if let Some(d) = dense {
            d.feed(c, alnum, alnum && !st.in_word);
        }
        if alnum {
            if !st.in_word {
                st.uni = FNV_OFFSET ^ NS_WORD;
                if let Some(p) = st.prev {
                    st.bi = fnv_step(p, ' ' as u32);
                }
                st.in_word = true;
            }
            st.uni = fnv_step(st.uni, lc);
            st.bi = fnv_step(st.bi, lc);
        } else if st.in_word {
            self.end_word(st.uni, st.bi, &mut st.prev);
            st.in_word = false;
        }
    }

    #[inline]
    fn end_word(&mut self, uni: u64, bi: u64, prev: &mut Option<u64>) {
        self.add(uni);
        if prev.is_some() {
            self.add(bi);
        }
        *prev = Some(uni);
    }

    fn char_grams(&mut self) {
        let (lo, hi) = (self.config.char_min as usize, self.config.char_max as usize);
        let word = std::mem::take(&mut self.word);
        let n = word.len() + 2;
        let at = |i: usize| -> u32 {
            if i == 0 || i == n - 1 {
                ' ' as u32
            } else {
                word[i - 1]
            }
        };
        for start in 0..n.saturating_sub(lo - 1) {
            let mut h = FNV_OFFSET ^ NS_CHAR;
            for j in start..(start + hi).min(n) {
                h = fnv_step(h, at(j));
                if j + 1 - start >= lo {
                    self.add(h);
                }
            }
        }
        self.word = word;
        self.word.clear();
    }

    /// Walks the words of the first `limit` characters of `prompt` (0: all), calling `on_word`
    /// with each lowercased word in `self.word`.
    fn for_each_word(&mut self, prompt: &str, limit: u32, mut on_word: impl FnMut(&mut Self)) {
        self.word.clear();
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        for c in prompt.chars().take(limit) {
            if c.is_alphanumeric() {
                self.word.push(lower(c));
            } else if !self.word.is_empty() {
                on_word(self);
                self.word.clear();
            }
        }
        if !self.word.is_empty() {
            on_word(self);
            self.word.clear();
        }
    }

    /// Drains the touched buckets: calls `f(bucket, value)` with each non-zero (tf-transformed)
    /// value and returns the sum of squares. Leaves the counts all zero.
    fn drain(&mut self, mut f: impl FnMut(u32, f64)) -> f64 {
        let mut ss = 0.0;
        let sublinear = self.config.sublinear_tf;
        for &b in &self.touched {
            let c = std::mem::take(&mut self.counts[b as usize]);
            if c == 0 {
                continue;
            }
            let a = c.unsigned_abs();
            let v = match self.tf.get(a as usize) {
                Some(&v) => v,
                None if sublinear => 1.0 + (a as f64).ln(),
                None => a as f64,
            };
            let v = if c < 0 { -v } else { v };
            ss += v * v;
            f(b, v);
        }
        self.touched.clear();
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
        if self.config.word_ngrams {
            self.word_pass(prompt, None);
            self.flush_block(self.config.word_weight as f64, out, &mut pairs);
        }
        if self.config.char_min > 0 {
            self.for_each_word(prompt, self.config.char_prefix, |me| me.char_grams());
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
    pub fn dot_dense(
        &mut self,
        prompt: &str,
        weights: &[f32],
        dense: bool,
    ) -> (f64, Option<[f64; DENSE]>) {
        let mut s = 0.0f64;
        // counted in the word pass when there is one
        let mut counts = (dense && self.config.word_ngrams).then(DenseCounts::default);
        if self.config.word_ngrams {
            self.word_pass(prompt, counts.as_mut());
            s += self.dot_block(self.config.word_weight as f64, weights);
        }
        if self.config.char_min > 0 {
            self.for_each_word(prompt, self.config.char_prefix, |me| me.char_grams());
            s += self.dot_block(self.config.char_weight as f64, weights);
        }
        let features = dense.then(|| match counts {
            Some(c) => c.features(prompt),
            None => dense_features(prompt),
        });
        (s, features)
    }

    fn dot_block(&mut self, weight: f64, weights: &[f32]) -> f64 {
        let mut num = 0.0f64;
        let ss = self.drain(|b, v| num += v * weights[b as usize] as f64);
        if ss > 0.0 {
            num * weight / ss.sqrt()
        } else {
            0.0
        }
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
