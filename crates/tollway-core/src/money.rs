//! Money without floating point. Prices are integer **pico-dollars per token** (which is the same
//! number as micro-dollars per million tokens: $3.00 / 1M tokens = 3_000_000 pico$/token); costs are
//! computed exactly in pico-dollars and reported in **micro-dollars**, rounded half up.

use std::fmt;

/// A price per token, in pico-dollars (10^-12 $).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PicosPerToken(pub u64);

impl PicosPerToken {
    /// Parses dollars per million tokens, as decimal text (`"3"`, `"0.075"`, `"1.5e-1"`), exactly.
    /// At most 6 decimals after scaling (one micro-dollar per million tokens).
    pub fn from_per_million(text: &str) -> Result<Self, String> {
        parse_scaled(text, 6).map(PicosPerToken)
    }

    /// Parses dollars per token (`"0.000003"`, `"3e-06"`, LiteLLM's unit), exactly; at most 12
    /// decimals (one pico-dollar).
    pub fn from_per_token(text: &str) -> Result<Self, String> {
        parse_scaled(text, 12).map(PicosPerToken)
    }

    /// Dollars per million tokens as text (`3_000_000` → `"3"`, `75_000` → `"0.075"`).
    pub fn per_million(self) -> String {
        let whole = self.0 / 1_000_000;
        let frac = self.0 % 1_000_000;
        if frac == 0 {
            whole.to_string()
        } else {
            let f = format!("{frac:06}");
            format!("{whole}.{}", f.trim_end_matches('0'))
        }
    }

    /// The cost of `tokens` tokens, in pico-dollars (saturating).
    pub fn times(self, tokens: u64) -> u128 {
        u128::from(self.0) * u128::from(tokens)
    }
}

/// Parses a non-negative decimal (with an optional exponent) into an integer scaled by 10^scale.
fn parse_scaled(text: &str, scale: i32) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a non-negative decimal number");
    if t.is_empty() || t.starts_with('-') {
        return Err(bad());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (t, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let digits = format!("{whole}{frac}");
    let digits = digits.trim_start_matches('0');
    // value = digits × 10^(exp − len(frac)); scaled = value × 10^scale
    let shift = exp - frac.len() as i32 + scale;
    if digits.is_empty() {
        return Ok(0);
    }
    if shift < 0 {
        // Digits below the unit must all be zeros (the leading digit is not, so keep at least one).
        let cut = shift.unsigned_abs() as usize;
        if cut >= digits.len() || !digits[digits.len() - cut..].bytes().all(|b| b == b'0') {
            return Err(format!(
                "`{text}` has more precision than supported (at most {scale} decimals)"
            ));
        }
        return digits[..digits.len() - cut]
            .parse::<u64>()
            .map_err(|_| format!("`{text}` is too large"));
    }
    let mut v: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    for _ in 0..shift {
        v = v
            .checked_mul(10)
            .ok_or_else(|| format!("`{text}` is too large"))?;
    }
    Ok(v)
}

/// An amount in micro-dollars (10^-6 $).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    /// Pico-dollars rounded half up to micro-dollars (saturating).
    pub fn from_picos(picos: u128) -> Micros {
        let m = (picos + 500_000) / 1_000_000;
        Micros(i64::try_from(m).unwrap_or(i64::MAX))
    }
}

impl fmt::Display for Micros {
    /// `1234567` → `1.234567` (dollars, always six decimals).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let m = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(
            PicosPerToken::from_per_million("3"),
            Ok(PicosPerToken(3_000_000))
        );
        assert_eq!(
            PicosPerToken::from_per_million("0.075"),
            Ok(PicosPerToken(75_000))
        );
        assert_eq!(
            PicosPerToken::from_per_million("1.5e-1"),
            Ok(PicosPerToken(150_000))
        );
        assert_eq!(PicosPerToken::from_per_million("0"), Ok(PicosPerToken(0)));
        assert_eq!(
            PicosPerToken::from_per_token("3e-06"),
            Ok(PicosPerToken(3_000_000))
        );
        assert_eq!(
            PicosPerToken::from_per_token("1.5E-07"),
            Ok(PicosPerToken(150_000))
        );
        assert_eq!(
            PicosPerToken::from_per_token("0.000000075"),
            Ok(PicosPerToken(75_000))
        );
        assert_eq!(
            PicosPerToken::from_per_token("1e-6"),
            Ok(PicosPerToken(1_000_000))
        );
        assert!(
            PicosPerToken::from_per_million("0.0000001").is_err(),
            "below a micro-dollar per million"
        );
        assert!(PicosPerToken::from_per_million("-1").is_err());
        assert!(PicosPerToken::from_per_million("abc").is_err());
        assert!(PicosPerToken::from_per_million("").is_err());
        assert!(PicosPerToken::from_per_million("1e30").is_err());
        assert_eq!(PicosPerToken(75_000).per_million(), "0.075");
        assert_eq!(PicosPerToken(3_000_000).per_million(), "3");
    }

    #[test]
    fn costs_round_half_up_to_the_micro_dollar() {
        // 1,000 tokens at $3/M = $0.003 exactly
        assert_eq!(
            Micros::from_picos(PicosPerToken(3_000_000).times(1_000)),
            Micros(3_000)
        );
        // 1 token at $0.075/M = 0.075 µ$ → 0
        assert_eq!(
            Micros::from_picos(PicosPerToken(75_000).times(1)),
            Micros(0)
        );
        // 7 tokens at $0.075/M = 0.525 µ$ → 1
        assert_eq!(
            Micros::from_picos(PicosPerToken(75_000).times(7)),
            Micros(1)
        );
        assert_eq!(Micros(1_234_567).to_string(), "1.234567");
        assert_eq!(Micros(5).to_string(), "0.000005");
        // no overflow with absurd numbers
        let huge = PicosPerToken(u64::MAX).times(u64::MAX);
        assert_eq!(Micros::from_picos(huge), Micros(i64::MAX));
    }
}
