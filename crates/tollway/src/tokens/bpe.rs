//! OpenAI's `o200k_base` byte-pair encoding, held compactly: what [`super::count`] uses.
//!
//! The vocabulary is OpenAI's published file (`data/o200k_base.tiktoken`, see `data/README.md`):
//! one token per line, its bytes in base64 and its rank, in rank order. Encoding is tiktoken's: the
//! text is split at the special tokens, each stretch is cut into pieces by the pre-tokenizer pattern
//! below (tiktoken's, its one look-ahead done by hand), a piece that is a token is one token, and any other piece starts as single bytes whose
//! adjacent pairs are merged, lowest rank first (the leftmost of equal ranks), while the merged
//! bytes are a token. The tests check the ids against `tiktoken-rs` on every kind of text.
//!
//! What it holds: every token's bytes in one buffer, their ends, and an open-addressing table of
//! ranks keyed by the bytes' hash: 4.3 MB. `tiktoken-rs`'s `CoreBPE`, used before, keeps hash maps
//! of owned byte vectors both ways, a sorted copy and 128 regex clones. Measured on the gateway
//! (`tollway serve`, RSS after its first answer without usage): 60.1 MB with `CoreBPE`, 24.7 MB
//! with this (13.1–13.5 MB before either), and the build takes 27 ms instead of 156 ms. Counting
//! is 1.5–2.5× faster, most of it in the pattern, which the `regex` crate runs without
//! backtracking: 4 KB of English in 72–99 µs (`CoreBPE` 114–147 µs), 4.6 KB of code in 154–172 µs
//! (349–419 µs), release build, three runs each.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

use base64::Engine;
use regex::Regex;

/// The vocabulary, as OpenAI publishes it (SHA-256 in `data/README.md`).
const VOCAB: &str = include_str!("../../data/o200k_base.tiktoken");

/// `o200k_base`'s pre-tokenizer: the pattern of OpenAI's `tiktoken` for this encoding, except its
/// `\s+(?!\S)|\s+` (a run of whitespace, less its last character when a non-space follows) is
/// `\s+` here, and [`Bpe::ordinary`] gives that character back. The `regex` crate has no
/// look-ahead; its leftmost-first matching is otherwise what tiktoken's backtracking engine finds.
const PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+",
);

/// The special tokens, each one token wherever it appears in a text, and their ids.
const SPECIALS: [(&str, u32); 2] = [("<|endoftext|>", 199_999), ("<|endofprompt|>", 200_018)];

/// A rank in the table; `EMPTY` marks a free slot.
const EMPTY: u32 = u32::MAX;

pub struct Bpe {
    /// Every token's bytes, in rank order.
    bytes: Vec<u8>,
    /// Token `r` is `bytes[ends[r - 1]..ends[r]]` (from 0 for `r = 0`).
    ends: Vec<u32>,
    /// Open addressing, linear probing: a rank or `EMPTY`, at the slot its bytes hash to.
    slots: Vec<u32>,
    hasher: foldhash::fast::FixedState,
    split: Regex,
}

impl Bpe {
    /// Builds the encoder from the vocabulary compiled into the binary.
    pub fn o200k_base() -> Result<Self, String> {
        Self::from_vocab(VOCAB, PATTERN)
    }

    fn from_vocab(vocab: &str, pattern: &str) -> Result<Self, String> {
        let split = Regex::new(pattern).map_err(|e| format!("the pre-tokenizer pattern: {e}"))?;
        let mut bytes = Vec::with_capacity(vocab.len() / 2);
        let mut ends = Vec::new();
        for (i, line) in vocab.lines().enumerate() {
            let (b64, rank) = line
                .split_once(' ')
                .ok_or_else(|| format!("vocabulary line {}: no rank", i + 1))?;
            if rank.parse::<usize>() != Ok(i) {
                return Err(format!(
                    "vocabulary line {}: rank {rank:?} out of order (expected {i})",
                    i + 1
                ));
            }
            base64::engine::general_purpose::STANDARD
                .decode_vec(b64, &mut bytes)
                .map_err(|e| format!("vocabulary line {}: {e}", i + 1))?;
            let end = u32::try_from(bytes.len()).map_err(|_| "vocabulary too large")?;
            ends.push(end);
        }
        if ends.is_empty() {
            return Err("empty vocabulary".into());
        }
        bytes.shrink_to_fit();
        ends.shrink_to_fit();
        // a load of at most a half keeps probes short
        let size = (ends.len() * 2).next_power_of_two();
        let mut bpe = Self {
            bytes,
            ends,
            slots: vec![EMPTY; size],
            hasher: foldhash::fast::FixedState::with_seed(0x70_11_3a),
            split,
        };
        for rank in 0..bpe.ends.len() {
            let rank = u32::try_from(rank).map_err(|_| "vocabulary too large")?;
            let token = bpe.token(rank);
            let mut slot = bpe.slot(token);
            loop {
                match bpe.slots[slot] {
                    EMPTY => {
                        bpe.slots[slot] = rank;
                        break;
                    }
                    // the same bytes twice: the first (lower) rank is the one BPE would use
                    other if bpe.token(other) == token => break,
                    _ => slot = (slot + 1) & (bpe.slots.len() - 1),
                }
            }
        }
        Ok(bpe)
    }

    /// Bytes held, for a test's bound.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity() + 4 * self.slots.capacity()
    }

    fn token(&self, rank: u32) -> &[u8] {
        let r = rank as usize;
        let start = if r == 0 { 0 } else { self.ends[r - 1] as usize };
        &self.bytes[start..self.ends[r] as usize]
    }

    fn slot(&self, bytes: &[u8]) -> usize {
        // the table's size is a power of two: keep the hash's low bits
        self.hasher.hash_one(bytes) as usize & (self.slots.len() - 1)
    }

    /// The rank of the token with exactly these bytes.
    fn rank(&self, bytes: &[u8]) -> Option<u32> {
        let mut slot = self.slot(bytes);
        loop {
            match self.slots[slot] {
                EMPTY => return None,
                r if self.token(r) == bytes => return Some(r),
                _ => slot = (slot + 1) & (self.slots.len() - 1),
            }
        }
    }

    /// The number of tokens of `text`, special tokens counted as one each.
    pub fn count(&self, text: &str) -> u64 {
        let mut n = 0u64;
        self.encode(text, &mut |_| n += 1);
        n
    }

    /// The token ids of `text`, handed to `emit` in order.
    pub fn encode(&self, text: &str, emit: &mut impl FnMut(u32)) {
        let mut start = 0;
        loop {
            let rest = &text[start..];
            let special = SPECIALS
                .iter()
                .filter_map(|&(s, id)| rest.find(s).map(|at| (at, s.len(), id)))
                .min();
            let Some((at, len, id)) = special else {
                return self.ordinary(rest, emit);
            };
            self.ordinary(&rest[..at], emit);
            emit(id);
            start += at + len;
        }
    }

    /// Encodes a text without special tokens.
    fn ordinary(&self, text: &str, emit: &mut impl FnMut(u32)) {
        let mut at = 0;
        while let Some(m) = self.split.find_at(text, at) {
            let mut piece = m.as_str();
            // tiktoken's `\s+(?!\S)`: a run of spaces (no line break: `\s*[\r\n]+` took those)
            // followed by a non-space gives its last character to the next piece
            if text[m.end()..].starts_with(|c: char| !c.is_whitespace())
                && !piece.contains(['\r', '\n'])
                && piece.chars().all(char::is_whitespace)
            {
                if let Some((last, _)) = piece.char_indices().last().filter(|&(i, _)| i > 0) {
                    piece = &piece[..last];
                }
            }
            self.piece(piece.as_bytes(), emit);
            at = m.start() + piece.len();
        }
    }

    /// Encodes one piece of the pre-tokenizer's: merges adjacent parts, lowest-ranked pair first.
    fn piece(&self, piece: &[u8], emit: &mut impl FnMut(u32)) {
        if let Some(rank) = self.rank(piece) {
            emit(rank);
            return;
        }
        let n = piece.len();
        // parts by their first byte: where the next one starts, and the one before
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        // (rank of the merged pair, start of its left part, end of its right part), smallest first
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n.saturating_sub(1) {
            if let Some(r) = self.rank(&piece[i..i + 2]) {
                heap.push(Reverse((r, i, i + 2)));
            }
        }
        while let Some(Reverse((_, i, end))) = heap.pop() {
            // stale: the left part was merged into another, or either part grew since
            let j = next[i];
            if !alive[i] || j >= n || next[j] != end {
                continue;
            }
            alive[j] = false;
            next[i] = end;
            if end < n {
                prev[end] = i;
                if let Some(r) = self.rank(&piece[i..next[end]]) {
                    heap.push(Reverse((r, i, next[end])));
                }
            }
            if i > 0 {
                let h = prev[i];
                if let Some(r) = self.rank(&piece[h..end]) {
                    heap.push(Reverse((r, h, end)));
                }
            }
        }
        let mut i = 0;
        while i < n {
            // every part is a token: single bytes are, and merges only make tokens
            emit(self.rank(&piece[i..next[i]]).unwrap_or(EMPTY));
            i = next[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn ours() -> &'static Bpe {
        static B: OnceLock<Bpe> = OnceLock::new();
        B.get_or_init(|| Bpe::o200k_base().expect("builds"))
    }

    fn reference() -> &'static tiktoken_rs::CoreBPE {
        static B: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
        B.get_or_init(|| tiktoken_rs::o200k_base().expect("builds"))
    }

    fn ids(text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        ours().encode(text, &mut |id| out.push(id));
        out
    }

    fn same_as_tiktoken(text: &str) {
        let want = reference().encode_with_special_tokens(text);
        assert_eq!(ids(text), want, "{text:?}");
        assert_eq!(ours().count(text), want.len() as u64, "{text:?}");
    }

    #[test]
    fn the_vocabulary_is_the_published_one() {
        let b = ours();
        assert_eq!(b.ends.len(), 199_998);
        // every token's bytes map back to its rank, and every byte is a token
        for r in 0..199_998u32 {
            assert_eq!(b.rank(b.token(r)), Some(r), "rank {r}");
        }
        for byte in 0..=255u8 {
            assert!(b.rank(&[byte]).is_some(), "byte {byte}");
        }
        assert_eq!(b.rank(b"hello"), Some(24912));
        assert_eq!(b.rank(b"not a token at all, surely"), None);
        // the compact form is what it claims to be
        let mb = b.heap_bytes() as f64 / 1e6;
        assert!(mb < 5.0, "{mb} MB");
    }

    #[test]
    fn ids_are_tiktokens_on_every_kind_of_text() {
        for text in [
            "",
            "hello world",
            "Hello, World! It's a test; we'll see what they've done, I'd say.",
            "HTTPServerError in XMLHttpRequest: 404 NotFound",
            "  leading and trailing spaces   ",
            "tabs\tand\nnew\r\nlines\n\n\n  \n",
            "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
            "def f(x):\n\treturn [i**2 for i in range(x) if i % 3 == 0]",
            "1234567890 3.14159 -42 1e-9 0x1F 1,000,000",
            "naïve café résumé — “quotes” ‘single’ … ½ ¾",
            "日本語のテキストと中文文本和한국어 텍스트",
            "مرحبا بالعالم שלום עולם Привет мир Γειά σου",
            "emoji 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✔️ and combining e\u{301} a\u{308}",
            "no-break\u{a0}\u{a0}spaces, ideographic\u{3000}\u{3000}\u{3000}ones, \u{2003} em \u{85}next",
            "  \tabc   x  9  .  \u{a0}\u{a0}é \n  \r\n   y\t\t\n\n z   ",
            "<|endoftext|>",
            "before<|endoftext|>after<|endofprompt|>end",
            "<|endoftext|<|endofprompt|>|>",
            "====================================================================================================================================",
            "----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "supercalifragilisticexpialidocious antidisestablishmentarianism",
            "\u{0}\u{1}\u{7f}\u{80}\u{ffff}\u{10ffff}",
        ] {
            same_as_tiktoken(text);
        }
        // long runs of one character: pieces far beyond a hundred bytes
        for ch in [' ', '\n', 'x', '.', '9', 'é', '語', '👍'] {
            same_as_tiktoken(&ch.to_string().repeat(3000));
        }
    }

    #[test]
    fn ids_are_tiktokens_on_random_text() {
        // characters from a mix of scripts, digits, punctuation, whitespace and specials' parts
        #[rustfmt::skip]
        const ALPHABET: &[&str] = &[
            "a", "e", "t", "Q", "Z", " ", " ", "  ", "\n", "\t", "\r\n", "0", "7", "42", ".", ",",
            "'", "'s", "'LL", "-", "_", "/", "\\", "(", ")", "{", "}", "\"", "<|", "|>", "é", "ß",
            "ж", "Ж", "語", "한", "ع", "👍", "\u{301}", "\u{200d}", "…", "€", "½", "the", "ing",
            "tion", "HTTP", "<|endoftext|>", "\u{a0}", "\u{3000}", "\u{2003}", "\u{85}", "\u{b}",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let len = rng.usize(0..60);
            let text: String = (0..len)
                .map(|_| ALPHABET[rng.usize(0..ALPHABET.len())])
                .collect();
            same_as_tiktoken(&text);
        }
    }

    #[test]
    fn a_bad_vocabulary_is_refused_by_line() {
        let pat = r"\S+|\s+";
        assert!(Bpe::from_vocab("YQ== 0\nYg== 1\n", pat).is_ok());
        let e = Bpe::from_vocab("YQ== 0\nYg== 2\n", pat)
            .err()
            .expect("refused");
        assert!(e.contains("line 2") && e.contains("out of order"), "{e}");
        let e = Bpe::from_vocab("YQ== 0\n!!!! 1\n", pat)
            .err()
            .expect("refused");
        assert!(e.contains("line 2"), "{e}");
        let e = Bpe::from_vocab("YQ==\n", pat).err().expect("refused");
        assert!(e.contains("no rank"), "{e}");
        assert!(Bpe::from_vocab("", pat).is_err());
        assert!(Bpe::from_vocab("YQ== 0\n", "(").is_err());
    }

    #[test]
    fn a_small_vocabulary_merges_lowest_rank_first() {
        // a b c, then "ab" (3), "bc" (4), "abc" (5): "abc" merges a+b first, then ab+c
        let vocab = "YQ== 0\nYg== 1\nYw== 2\nYWI= 3\nYmM= 4\nYWJj 5\n";
        let b = Bpe::from_vocab(vocab, r"\S+|\s+").expect("builds");
        let mut out = Vec::new();
        b.piece(b"abcabc", &mut |id| out.push(id));
        assert_eq!(out, [5, 5]);
        out.clear();
        // a+b first, then ab+c; the last c stays alone
        b.piece(b"abcc", &mut |id| out.push(id));
        assert_eq!(out, [5, 2]);
        out.clear();
        b.piece(b"cba", &mut |id| out.push(id));
        assert_eq!(out, [2, 1, 0]);
    }
}
