//! Money without floating point. Prices are integer **pico-dollars per token** (10^-12 $; the same
//! number as micro-dollars per million tokens: $3.00 / 1M tokens = 3_000_000 pico$/token); costs are
//! computed exactly in pico-dollars ([`Picos`], u128) and reported in **micro-dollars** ([`Micros`]),
//! rounded half up. Decimal text (`"0.15"`, `"1.5e-07"`) is parsed digit by digit, never through a
//! float, and a value the unit cannot hold exactly is an error, never rounded.

use std::fmt;
use std::iter::Sum;
use std::ops::Add;

/// Why a decimal amount was refused. Each variant carries the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal number")]
    NotANumber(String),
    #[error("`{0}` is negative")]
    Negative(String),
    #[error("`{text}` has more precision than supported (at most {decimals} decimals)")]
    TooPrecise { text: String, decimals: u32 },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// A price per token, in pico-dollars (10^-12 $).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PicosPerToken(pub u64);

impl PicosPerToken {
    /// Parses dollars per million tokens, as decimal text (`"3"`, `"0.075"`, `"1.5e-1"`), exactly.
    /// At most 6 decimals after scaling (one micro-dollar per million tokens = one pico-dollar per
    /// token).
    pub fn from_per_million(text: &str) -> Result<Self, MoneyError> {
        parse_scaled(text, 6).map(PicosPerToken)
    }

    /// Parses dollars per token (`"0.000003"`, `"3e-06"`: LiteLLM's unit), exactly; at most 12
    /// decimals (one pico-dollar).
    pub fn from_per_token(text: &str) -> Result<Self, MoneyError> {
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

    /// The cost of `tokens` tokens, in pico-dollars. Cannot overflow: (2^64−1)² < 2^128.
    pub fn times(self, tokens: u64) -> u128 {
        u128::from(self.0) * u128::from(tokens)
    }

    /// [`times`](Self::times) as a [`Picos`] amount.
    pub fn cost_of(self, tokens: u64) -> Picos {
        Picos(self.times(tokens))
    }
}

/// Parses a non-negative decimal (with an optional exponent) into an integer scaled by 10^scale,
/// exactly: digits that would fall below the unit must be zeros.
fn parse_scaled(text: &str, scale: i64) -> Result<u64, MoneyError> {
    let t = text.trim();
    let nan = || MoneyError::NotANumber(text.to_string());
    let too_large = || MoneyError::TooLarge(text.to_string());
    if let Some(rest) = t.strip_prefix('-') {
        // `-0`, `-1.5`: a number, but a price or amount is never below zero.
        return Err(
            if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                MoneyError::Negative(text.to_string())
            } else {
                nan()
            },
        );
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => {
            let e = &t[i + 1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(nan());
            }
            // Absurd exponents are still numbers: clamp, the checks below refuse them.
            let exp = e.parse::<i64>().unwrap_or(if e.starts_with('-') {
                -1_000_000
            } else {
                1_000_000
            });
            (&t[..i], exp.clamp(-1_000_000, 1_000_000))
        }
        None => (t, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(nan());
    }
    let all = format!("{whole}{frac}");
    let digits = all.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    // value = digits × 10^(exp − len(frac)); scaled = value × 10^scale
    let shift = exp - frac.len() as i64 + scale;
    if shift < 0 {
        // The digits below the unit must all be zeros (and the leading digit is not zero).
        let cut = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
        if cut >= digits.len() || !digits[digits.len() - cut..].bytes().all(|b| b == b'0') {
            return Err(MoneyError::TooPrecise {
                text: text.to_string(),
                decimals: scale as u32,
            });
        }
        return digits[..digits.len() - cut]
            .parse::<u64>()
            .map_err(|_| too_large());
    }
    let mut v: u64 = digits.parse().map_err(|_| too_large())?;
    for _ in 0..shift {
        // v ≥ 1, so this fails within 20 rounds when the value does not fit.
        v = v.checked_mul(10).ok_or_else(too_large)?;
    }
    Ok(v)
}

/// An exact amount in pico-dollars (10^-12 $). Sums saturate rather than wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Picos(pub u128);

impl Picos {
    /// Rounded half up to the micro-dollar (saturating at `i64::MAX` micro-dollars).
    pub fn micros(self) -> Micros {
        Micros::from_picos(self.0)
    }
}

impl Add for Picos {
    type Output = Picos;
    fn add(self, rhs: Picos) -> Picos {
        Picos(self.0.saturating_add(rhs.0))
    }
}

impl Sum for Picos {
    fn sum<I: Iterator<Item = Picos>>(iter: I) -> Picos {
        iter.fold(Picos(0), Add::add)
    }
}

impl fmt::Display for Picos {
    /// Dollars, exact, with at least six decimals: `1_234_500_000` → `0.0012345`,
    /// `3_000_000_000` → `0.003000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNIT: u128 = 1_000_000_000_000;
        let frac = format!("{:012}", self.0 % UNIT);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 6 {
            &frac[..6]
        } else {
            trimmed
        };
        write!(f, "{}.{shown}", self.0 / UNIT)
    }
}

/// An amount in micro-dollars (10^-6 $).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    /// Pico-dollars rounded half up to micro-dollars (saturating).
    pub fn from_picos(picos: u128) -> Micros {
        let m = picos.saturating_add(500_000) / 1_000_000;
        Micros(i64::try_from(m).unwrap_or(i64::MAX))
    }

    /// Parses an amount in dollars (`"12.50"`, `"0.000001"`), exactly; at most 6 decimals.
    pub fn parse_usd(text: &str) -> Result<Micros, MoneyError> {
        let m = parse_scaled(text, 6)?;
        i64::try_from(m)
            .map(Micros)
            .map_err(|_| MoneyError::TooLarge(text.to_string()))
    }
}

impl fmt::Display for Micros {
    /// `1234567` → `1.234567` (dollars, always six decimals).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dollars().as_str())
    }
}

impl Micros {
    /// The amount in dollars as text (`1234567` → `1.234567`, always six decimals), written
    /// into a buffer on the stack: the cost header of every priced answer, without the
    /// formatting machinery or an allocation.
    pub fn dollars(self) -> Dollars {
        let mut buf = [0u8; Dollars::CAP];
        let mut at = Dollars::CAP;
        let mut m = self.0.unsigned_abs();
        let mut put = |b: u8| {
            at -= 1;
            buf[at] = b;
        };
        for _ in 0..6 {
            put(b'0' + (m % 10) as u8);
            m /= 10;
        }
        put(b'.');
        loop {
            put(b'0' + (m % 10) as u8);
            m /= 10;
            if m == 0 {
                break;
            }
        }
        if self.0 < 0 {
            put(b'-');
        }
        Dollars {
            buf,
            start: at as u8,
        }
    }
}

/// [`Micros::dollars`]: at most 21 characters (`-9223372036854.775808`).
#[derive(Clone, Copy)]
pub struct Dollars {
    buf: [u8; Dollars::CAP],
    start: u8,
}

impl Dollars {
    const CAP: usize = 24;

    pub fn as_str(&self) -> &str {
        // only ASCII digits, '.' and '-' were written
        std::str::from_utf8(&self.buf[usize::from(self.start)..]).unwrap_or_default()
    }
}

impl fmt::Debug for Dollars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_written_with_six_decimals() {
        for (m, text) in [
            (0, "0.000000"),
            (1, "0.000001"),
            (1_234_567, "1.234567"),
            (1_000_000, "1.000000"),
            (-5, "-0.000005"),
            (-12_000_001, "-12.000001"),
            (i64::MAX, "9223372036854.775807"),
            (i64::MIN, "-9223372036854.775808"),
        ] {
            assert_eq!(Micros(m).dollars().as_str(), text);
            assert_eq!(Micros(m).to_string(), text);
        }
    }

    #[test]
    fn prices_parse_exactly() {
        let pm = PicosPerToken::from_per_million;
        let pt = PicosPerToken::from_per_token;
        assert_eq!(pm("3"), Ok(PicosPerToken(3_000_000)));
        assert_eq!(pm("0.075"), Ok(PicosPerToken(75_000)));
        assert_eq!(pm("1.5e-1"), Ok(PicosPerToken(150_000)));
        assert_eq!(pm("0"), Ok(PicosPerToken(0)));
        assert_eq!(pm("0.000"), Ok(PicosPerToken(0)));
        assert_eq!(pm(" 2.00 "), Ok(PicosPerToken(2_000_000)));
        assert_eq!(pm("+.5"), Ok(PicosPerToken(500_000)));
        assert_eq!(pm("75."), Ok(PicosPerToken(75_000_000)));
        assert_eq!(pm("0.000001"), Ok(PicosPerToken(1)));
        assert_eq!(pm("1.000000000000000000000"), Ok(PicosPerToken(1_000_000)));
        assert_eq!(pt("3e-06"), Ok(PicosPerToken(3_000_000)));
        assert_eq!(pt("1.5E-07"), Ok(PicosPerToken(150_000)));
        assert_eq!(pt("1.5e-7"), Ok(PicosPerToken(150_000)));
        assert_eq!(pt("0.00000015"), Ok(PicosPerToken(150_000)));
        assert_eq!(pt("0.000003"), Ok(PicosPerToken(3_000_000)));
        assert_eq!(pt("0.000000075"), Ok(PicosPerToken(75_000)));
        assert_eq!(pt("1e-6"), Ok(PicosPerToken(1_000_000)));
        assert_eq!(pt("1e-12"), Ok(PicosPerToken(1)));
        assert_eq!(pt("0e5"), Ok(PicosPerToken(0)));
        assert_eq!(pt("1E+0"), Ok(PicosPerToken(1_000_000_000_000)));
    }

    #[test]
    fn bad_prices_are_refused_with_the_reason() {
        let pm = PicosPerToken::from_per_million;
        assert!(matches!(
            pm("0.0000001"),
            Err(MoneyError::TooPrecise { decimals: 6, .. })
        ));
        assert!(matches!(
            PicosPerToken::from_per_token("1.5e-13"),
            Err(MoneyError::TooPrecise { decimals: 12, .. })
        ));
        assert!(matches!(
            PicosPerToken::from_per_token("0.0000000000001"),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            pm("1e-9999999999999"),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert_eq!(pm("-1"), Err(MoneyError::Negative("-1".into())));
        assert_eq!(pm("-0.5"), Err(MoneyError::Negative("-0.5".into())));
        for nan in [
            "", " ", "abc", ".", "e5", "1e", "1e+", "1.2.3", "1,5", "0x10", "inf", "NaN", "--1",
            "1 000", "1_000",
        ] {
            assert_eq!(pm(nan), Err(MoneyError::NotANumber(nan.into())), "{nan:?}");
        }
        assert!(matches!(pm("1e30"), Err(MoneyError::TooLarge(_))));
        assert!(matches!(
            pm("99999999999999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
        assert!(matches!(
            pm("1e9999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
        assert_eq!(
            pm("0.0000001").map_err(|e| e.to_string()),
            Err("`0.0000001` has more precision than supported (at most 6 decimals)".into())
        );
        assert_eq!(PicosPerToken(75_000).per_million(), "0.075");
        assert_eq!(PicosPerToken(3_000_000).per_million(), "3");
        assert_eq!(PicosPerToken(0).per_million(), "0");
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
        // exactly half rounds up, just below half rounds down
        assert_eq!(Picos(500_000).micros(), Micros(1));
        assert_eq!(Picos(499_999).micros(), Micros(0));
        assert_eq!(Picos(1_500_000).micros(), Micros(2));
        assert_eq!(Micros(1_234_567).to_string(), "1.234567");
        assert_eq!(Micros(5).to_string(), "0.000005");
        assert_eq!(Micros(-5).to_string(), "-0.000005");
        // no overflow with absurd numbers
        let huge = PicosPerToken(u64::MAX).cost_of(u64::MAX);
        assert_eq!(huge.micros(), Micros(i64::MAX));
        assert_eq!((huge + huge).0, u128::MAX, "sums saturate");
        assert_eq!(
            [huge, huge, Picos(1)].into_iter().sum::<Picos>().0,
            u128::MAX
        );
    }

    #[test]
    fn picos_display_exactly() {
        assert_eq!(Picos(0).to_string(), "0.000000");
        assert_eq!(Picos(3_000_000_000).to_string(), "0.003000");
        assert_eq!(Picos(1_234_500_000).to_string(), "0.0012345");
        assert_eq!(Picos(1).to_string(), "0.000000000001");
        assert_eq!(Picos(12_000_000_000_001).to_string(), "12.000000000001");
    }

    #[test]
    fn usd_amounts_parse_to_micros() {
        assert_eq!(Micros::parse_usd("12.50"), Ok(Micros(12_500_000)));
        assert_eq!(Micros::parse_usd("0.000001"), Ok(Micros(1)));
        assert!(Micros::parse_usd("0.0000001").is_err());
        assert!(Micros::parse_usd("-1").is_err());
        assert!(matches!(
            Micros::parse_usd("10000000000000"),
            Err(MoneyError::TooLarge(_))
        ));
    }
}
