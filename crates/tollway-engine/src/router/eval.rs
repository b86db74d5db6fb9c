//! Evaluation of a router on rows with known outcomes: the cost–quality curve, APGR, CPT and the
//! cost at 95% of the strong model's quality, as defined in the routing data's README.
//!
//! A router sends the share `c` of prompts with the highest scores to the strong model. Quality
//! `q(c)` is the mean score of the chosen answers, `PGR(c) = (q(c) − q_weak) / (q_strong − q_weak)`.
//! Prompts with equal scores are taken in random order, so `q` is the expectation: within a run of
//! ties it is interpolated linearly (a constant router is exactly the random one).
//!
//! - APGR: the mean of PGR over the 101 points `c = 0, 0.01, …, 1` (`c·n` rows, fractional rows
//!   interpolated).
//! - CPT(x): the smallest `c = k/n` (k whole) with `PGR(c) ≥ x`: per-row resolution, which is how the
//!   README's reference numbers are computed (oracle CPT(50%) = 0.063 on dev, shown as 0.06).
//! - Share at 95%: the smallest `c = k/n` with `q(c) ≥ 0.95·q_strong`; in dollars, the cost of
//!   that routing over the cost of sending everything to the strong model, with blended prices
//!   ([`Prices`]) and the answers' lengths in tokens (`output_chars / 4` where known; rows without
//!   lengths count the mean known length for both models, or 1 when no row has one).

use serde::Serialize;

use super::RouterError;

/// One row's outcome: each model's score in 0..=1 and, when known, its answer's length in tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub strong: f64,
    pub weak: f64,
    pub strong_tokens: Option<f64>,
    pub weak_tokens: Option<f64>,
}

impl Outcome {
    pub fn new(strong: f64, weak: f64) -> Self {
        Outcome {
            strong,
            weak,
            strong_tokens: None,
            weak_tokens: None,
        }
    }
}

/// Blended prices in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    pub strong: f64,
    pub weak: f64,
}

impl Default for Prices {
    /// The README's: 24.7 $/M (strong) and 0.24 $/M (weak).
    fn default() -> Self {
        Prices {
            strong: 24.7,
            weak: 0.24,
        }
    }
}

/// One point of the cost–quality curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Share of prompts sent to the strong model.
    pub c: f64,
    pub router: f64,
    pub random: f64,
    pub oracle: f64,
    /// The router's PGR.
    pub pgr: f64,
}

/// The summary of one router on one data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub rows: usize,
    pub q_strong: f64,
    pub q_weak: f64,
    pub apgr: f64,
    pub cpt50: f64,
    pub cpt80: f64,
    /// Smallest share of prompts sent to the strong model that reaches 95% of `q_strong`.
    pub share_at_95: f64,
    /// The cost of that routing over the cost of sending everything to the strong model.
    pub dollar_share_at_95: f64,
    pub oracle_apgr: f64,
    pub oracle_cpt50: f64,
    pub oracle_cpt80: f64,
    pub oracle_share_at_95: f64,
    /// Always 0.5 by construction; kept for the report.
    pub random_apgr: f64,
    pub prices: Prices,
    /// 101 points, c = 0, 0.01, …, 1.
    pub curve: Vec<CurvePoint>,
}

/// Expected totals when the `k` highest-scored rows (k real) go to the strong model.
struct Curve {
    /// (rows, total score, total dollars) at each boundary between runs of equal scores.
    points: Vec<(f64, f64, f64)>,
}

impl Curve {
    fn new(scores: &[f64], outcomes: &[Outcome], tokens: &[(f64, f64)], prices: Prices) -> Self {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut quality: f64 = outcomes.iter().map(|o| o.weak).sum();
        let mut dollars: f64 = tokens.iter().map(|t| t.1 * prices.weak).sum();
        let mut points = vec![(0.0, quality, dollars)];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j < order.len() && scores[order[j]] == scores[order[i]] {
                let (o, t) = (&outcomes[order[j]], tokens[order[j]]);
                quality += o.strong - o.weak;
                dollars += t.0 * prices.strong - t.1 * prices.weak;
                j += 1;
            }
            points.push((j as f64, quality, dollars));
            i = j;
        }
        Curve { points }
    }

    /// (total score, total dollars) with `k` rows to the strong model.
    fn at(&self, k: f64) -> (f64, f64) {
        let p = &self.points;
        let i = p.partition_point(|x| x.0 < k);
        if i == 0 {
            return (p[0].1, p[0].2);
        }
        if i >= p.len() {
            let l = p[p.len() - 1];
            return (l.1, l.2);
        }
        let (a, b) = (p[i - 1], p[i]);
        let f = (k - a.0) / (b.0 - a.0);
        (a.1 + f * (b.1 - a.1), a.2 + f * (b.2 - a.2))
    }
}

const EPS: f64 = 1e-9;

/// Evaluates `scores` (higher = more in need of the strong model) against `outcomes`.
pub fn evaluate(
    scores: &[f64],
    outcomes: &[Outcome],
    prices: Prices,
) -> Result<Evaluation, RouterError> {
    let n = outcomes.len();
    if scores.len() != n {
        return Err(RouterError::Eval(format!(
            "{} scores for {} rows",
            scores.len(),
            n
        )));
    }
    if n == 0 {
        return Err(RouterError::Eval("no rows".into()));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(RouterError::Eval(format!(
            "score of row {} is not a finite number",
            i + 1
        )));
    }
    if let Some(i) = outcomes
        .iter()
        .position(|o| !o.strong.is_finite() || !o.weak.is_finite())
    {
        return Err(RouterError::Eval(format!(
            "outcome of row {} is not a finite number",
            i + 1
        )));
    }
    let known: Vec<f64> = outcomes
        .iter()
        .flat_map(|o| [o.strong_tokens, o.weak_tokens])
        .flatten()
        .collect();
    let fill = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let tokens: Vec<(f64, f64)> = outcomes
        .iter()
        .map(|o| match (o.strong_tokens, o.weak_tokens) {
            (Some(s), Some(w)) => (s, w),
            _ => (fill, fill),
        })
        .collect();
    let nf = n as f64;
    let q_strong = outcomes.iter().map(|o| o.strong).sum::<f64>() / nf;
    let q_weak = outcomes.iter().map(|o| o.weak).sum::<f64>() / nf;
    if (q_strong - q_weak).abs() < EPS {
        return Err(RouterError::Eval(format!(
            "the strong and weak models have the same quality ({q_strong:.4}): PGR is undefined"
        )));
    }
    let pgr = |q: f64| (q - q_weak) / (q_strong - q_weak);
    let router = Curve::new(scores, outcomes, &tokens, prices);
    let oracle_scores: Vec<f64> = outcomes.iter().map(|o| o.strong - o.weak).collect();
    let oracle = Curve::new(&oracle_scores, outcomes, &tokens, prices);
    let all_strong: f64 = tokens.iter().map(|t| t.0 * prices.strong).sum();

    let curve: Vec<CurvePoint> = (0..=100)
        .map(|i| {
            let c = i as f64 / 100.0;
            let q = router.at(c * nf).0 / nf;
            CurvePoint {
                c,
                router: q,
                random: q_weak + c * (q_strong - q_weak),
                oracle: oracle.at(c * nf).0 / nf,
                pgr: pgr(q),
            }
        })
        .collect();
    let apgr_of = |cv: &Curve| {
        (0..=100)
            .map(|i| pgr(cv.at(i as f64 / 100.0 * nf).0 / nf))
            .sum::<f64>()
            / 101.0
    };
    // Smallest k/n whose expected quality satisfies `ok`.
    let first = |cv: &Curve, ok: &dyn Fn(f64) -> bool| -> usize {
        (0..=n).find(|&k| ok(cv.at(k as f64).0 / nf)).unwrap_or(n)
    };
    let cpt = |cv: &Curve, x: f64| first(cv, &|q| pgr(q) >= x - EPS) as f64 / nf;
    let target = 0.95 * q_strong;
    let k95 = first(&router, &|q| q >= target - EPS);
    Ok(Evaluation {
        rows: n,
        q_strong,
        q_weak,
        apgr: apgr_of(&router),
        cpt50: cpt(&router, 0.5),
        cpt80: cpt(&router, 0.8),
        share_at_95: k95 as f64 / nf,
        dollar_share_at_95: router.at(k95 as f64).1 / all_strong,
        oracle_apgr: apgr_of(&oracle),
        oracle_cpt50: cpt(&oracle, 0.5),
        oracle_cpt80: cpt(&oracle, 0.8),
        oracle_share_at_95: first(&oracle, &|q| q >= target - EPS) as f64 / nf,
        random_apgr: 0.5,
        prices,
        curve,
    })
}

/// An SVG line chart of quality against the share sent to the strong model: the router, random,
/// the oracle, and the strong and weak models' levels.
pub fn plot_svg(e: &Evaluation, title: &str) -> String {
    use std::fmt::Write;
    let (w, h, left, right, top, bottom) = (640.0, 420.0, 60.0, 20.0, 40.0, 50.0);
    let lo = e
        .curve
        .iter()
        .map(|p| p.router.min(p.oracle))
        .fold(e.q_weak.min(e.q_strong), f64::min);
    let hi = e
        .curve
        .iter()
        .map(|p| p.router.max(p.oracle))
        .fold(e.q_weak.max(e.q_strong), f64::max);
    let (lo, hi) = ((lo * 20.0).floor() / 20.0, (hi * 20.0).ceil() / 20.0);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |c: f64| left + c * (w - left - right);
    let y = |q: f64| top + (hi - q) / span * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>
"#,
        w / 2.0,
        escape(title)
    );
    // Axes and grid.
    for i in 0..=10 {
        let c = i as f64 / 10.0;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#eee"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4:.0}%</text>"##,
            x(c),
            top,
            h - bottom,
            h - bottom + 16.0,
            c * 100.0
        );
    }
    let steps = ((hi - lo) / 0.05).round() as usize;
    for i in 0..=steps {
        let q = lo + i as f64 * 0.05;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="#eee"/><text x="{3:.1}" y="{4:.1}" text-anchor="end">{5:.2}</text>"##,
            left,
            y(q),
            w - right,
            left - 6.0,
            y(q) + 4.0,
            q
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">share of prompts sent to the strong model</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">quality</text>"##,
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0
    );
    let level = |s: &mut String, q: f64, color: &str, label: &str| {
        let (x0, x1, yq) = (x(0.0), x(1.0), y(q));
        let (tx, ty) = (x1 - 4.0, yq - 4.0);
        let _ = writeln!(
            s,
            r#"<line x1="{x0:.1}" y1="{yq:.1}" x2="{x1:.1}" y2="{yq:.1}" stroke="{color}" stroke-dasharray="4 4"/><text x="{tx:.1}" y="{ty:.1}" fill="{color}" text-anchor="end">{label} {q:.3}</text>"#
        );
    };
    level(&mut s, e.q_strong, "#555", "strong");
    level(&mut s, e.q_weak, "#999", "weak");
    type Series<'a> = (&'a str, &'a str, fn(&CurvePoint) -> f64);
    let series: [Series; 3] = [
        ("oracle", "#2ca02c", |p| p.oracle),
        ("random", "#7f7f7f", |p| p.random),
        ("router", "#1f77b4", |p| p.router),
    ];
    for (i, (name, color, get)) in series.iter().enumerate() {
        let pts: Vec<String> = e
            .curve
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.c), y(get(p))))
            .collect();
        let pts = pts.join(" ");
        let (lx0, lx1, tx) = (x(0.62), x(0.67), x(0.68));
        let ly = h - bottom - 20.0 - 16.0 * i as f64;
        let ty = ly + 4.0;
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/><line x1="{lx0:.1}" y1="{ly:.1}" x2="{lx1:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{tx:.1}" y="{ty:.1}">{name}</text>"#
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}">APGR {:.3} · CPT(50%) {:.1}% · CPT(80%) {:.1}% · 95% quality at {:.1}%</text>"#,
        left + 6.0,
        top + 14.0,
        e.apgr,
        e.cpt50 * 100.0,
        e.cpt80 * 100.0,
        e.share_at_95 * 100.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// How well predicted probabilities of a good answer match what happened: the quality knobs
/// (`quality_floor`, `cost_weight`) take the predictions at their word.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reliability {
    /// Mean predicted and mean observed quality.
    pub predicted: f64,
    pub observed: f64,
    /// Mean squared error of the predictions.
    pub brier: f64,
    /// Expected calibration error: the row-weighted mean |predicted − observed| over bins.
    pub ece: f64,
    /// Ten equal-width bins of the prediction: (mean predicted, mean observed, rows).
    pub bins: Vec<(f64, f64, usize)>,
}

/// The calibration of `predicted` (probabilities) against `observed` (scores in 0..1).
pub fn reliability(predicted: &[f64], observed: &[f64]) -> Reliability {
    let n = predicted.len().min(observed.len());
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); 10];
    let (mut p_all, mut o_all, mut brier) = (0.0, 0.0, 0.0);
    for (p, o) in predicted.iter().zip(observed).take(n) {
        let p = if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let b = ((p * 10.0) as usize).min(9);
        sums[b].0 += p;
        sums[b].1 += o;
        sums[b].2 += 1;
        p_all += p;
        o_all += o;
        brier += (p - o) * (p - o);
    }
    let nf = n.max(1) as f64;
    let bins: Vec<(f64, f64, usize)> = sums
        .iter()
        .filter(|b| b.2 > 0)
        .map(|&(p, o, c)| (p / c as f64, o / c as f64, c))
        .collect();
    let ece = bins
        .iter()
        .map(|(p, o, c)| (p - o).abs() * *c as f64)
        .sum::<f64>()
        / nf;
    Reliability {
        predicted: p_all / nf,
        observed: o_all / nf,
        brier: brier / nf,
        ece,
        bins,
    }
}

#[cfg(test)]
mod calibration_tests {
    use super::*;

    #[test]
    fn reliability_is_perfect_for_honest_predictions_and_shows_overconfidence() {
        // predictions of 0.25 and 0.75, each right that often
        let mut p = Vec::new();
        let mut o = Vec::new();
        for i in 0..400 {
            p.push(0.25);
            o.push(if i % 4 == 0 { 1.0 } else { 0.0 });
            p.push(0.75);
            o.push(if i % 4 == 0 { 0.0 } else { 1.0 });
        }
        let c = reliability(&p, &o);
        assert!(c.ece < 1e-9, "{c:?}");
        assert_eq!(c.bins.len(), 2);
        assert!((c.brier - 0.1875).abs() < 1e-9);
        // always 0.95 when right half the time: off by 0.45
        let c = reliability(
            &[0.95; 10],
            &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        );
        assert!((c.ece - 0.45).abs() < 1e-9, "{c:?}");
        assert!((c.predicted - 0.95).abs() < 1e-9 && (c.observed - 0.5).abs() < 1e-9);
        // empty input does not divide by zero
        assert_eq!(reliability(&[], &[]).bins.len(), 0);
    }
}
