//! Router tests: metrics on a hand-computed fixture, features, training determinism on a sample,
//! model file round trip and errors, the shipped model.

use super::train::{kfold, thresholds_from, TrainOptions};
use super::*;

const HAND: &str = include_str!("../../testdata/routing-hand.jsonl");
const SAMPLE: &str = include_str!("../../testdata/routing-sample.jsonl");

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: {a} != {b}");
}

fn hand() -> Vec<Outcome> {
    parse_jsonl(HAND, None)
        .expect("hand fixture")
        .examples
        .iter()
        .map(|e| e.outcome)
        .collect()
}

// The hand fixture: gains +1, +1, 0, −1; q_strong = 0.75, q_weak = 0.5.
// The oracle takes rows 1, 2 first: PGR(k/4) = 0, 1, 2, 2, 1, linear in between, so
// APGR = (Σ_{i≤50} 0.04 i + 25·2 + Σ_{j=1..25} (2 − 0.04 j)) / 101 = (51 + 50 + 37) / 101.
#[test]
fn oracle_on_the_hand_fixture() {
    let o = hand();
    let oracle: Vec<f64> = o.iter().map(|o| o.strong - o.weak).collect();
    let e = evaluate(&oracle, &o, Prices::default()).expect("evaluate");
    close(e.q_strong, 0.75, "q_strong");
    close(e.q_weak, 0.5, "q_weak");
    close(e.apgr, 138.0 / 101.0, "apgr");
    close(e.oracle_apgr, 138.0 / 101.0, "oracle apgr");
    close(e.cpt50, 0.25, "cpt50");
    close(e.cpt80, 0.25, "cpt80");
    close(e.share_at_95, 0.25, "share at 95%");
    close(e.curve[50].oracle, 1.0, "q(0.5)");
    close(e.curve[50].pgr, 2.0, "PGR(0.5)");
    close(e.curve[100].router, 0.75, "q(1)");
}

// Scores 0.1, 0.9, 0.5, 0.7 take rows 2 (+1), 4 (−1), 3 (0), 1 (+1): PGR(k/4) = 0, 1, 0, 0, 1;
// APGR = (13 + 12 + 0 + 13) / 101. Row 2 alone reaches 95% of q_strong (0.75 ≥ 0.7125).
// Dollars: row 2 has 200 (strong) and 100 (weak) tokens, the others the mean known length, 150:
// (24.7·200 + 0.24·150·3) / (24.7·(200 + 3·150)) = 5048 / 16055.
#[test]
fn router_on_the_hand_fixture() {
    let o = hand();
    let e = evaluate(&[0.1, 0.9, 0.5, 0.7], &o, Prices::default()).expect("evaluate");
    close(e.apgr, 38.0 / 101.0, "apgr");
    close(e.cpt50, 0.25, "cpt50");
    close(e.cpt80, 0.25, "cpt80");
    close(e.share_at_95, 0.25, "share at 95%");
    close(
        e.dollar_share_at_95,
        5048.0 / 16055.0,
        "dollar share at 95%",
    );
    close(e.curve[25].pgr, 1.0, "PGR(0.25)");
    close(e.curve[60].pgr, 0.0, "PGR(0.6)");
    close(e.curve[60].random, 0.5 + 0.6 * 0.25, "random q(0.6)");
}

// Equal scores are taken in random order: a constant router is the random router.
#[test]
fn ties_are_the_random_router() {
    let o = hand();
    let e = evaluate(&[0.3; 4], &o, Prices::default()).expect("evaluate");
    close(e.apgr, 0.5, "apgr");
    close(e.cpt50, 0.5, "cpt50");
    close(e.cpt80, 1.0, "cpt80");
    for p in &e.curve {
        close(p.router, p.random, "q = random");
    }
}

// The domain oracle scores each row by its own domain's mean gain: with one row per domain it is
// the oracle; rows sharing a domain share its mean; no domains, or one, give no reference.
#[test]
fn domain_oracle_scores_are_domain_mean_gains() {
    let hand = parse_jsonl(HAND, None).expect("hand");
    let o: Vec<Outcome> = hand.examples.iter().map(|e| e.outcome).collect();
    assert_eq!(
        hand.domain_oracle_scores().expect("four domains"),
        o.iter().map(|o| o.strong - o.weak).collect::<Vec<_>>()
    );
    assert_eq!(hand.domain_count(), 4);
    let row = |d: &str, s: f64, w: f64| {
        format!(r#"{{"id":"x","domain":"{d}","prompt":"p","scores":{{"s":{s},"w":{w}}}}}"#)
    };
    let text = [
        row("a", 1.0, 0.0),
        row("a", 1.0, 0.0),
        row("b", 0.0, 1.0),
        row("b", 1.0, 1.0),
        row("a", 0.0, 0.0),
    ]
    .join("\n");
    let d = parse_jsonl(&text, Some(("s", "w"))).expect("parse");
    let scores = d.domain_oracle_scores().expect("two domains");
    let a = 2.0 / 3.0;
    assert_eq!(scores, vec![a, a, -0.5, -0.5, a]);
    // q_strong 3/5, q_weak 2/5; domain a first (gain +2 over its 3 rows): q(3/5) = 4/5, PGR 2
    let outcomes: Vec<Outcome> = d.examples.iter().map(|e| e.outcome).collect();
    let e = evaluate(&scores, &outcomes, Prices::default()).expect("evaluate");
    close(e.curve[60].pgr, 2.0, "PGR(0.6)");
    let one = parse_jsonl(
        &[row("a", 1.0, 0.0), row("a", 0.0, 0.0)].join("\n"),
        Some(("s", "w")),
    )
    .expect("parse");
    assert_eq!(one.domain_oracle_scores(), None);
    let none = parse_jsonl(
        &[row("a", 1.0, 0.0), row("", 0.0, 0.0)].join("\n"),
        Some(("s", "w")),
    )
    .expect("parse");
    assert_eq!(none.domain_oracle_scores(), None);
}

#[test]
fn evaluation_refuses_bad_input() {
    let o = hand();
    assert!(evaluate(&[0.1], &o, Prices::default()).is_err());
    assert!(evaluate(&[0.1, f64::NAN, 0.2, 0.3], &o, Prices::default()).is_err());
    let same = vec![Outcome::new(1.0, 1.0); 3];
    let err = evaluate(&[0.1, 0.2, 0.3], &same, Prices::default()).expect_err("undefined PGR");
    assert!(err.to_string().contains("same quality"), "{err}");
}

#[test]
fn the_plot_is_an_svg_with_three_curves() {
    let o = hand();
    let e = evaluate(&[0.1, 0.9, 0.5, 0.7], &o, Prices::default()).expect("evaluate");
    let svg = plot_svg(&e, "a <test>");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 3);
    assert!(svg.contains("a &lt;test&gt;"));
}

#[test]
fn data_errors_name_the_line() {
    let bad =
        "{\"id\": \"a\", \"prompt\": \"x\", \"scores\": {\"s\": 1.0, \"w\": 0.0}}\n{\"id\": 3}\n";
    let err = parse_jsonl(bad, None).expect_err("bad line");
    assert!(err.to_string().contains("line 2"), "{err}");
    let out_of_range = "{\"id\": \"a\", \"prompt\": \"x\", \"scores\": {\"s\": 2.0, \"w\": 0.0}}\n";
    let err = parse_jsonl(out_of_range, Some(("s", "w"))).expect_err("score 2");
    assert!(err.to_string().contains("scores.s = 2"), "{err}");
}

#[test]
fn hashing_is_fixed_and_case_insensitive() {
    // pinned at 2^18 buckets, the size the pin was taken at; smaller spaces take the low bits
    let cfg = FeatureConfig {
        hash_bits: 18,
        ..FeatureConfig::default()
    };
    let mut f = Featurizer::new(&cfg);
    let mut a = Vec::new();
    f.hashed("Hello World", &mut a);
    let mut b = Vec::new();
    f.hashed("hello   world!", &mut b);
    assert_eq!(a, b);
    // Unit norm per block: words and characters.
    let ss: f64 = a.iter().map(|&(_, v)| (v as f64) * (v as f64)).sum();
    assert!((ss - 2.0).abs() < 1e-5, "{ss}");
    // Pinned buckets: a change of hashing would silently invalidate every shipped model.
    let mut first: Vec<u32> = a.iter().map(|p| p.0).collect();
    first.sort();
    let sum: u64 = first.iter().map(|&b| b as u64).sum();
    assert_eq!((a.len(), sum), PINNED_HELLO_WORLD, "hashing changed");
    // the shipped size (2^16): the same n-grams, in the low 16 bits of the same hashes, with
    // the same signs
    let small = FeatureConfig::default();
    assert_eq!(small.hash_bits, 16);
    let mut c = Vec::new();
    Featurizer::new(&small).hashed("Hello World", &mut c);
    let masked = |v: &[(u32, f32)]| {
        let mut m: Vec<(u32, bool)> = v.iter().map(|&(b, x)| (b & 0xffff, x > 0.0)).collect();
        m.sort_unstable();
        m
    };
    assert_eq!(masked(&c), masked(&a));
    // The dot product without materialising agrees with the pairs.
    let w: Vec<f32> = (0..cfg.buckets())
        .map(|i| ((i % 7) as f32 - 3.0) / 10.0)
        .collect();
    let d1 = f.dot("Hello World", &w);
    let d2: f64 = a
        .iter()
        .map(|&(b, v)| v as f64 * w[b as usize] as f64)
        .sum();
    assert!((d1 - d2).abs() < 1e-6, "{d1} vs {d2}");
}

const PINNED_HELLO_WORLD: (usize, u64) = (21, 2_458_508);

#[test]
fn dense_features_of_a_prompt() {
    let d = features::dense_features("What is 12 + 30?\nA. 42");
    assert!((d[2] - 6.0 / 22.0).abs() < 1e-12, "digit ratio {}", d[2]);
    assert_eq!(d[4], 0.0, "no math marker");
    assert!((d[5] - 2f64.ln()).abs() < 1e-12);
    assert!((d[8] - 2f64.ln()).abs() < 1e-12, "two lines");
}

#[test]
fn base64_round_trips() {
    for n in 0..10 {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
        assert_eq!(
            base64_decode(&base64_encode(&bytes)).expect("decode"),
            bytes
        );
    }
    assert_eq!(base64_encode(b"Man"), "TWFu");
    assert_eq!(base64_encode(b"Ma"), "TWE=");
    assert!(base64_decode("TW=u").is_err());
    assert!(base64_decode("TWF").is_err());
}

fn small_options() -> TrainOptions {
    TrainOptions {
        folds: 3,
        features: vec![FeatureConfig {
            hash_bits: 12,
            ..FeatureConfig::default()
        }],
        lambdas: vec![1e-3, 1e-2],
        targets: vec![Target::Gain],
        domain_smoothing: vec![0.5],
        max_iter: 60,
        ..TrainOptions::default()
    }
}

fn train_sample() -> LexicalRouter {
    let data = parse_jsonl(SAMPLE, None).expect("sample");
    train::train(&data, &small_options(), &mut |_| {}).expect("train")
}

#[test]
fn training_on_the_sample_is_deterministic() {
    let a = train_sample();
    let b = train_sample();
    assert_eq!(a.to_json(), b.to_json());
    let t = a.training();
    assert_eq!(t.rows, 200);
    assert_eq!(t.strong_model, "gpt-4-1106-preview");
    assert_eq!(t.grid.len(), 2);
    assert!(
        (t.cv_apgr - PINNED_SAMPLE_CV_APGR).abs() < 1e-6,
        "cv APGR {}",
        t.cv_apgr
    );
    let s = a.score("Janet has 3 ducks; how many eggs does she sell at the market?");
    assert!((0.0..=1.0).contains(&s));
}

const PINNED_SAMPLE_CV_APGR: f64 = 0.544_352_435_243_524_4;

#[test]
fn folds_are_balanced_and_seeded() {
    let f = kfold(10, 3, 1);
    assert_eq!(f, kfold(10, 3, 1));
    assert_ne!(f, kfold(10, 3, 2));
    let counts: Vec<usize> = (0..3)
        .map(|k| f.iter().filter(|&&x| x == k).count())
        .collect();
    assert_eq!(counts, [4, 3, 3]);
}

#[test]
fn model_file_round_trips() {
    let a = train_sample();
    let text = a.to_json();
    let b = LexicalRouter::from_json(&text).expect("load");
    // serde_json parses floats to within one ulp (no `float_roundtrip`): compare with a tolerance.
    assert_eq!(a.weights, b.weights, "f32 weights are exact");
    assert_eq!(a.features, b.features);
    assert_eq!(a.training.rows, b.training.rows);
    for (x, y) in a.thresholds.iter().zip(&b.thresholds) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() < 1e-12);
    }
    for p in [
        "What is 2+2?",
        "Explain the doctrine of adverse possession.",
        "",
    ] {
        assert!((a.score(p) - b.score(p)).abs() < 1e-12);
    }
}

fn edit(text: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(text).expect("json");
    f(&mut v);
    v.to_string()
}

fn load_err(text: &str) -> String {
    LexicalRouter::from_json(text)
        .expect_err("must fail")
        .to_string()
}

#[test]
fn corrupt_model_files_are_refused_with_the_reason() {
    let good = train_sample().to_json();
    assert!(load_err("").contains("not valid JSON"));
    assert!(load_err("{\"kind\": 1}").contains("format_version is missing"));
    let e = load_err(&edit(&good, |v| v["format_version"] = 99.into()));
    assert!(e.contains("format_version 99 is not supported"), "{e}");
    let e = load_err(&edit(&good, |v| v["kind"] = "other".into()));
    assert!(e.contains("kind is \"other\""), "{e}");
    let e = load_err(&edit(&good, |v| v["weights"]["len"] = 5.into()));
    assert!(e.contains("weights.data holds"), "{e}");
    let e = load_err(&edit(&good, |v| v["features"]["hash_bits"] = 13.into()));
    assert!(e.contains("hash_bits = 13 needs 8192"), "{e}");
    let e = load_err(&edit(&good, |v| v["weights"]["data"] = "AADAfw==".into()));
    assert!(e.contains("weights.data holds 4 bytes"), "{e}");
    let nan = base64_encode(
        &[f32::NAN; 4096]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let e = load_err(&edit(&good, |v| v["weights"]["data"] = nan.into()));
    assert!(e.contains("weights[0] is not a finite number"), "{e}");
    let e = load_err(&edit(&good, |v| v["bias"] = serde_json::Value::Null));
    assert!(e.contains("bias: invalid type: null"), "{e}");
    let e = load_err(&edit(&good, |v| v["dense"]["std"][2] = (-1.0).into()));
    assert!(e.contains("dense.std[2] must be > 0"), "{e}");
    let e = load_err(&edit(&good, |v| v["thresholds"]["0.5"] = 0.99.into()));
    assert!(e.contains("must not increase"), "{e}");
    let e = load_err(&edit(&good, |v| v["calibration"]["a"] = (-1.0).into()));
    assert!(e.contains("calibration.a must be > 0"), "{e}");
    let e = load_err(&edit(&good, |v| v["surprise"] = 1.into()));
    assert!(e.contains("surprise"), "{e}");
}

#[test]
fn thresholds_follow_the_score_distribution() {
    let scores: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
    let t = thresholds_from(&scores);
    assert_eq!(t.len(), 19);
    close(t[1].0, 0.1, "share");
    close(t[1].1, 0.9, "10% of scores are ≥ 0.90");
    close(t[9].1, 0.5, "50% are ≥ 0.50");
}

#[test]
fn the_shipped_model_loads_and_scores() {
    let r = LexicalRouter::builtin().expect("the shipped model loads");
    let prompts = [
        "",
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
        "Which of the following is the body cavity that contains the pituitary gland?\nA. Abdominal\nB. Cranial\nC. Pleural\nD. Spinal\nAnswer:",
        "写一首关于秋天的诗",
    ];
    for p in prompts {
        let s = r.score(p);
        assert!((0.0..=1.0).contains(&s), "{p:?}: {s}");
        let (strong, s2) = r.decide(p, r.threshold_for_share(0.3));
        assert_eq!(s, s2);
        assert_eq!(strong, s >= r.threshold_for_share(0.3));
    }
    let t = r.thresholds();
    assert!(t.len() >= 9);
    assert!(
        t.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 >= w[1].1),
        "monotone: {t:?}"
    );
    let mut prev = f64::INFINITY;
    for i in 0..=100 {
        let th = r.threshold_for_share(i as f64 / 100.0);
        assert!(th <= prev, "threshold_for_share is non-increasing");
        prev = th;
    }
    assert_eq!(r.training().rows, 9811);
    assert!(BUILTIN_MODEL.len() < 8_000_000);
}
