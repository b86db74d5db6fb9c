//! The distilled ("static") form of the sentence encoder, for prompts of any length in well under a
//! millisecond: every vocabulary token's all-MiniLM-L6-v2 embedding, computed once from the
//! encoder as the one-token text `[CLS] token [SEP]` ([`super::encoder::Encoder::distill`]), and a
//! prompt's embedding is the weighted mean of its tokens' rows. The weights (one per token,
//! smaller for frequent tokens) and a centre (the mean training embedding) come from the router
//! file; the table depends only on the encoder's weights.
//!
//! The table is not in the repository: it is distilled the first time it is needed (about a
//! minute of CPU) and cached next to the encoder's weights as `static-table.bin`, written
//! atomically and checked on every read (its encoder's SHA-256, its size, and a SHA-256 of its
//! contents), so a damaged or foreign file is rebuilt, never used.
//!
//! # Table file
//!
//! `TOLLWAY-STATIC-TABLE 1\n`, the encoder weights' SHA-256 in hex and `\n`, rows and width as
//! u32le, one f32le scale per row, the int8 rows (row-major), then the SHA-256 of all that.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::encoder::{
    shared_load, Encoder, SharedCache, WordPiece, DIM, ENCODER_NAME, MODEL_SHA256,
};
use super::RouterError;

const MAGIC: &[u8] = b"TOLLWAY-STATIC-TABLE 1\n";
/// The cache's file name in the encoder's directory.
pub const TABLE_FILE: &str = "static-table.bin";

fn err(m: impl Into<String>) -> RouterError {
    RouterError::Model(m.into())
}

/// Appends `row` to `out` as int8 (symmetric, by its largest magnitude) and returns the scale
/// that multiplies the int8 values back.
pub(crate) fn quantize_i8(row: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    let scale = max / 127.0;
    out.extend(
        row.iter()
            .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
    );
    scale
}

/// Every token's embedding, int8 with a scale per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaticTable {
    pub(crate) rows: Vec<i8>,
    pub(crate) scales: Vec<f32>,
}

impl StaticTable {
    pub(crate) fn push(&mut self, row: &[f32]) {
        let scale = quantize_i8(row, &mut self.rows);
        self.scales.push(scale);
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Token `id`'s row, dequantised.
    pub fn row(&self, id: usize) -> Vec<f32> {
        let s = self.scales[id];
        self.rows[id * DIM..(id + 1) * DIM]
            .iter()
            .map(|v| f32::from(*v) * s)
            .collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        use sha2::Digest as _;
        let mut out = Vec::with_capacity(MAGIC.len() + 65 + 8 + self.len() * (4 + DIM) + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(MODEL_SHA256.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.extend_from_slice(&(DIM as u32).to_le_bytes());
        for s in &self.scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend(self.rows.iter().map(|v| *v as u8));
        let sum = sha2::Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Reads a table file; `None` with the reason when it is not one this build wrote for this
    /// encoder.
    pub fn from_bytes(b: &[u8]) -> Result<StaticTable, String> {
        use sha2::Digest as _;
        if b.len() < MAGIC.len() + 65 + 8 + 32 || !b.starts_with(MAGIC) {
            return Err("not a static table file".into());
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if sha2::Sha256::digest(body).as_slice() != sum {
            return Err("its checksum does not match (damaged)".into());
        }
        let mut at = MAGIC.len();
        if &body[at..at + 64] != MODEL_SHA256.as_bytes() {
            return Err("it was distilled from other encoder weights".into());
        }
        at += 65;
        let u32_at =
            |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        let (rows, dim) = (u32_at(at) as usize, u32_at(at + 4) as usize);
        at += 8;
        if dim != DIM || body.len() != at + rows * (4 + DIM) {
            return Err(format!("{rows} rows of width {dim} do not fit its size"));
        }
        let scales: Vec<f32> = body[at..at + rows * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if scales.iter().any(|s| !s.is_finite()) {
            return Err("a scale is not a finite number".into());
        }
        let rows_data = body[at + rows * 4..].iter().map(|v| *v as i8).collect();
        Ok(StaticTable {
            rows: rows_data,
            scales,
        })
    }
}

/// The tokenizer and the distilled table: embeds a whole prompt (up to `max_tokens` tokens) in
/// microseconds.
pub struct StaticEncoder {
    tokenizer: WordPiece,
    table: StaticTable,
    max_tokens: usize,
}

impl std::fmt::Debug for StaticEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticEncoder")
            .field("name", &ENCODER_NAME)
            .field("max_tokens", &self.max_tokens)
            .field("rows", &self.table.len())
            .finish()
    }
}

/// Where the cached table of the encoder in `dir` lives.
pub fn table_path(dir: &Path) -> PathBuf {
    dir.join(TABLE_FILE)
}

impl StaticEncoder {
    /// The static encoder for the encoder in `dir`: the cached table when there is a valid one,
    /// else distilled now (the encoder's weights are loaded and checked, ~1 minute of CPU) and
    /// cached for next time. A cache that cannot be written is reported on stderr, not fatal.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<StaticEncoder, RouterError> {
        if !(1..=1_000_000).contains(&max_tokens) {
            return Err(err(format!(
                "static encoder max_tokens must be between 1 and 1000000, not {max_tokens}"
            )));
        }
        let vocab = std::fs::read_to_string(dir.join("vocab.txt")).map_err(|e| {
            err(format!(
                "encoder {ENCODER_NAME}: cannot read {}: {e} (run scripts/fetch-encoder.sh, or set TOLLWAY_ENCODER_DIR)",
                dir.join("vocab.txt").display()
            ))
        })?;
        let tokenizer = WordPiece::from_vocab(&vocab)?;
        let path = table_path(dir);
        let cached = match std::fs::read(&path) {
            Ok(b) => match StaticTable::from_bytes(&b) {
                Ok(t) if t.len() == tokenizer.vocab_len() => Some(t),
                Ok(t) => {
                    eprintln!(
                        "tollway: {} has {} rows for a vocabulary of {}; distilling it again",
                        path.display(),
                        t.len(),
                        tokenizer.vocab_len()
                    );
                    None
                }
                Err(why) => {
                    eprintln!(
                        "tollway: {} is unusable ({why}); distilling it again",
                        path.display()
                    );
                    None
                }
            },
            Err(_) => None,
        };
        let table = match cached {
            Some(t) => t,
            None => {
                let t = distill_and_cache(dir)?;
                if t.len() != tokenizer.vocab_len() {
                    return Err(err("the distilled table does not cover the vocabulary"));
                }
                t
            }
        };
        Ok(StaticEncoder {
            tokenizer,
            table,
            max_tokens,
        })
    }

    /// A static encoder over a given table (tests, tools).
    pub fn from_parts(tokenizer: WordPiece, table: StaticTable, max_tokens: usize) -> Self {
        StaticEncoder {
            tokenizer,
            table,
            max_tokens,
        }
    }

    /// Like [`StaticEncoder::load`], shared with every other user in the process.
    pub fn shared(dir: &Path, max_tokens: usize) -> Result<Arc<StaticEncoder>, RouterError> {
        static CACHE: SharedCache<StaticEncoder> = SharedCache::new();
        shared_load(&CACHE, dir, max_tokens, || {
            StaticEncoder::load(dir, max_tokens)
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn vocab_len(&self) -> usize {
        self.table.len()
    }

    /// The prompt's token ids (without `[CLS]`/`[SEP]`), at most `max_tokens`.
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        let mut ids = self.tokenizer.encode(text, self.max_tokens + 2);
        // `encode` frames the pieces as `[CLS] … [SEP]`
        ids.pop();
        if !ids.is_empty() {
            ids.remove(0);
        }
        ids
    }

    /// `normalise(Σ weight[t]·row[t] / Σ weight[t] − centre)` over the prompt's tokens; `weights`
    /// has one entry per vocabulary token and `centre` is [`DIM`] wide (both from the router
    /// file). An empty prompt embeds as `−centre`, normalised.
    pub fn embed(&self, text: &str, weights: &[f32], centre: &[f32]) -> Vec<f32> {
        let mut acc = [0.0f32; DIM];
        let mut total = 0.0f32;
        for id in self.token_ids(text) {
            let id = id as usize;
            let (Some(w), Some(s)) = (weights.get(id), self.table.scales.get(id)) else {
                continue;
            };
            let ws = w * s;
            total += w;
            let row = &self.table.rows[id * DIM..(id + 1) * DIM];
            for (a, v) in acc.iter_mut().zip(row) {
                *a += ws * f32::from(*v);
            }
        }
        let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
        let mut out: Vec<f32> = acc
            .iter()
            .zip(centre.iter().chain(std::iter::repeat(&0.0)))
            .map(|(a, c)| a * inv - c)
            .collect();
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        out.iter_mut().for_each(|v| *v /= norm);
        out
    }
}

/// Distils the table from the encoder in `dir` and caches it there (written to a temporary file
/// and renamed, so a concurrent reader never sees half a file).
pub fn distill_and_cache(dir: &Path) -> Result<StaticTable, RouterError> {
    let encoder = Encoder::load(dir, 8)?;
    eprintln!(
        "tollway: distilling the static table of {ENCODER_NAME} into {} (once; about a minute)",
        table_path(dir).display()
    );
    let table = encoder.distill(&mut |_, _| {})?;
    let path = table_path(dir);
    let tmp = dir.join(format!(".{TABLE_FILE}.{}.tmp", std::process::id()));
    let written =
        std::fs::write(&tmp, table.to_bytes()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        eprintln!(
            "tollway: could not cache the static table in {}: {e} (it will be distilled again next start)",
            path.display()
        );
    }
    Ok(table)
}

/// Token weights from a corpus: `a / (a + p(t))` (smooth inverse frequency), with `p(t)` the
/// token's share of all the corpus's tokens; tokens the corpus never uses get weight 1.
pub fn sif_weights(enc: &StaticEncoder, corpus: &[&str], a: f64) -> Vec<f32> {
    let mut counts = vec![0u64; enc.vocab_len()];
    let mut total = 0u64;
    for text in corpus {
        for id in enc.token_ids(text) {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
                total += 1;
            }
        }
    }
    let total = total.max(1) as f64;
    counts
        .iter()
        .map(|&c| (a / (a + c as f64 / total)) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::encoder::{default_dir, tests_support};

    fn tokenizer() -> WordPiece {
        let vocab = std::fs::read_to_string(default_dir().join("vocab.txt"))
            .expect("the encoder's vocab.txt (scripts/fetch-encoder.sh)");
        WordPiece::from_vocab(&vocab).unwrap()
    }

    #[test]
    fn distilled_rows_are_the_encoders_one_token_embeddings() {
        // the batched forward pass gives each token what the encoder gives the one-word text
        let enc = tests_support::encoder(8);
        let words = ["paris", "the", "integral", "energy", "cat"];
        let ids: Vec<u32> = words
            .iter()
            .map(|w| {
                let ids = enc.tokenizer().encode(w, 8);
                assert_eq!(ids.len(), 3, "{w} is one token");
                ids[1]
            })
            .collect();
        let mut table = StaticTable::default();
        enc.distill_into(&ids, &mut table).unwrap();
        assert_eq!(table.len(), words.len());
        for (i, w) in words.iter().enumerate() {
            let want = enc.embed(w).unwrap();
            let got = table.row(i);
            let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(cos > 0.999 && err < 0.01, "{w}: cos {cos}, max error {err}");
        }
    }

    /// A table where token id `t` has a 1 in dimension `t % DIM`.
    fn one_hot_encoder(max_tokens: usize) -> StaticEncoder {
        let tok = tokenizer();
        let mut table = StaticTable::default();
        for t in 0..tok.vocab_len() {
            let mut row = [0.0f32; DIM];
            row[t % DIM] = 1.0;
            table.push(&row);
        }
        StaticEncoder::from_parts(tok, table, max_tokens)
    }

    #[test]
    fn a_prompt_embeds_as_the_weighted_centred_mean_of_its_tokens() {
        let enc = one_hot_encoder(100);
        let ids = enc.token_ids("the cat");
        assert_eq!(ids.len(), 2);
        let (a, b) = (ids[0] as usize, ids[1] as usize);
        assert_ne!(a % DIM, b % DIM);
        let mut weights = vec![1.0f32; enc.vocab_len()];
        weights[a] = 3.0;
        let zero = [0.0f32; DIM];
        let e = enc.embed("the cat", &weights, &zero);
        // (3·e_a + 1·e_b) / 4, normalised: 3/√10 and 1/√10
        assert!(
            (e[a % DIM] - 3.0 / 10f32.sqrt()).abs() < 1e-4,
            "{}",
            e[a % DIM]
        );
        assert!((e[b % DIM] - 1.0 / 10f32.sqrt()).abs() < 1e-4);
        // the centre is subtracted before normalising
        let mut centre = [0.0f32; DIM];
        centre[a % DIM] = 0.75;
        let e = enc.embed("the cat", &weights, &centre);
        assert!(e[a % DIM].abs() < 1e-4 && (e[b % DIM] - 1.0).abs() < 1e-4);
        // empty and odd input do not panic and stay finite
        for text in ["", "\u{0}\u{FFFD}", "🦀", &"word ".repeat(10_000)] {
            let e = enc.embed(text, &weights, &zero);
            assert!(e.iter().all(|v| v.is_finite()), "{text:?}");
        }
        // whole prompts up to max_tokens, no further
        assert_eq!(enc.token_ids(&"word ".repeat(10_000)).len(), 100);
    }

    #[test]
    fn smooth_inverse_frequency_weights_favour_rare_tokens() {
        let enc = one_hot_encoder(100);
        let corpus = ["the cat", "the dog", "the the the"];
        let w = sif_weights(&enc, &corpus, 1e-3);
        let id = |word: &str| enc.token_ids(word)[0] as usize;
        assert!(w[id("the")] < w[id("cat")]);
        assert_eq!(w[id("cat")], w[id("dog")]);
        assert_eq!(w[id("zebra")], 1.0);
    }

    #[test]
    fn a_missing_encoder_is_a_clear_error() {
        let e = StaticEncoder::load(Path::new("/nonexistent"), 100).unwrap_err();
        assert!(e.to_string().contains("scripts/fetch-encoder.sh"), "{e}");
    }

    #[test]
    fn table_files_round_trip_and_damage_is_detected() {
        let mut t = StaticTable::default();
        t.push(&[0.5; DIM]);
        t.push(
            &(0..DIM)
                .map(|i| i as f32 / DIM as f32 - 0.5)
                .collect::<Vec<_>>(),
        );
        let b = t.to_bytes();
        assert_eq!(StaticTable::from_bytes(&b).unwrap(), t);
        let mut bad = b.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        assert!(StaticTable::from_bytes(&bad)
            .unwrap_err()
            .contains("checksum"));
        assert!(StaticTable::from_bytes(b"nonsense").is_err());
        assert!(StaticTable::from_bytes(&b[..b.len() - 1]).is_err());
    }
}
