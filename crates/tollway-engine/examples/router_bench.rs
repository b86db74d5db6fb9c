//! Decision latency of the shipped routers on prompts of about 1,000 tokens (4,000 bytes each,
//! built from the test sample): `cargo run --release -p tollway-engine --example router_bench`.
//! The lexical router always; the embedding router too when its file and the encoder are there
//! (`scripts/fetch-encoder.sh`), with the encoder alone at several input lengths. For one core:
//! `RAYON_NUM_THREADS=1` (candle's matrix products use that many threads). `STATIC_ONLY=1` skips
//! the contextual encoder; `STATIC_ROUTER=FILE` times another static router file, `LEXICAL_ROUTER=FILE`
//! another lexical one; `LEXICAL_ONLY=1`
//! stops after the lexical router (for `valgrind --tool=callgrind
//! --toggle-collect='*Featurizer::dot_dense*'`, which counts its instructions alone).

use std::time::Instant;

use tollway_engine::router::embed::{EmbeddingRouter, BUILTIN_FILE, BUILTIN_STATIC_FILE};
use tollway_engine::router::encoder::{default_dir, Encoder};
use tollway_engine::router::{LexicalRouter, RouteModel};

const SAMPLE: &str = include_str!("../testdata/routing-sample.jsonl");

fn main() {
    let router = match std::env::var("LEXICAL_ROUTER") {
        Ok(file) => {
            let text = std::fs::read_to_string(&file).expect("LEXICAL_ROUTER is readable");
            LexicalRouter::from_json(&text).expect("LEXICAL_ROUTER is a lexical router file")
        }
        Err(_) => LexicalRouter::builtin().expect("the shipped model loads"),
    };
    let texts: Vec<String> = SAMPLE
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["prompt"].as_str().map(str::to_string))
        .collect();
    // 200 prompts of 4,000 bytes (about 1,000 tokens at four characters a token): consecutive
    // sample prompts glued together and cut at the character boundary before 4,000 bytes. Equal
    // lengths, so that the spread of the times is the machine's and the text's, not the length's.
    let mut prompts = Vec::new();
    for start in 0..texts.len() {
        let mut p = String::new();
        let mut i = start;
        while p.len() < 4_000 {
            p.push_str(&texts[i % texts.len()]);
            p.push('\n');
            i += 1;
        }
        let mut cut = 4_000;
        while !p.is_char_boundary(cut) {
            cut -= 1;
        }
        p.truncate(cut);
        prompts.push(p);
    }
    let words: usize = prompts
        .iter()
        .map(|p| p.split_whitespace().count())
        .sum::<usize>()
        / prompts.len();
    let chars: usize = prompts.iter().map(|p| p.chars().count()).sum::<usize>() / prompts.len();
    let mut sink = 0.0;
    for p in &prompts {
        sink += router.score(p); // warm up
    }
    let mut times = Vec::new();
    let mut per_prompt = vec![Vec::new(); prompts.len()];
    for _ in 0..25 {
        for (i, p) in prompts.iter().enumerate() {
            let t = Instant::now();
            sink += router.score(p);
            let us = t.elapsed().as_nanos() as f64 / 1000.0;
            times.push(us);
            per_prompt[i].push(us);
        }
    }
    let runs = times.len();
    let (p50, p99, max_t) = percentiles(times);
    println!(
        "{runs} scorings of prompts of ~{chars} chars / ~{words} words (~1,000 tokens): p50 {p50:.1} µs, p99 {p99:.1} µs, max {max_t:.1} µs (checksum {sink:.3})"
    );
    // what the text costs, apart from the machine's jitter: each prompt's median over its 25
    // scorings, and how those medians spread
    let medians: Vec<f64> = per_prompt.into_iter().map(|v| percentiles(v).0).collect();
    let (m50, m99, m_max) = percentiles(medians);
    println!("  per-prompt medians: p50 {m50:.1} µs, p99 {m99:.1} µs, max {m_max:.1} µs");
    if std::env::var_os("LEXICAL_ONLY").is_some() {
        return; // e.g. under callgrind, to count the lexical router's instructions alone
    }
    machine_floor(p50, runs);
    if std::env::var_os("STATIC_ONLY").is_none() {
        embedding(&prompts);
    }
    static_embedding(&prompts);
}

/// The same number of runs of a fixed computation as long as the lexical router's median: the
/// same work every time, so its spread is the machine's alone (interrupts, the hypervisor). A
/// router whose p99 matches this one's is as steady as this machine lets anything of its length be.
fn machine_floor(target_us: f64, runs: usize) {
    let spin = |n: u64| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..n {
            x = std::hint::black_box(x.rotate_left(7) ^ i).wrapping_mul(0xff51_afd7_ed55_8ccd);
        }
        x
    };
    let time = |n: u64| {
        let t = Instant::now();
        std::hint::black_box(spin(n));
        t.elapsed().as_nanos() as f64 / 1000.0
    };
    // calibrate: the median time of a fixed count, scaled to the target
    let probe = 100_000u64;
    let per_probe = percentiles((0..50).map(|_| time(probe)).collect()).0;
    let n = (probe as f64 * target_us / per_probe).max(1.0) as u64;
    let (p50, p99, _) = percentiles((0..runs).map(|_| time(n)).collect());
    println!(
        "  machine floor (a fixed computation of the same median length, {runs} runs): p50 {p50:.1} µs, p99 {p99:.1} µs"
    );
}

/// The embedding router on the distilled encoder: whole prompts, single-threaded by nature.
fn static_embedding(prompts: &[String]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = std::env::var("STATIC_ROUTER").unwrap_or_else(|_| BUILTIN_STATIC_FILE.into());
    let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
        println!("static embedding router: no {file}; skipped");
        return;
    };
    let router = match EmbeddingRouter::from_json(&text, &default_dir()) {
        Ok(r) => r,
        Err(e) => {
            println!("static embedding router: {e}; skipped");
            return;
        }
    };
    let mut sink = 0.0;
    for p in prompts {
        sink += router.assess(p).score; // warm up
    }
    let mut times = Vec::new();
    for _ in 0..10 {
        for p in prompts {
            let t = Instant::now();
            sink += router.assess(p).score;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let n = times.len();
    let (p50, p99, max_t) = percentiles(times);
    println!(
        "static embedding router decision ({n} decisions, up to {} tokens, k = {}, {} bank rows, one thread): p50 {p50:.0} µs, p99 {p99:.0} µs, max {max_t:.0} µs (checksum {sink:.3})",
        router.max_tokens(),
        router.training().k,
        router.training().rows,
    );
}

fn percentiles(mut times: Vec<f64>) -> (f64, f64, f64) {
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |x: f64| times[((times.len() - 1) as f64 * x) as usize];
    (q(0.5), q(0.99), times[times.len() - 1])
}

fn embedding(prompts: &[String]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Ok(text) = std::fs::read_to_string(root.join(BUILTIN_FILE)) else {
        println!("embedding router: no {BUILTIN_FILE}; skipped");
        return;
    };
    let router = match EmbeddingRouter::from_json(&text, &default_dir()) {
        Ok(r) => r,
        Err(e) => {
            println!("embedding router: {e}; skipped");
            return;
        }
    };
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    for max in [32, 64, 128, 256] {
        let Ok(enc) = Encoder::load(&default_dir(), max) else {
            return;
        };
        let _ = enc.embed(&prompts[0]);
        let times: Vec<f64> = prompts
            .iter()
            .take(60)
            .map(|p| {
                let t = Instant::now();
                let _ = enc.embed(p);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        let (p50, p99, max_t) = percentiles(times);
        println!(
            "encoder alone, first {max} tokens ({threads} threads): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max_t:.2} ms"
        );
    }
    let mut sink = 0.0;
    let times: Vec<f64> = prompts
        .iter()
        .map(|p| {
            let t = Instant::now();
            sink += router.assess(p).score;
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let (p50, p99, max_t) = percentiles(times);
    println!(
        "embedding router decision ({} tokens, k = {}, {} bank rows; {threads} threads): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max_t:.2} ms (checksum {sink:.3})",
        router.max_tokens(),
        router.training().k,
        router.training().rows,
    );
}
