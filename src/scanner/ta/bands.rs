//! Bollinger bands: `bb_upper(n, k)` and `bb_lower(n, k)` are `sma(n) ± k σ`, σ the
//! population standard deviation of the last n closes (a close window's, shared by every
//! k and by `sma(n)`), and `bb_pct(n, k)` is where the close sits between them. Pure
//! arithmetic over a window's mean and σ; it keeps no state.

/// `(lower, upper)`: `mean ∓ k σ` (NaN while the window is not full).
#[inline]
pub(super) fn bands(mean: f64, std_dev: f64, k: f64) -> (f64, f64) {
    (mean - k * std_dev, mean + k * std_dev)
}

/// `(close - lower) / (upper - lower)`: 0 at the lower band, 1 at the upper. Undefined
/// (NaN) for bands of no width, which a window of equal closes has.
#[inline]
pub(super) fn pct(close: f64, (lower, upper): (f64, f64)) -> f64 {
    let width = upper - lower;
    if width > 0.0 {
        (close - lower) / width
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_is_zero_at_the_lower_band_one_at_the_upper_and_undefined_without_width() {
        let b = bands(10.0, 0.5, 2.0);
        assert_eq!(b, (9.0, 11.0));
        for (close, want) in [(9.0, 0.0), (11.0, 1.0), (10.0, 0.5), (12.0, 1.5)] {
            assert_eq!(pct(close, b), want, "close {close}");
        }
        assert!(pct(10.0, bands(10.0, 0.0, 2.0)).is_nan());
        assert!(pct(10.0, bands(f64::NAN, f64::NAN, 2.0)).is_nan());
    }
}
