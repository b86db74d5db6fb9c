//! Scoring latency of the shipped lexical router on prompts of about 1,000 tokens (≈ 4,000
//! characters, built from the test sample): `cargo run --release -p tollway-engine --example router_bench`.

use std::time::Instant;

use tollway_engine::router::LexicalRouter;

const SAMPLE: &str = include_str!("../testdata/routing-sample.jsonl");

fn main() {
    let router = LexicalRouter::builtin().expect("the shipped model loads");
    let texts: Vec<String> = SAMPLE
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["prompt"].as_str().map(str::to_string))
        .collect();
    // 200 prompts of ~4,000 characters: consecutive sample prompts glued together.
    let mut prompts = Vec::new();
    for start in 0..texts.len() {
        let mut p = String::new();
        let mut i = start;
        while p.len() < 4_000 {
            p.push_str(&texts[i % texts.len()]);
            p.push('\n');
            i += 1;
        }
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
    for _ in 0..25 {
        for p in &prompts {
            let t = Instant::now();
            sink += router.score(p);
            times.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |x: f64| times[((times.len() - 1) as f64 * x) as usize];
    println!(
        "{} scorings of prompts of ~{chars} chars / ~{words} words (~1,000 tokens): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (checksum {sink:.3})",
        times.len(),
        q(0.5),
        q(0.99),
        times[times.len() - 1]
    );
}
