//! The RSS rule: is the server's memory flat after the warm-up? It judges a curve of
//! samples; sampling /proc is the driver's, and the verdict is the report's.

/// One RSS sample: seconds since the start and VmRSS in KiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssSample {
    pub t_s: f64,
    pub kib: u64,
}

/// The RSS rule applied to a curve.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RssJudgement {
    /// Samples taken at or after the warm-up.
    pub samples: usize,
    /// Median of the first third of those, and of the last third.
    pub early_kib: u64,
    pub late_kib: u64,
    /// The allowance, and the limit it gives: `early_kib * (100 + growth_pct) / 100 +
    /// slack_kib`.
    pub growth_pct: u64,
    pub slack_kib: u64,
    pub limit_kib: u64,
    /// Largest sample of the first and of the last third, for the record.
    pub early_max_kib: u64,
    pub late_max_kib: u64,
    /// `None` when there are fewer than 3 samples after the warm-up (not judged).
    pub flat: Option<bool>,
}

/// Applies the RSS rule: the samples at or after `warmup_s` are cut in thirds; RSS is
/// flat when the median of the last third is at most the median of the first third plus
/// `growth_pct` percent plus `slack_kib` (by default
/// [`DEFAULT_RSS_GROWTH_PCT`](super::DEFAULT_RSS_GROWTH_PCT) and
/// [`DEFAULT_RSS_SLACK_KIB`](super::DEFAULT_RSS_SLACK_KIB)).
///
/// Medians, because a sample that lands while the server holds one of the sim's
/// once-a-second bursts of results for 1,000 readers reads up to three times the level
/// between bursts (about one sample in six); a rule on maxima would pass or fail on where
/// those happen to fall. A leak raises the whole
/// curve, and so the median: in a 30-minute soak of 1,000 clients, 1 KiB per reconnect
/// or 1 byte per 10 results adds some 42 or 26 MiB between the two medians, against an
/// allowance of 7 to 15 MiB. The percentage and the constant leave room for the
/// allocator's own slack.
pub fn judge_rss(
    samples: &[RssSample],
    warmup_s: f64,
    growth_pct: u64,
    slack_kib: u64,
) -> RssJudgement {
    let after: Vec<u64> = samples
        .iter()
        .filter(|s| s.t_s >= warmup_s)
        .map(|s| s.kib)
        .collect();
    let third = after.len() / 3;
    if third == 0 {
        return RssJudgement {
            samples: after.len(),
            growth_pct,
            slack_kib,
            ..RssJudgement::default()
        };
    }
    let early = &after[..third];
    let late = &after[after.len() - third..];
    let limit = median(early) * (100 + growth_pct) / 100 + slack_kib;
    RssJudgement {
        samples: after.len(),
        early_kib: median(early),
        late_kib: median(late),
        growth_pct,
        slack_kib,
        limit_kib: limit,
        early_max_kib: early.iter().copied().max().unwrap_or(0),
        late_max_kib: late.iter().copied().max().unwrap_or(0),
        flat: Some(median(late) <= limit),
    }
}

/// The median (the lower middle value of an even count).
fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(kib: &[u64]) -> Vec<RssSample> {
        kib.iter()
            .enumerate()
            .map(|(i, &k)| RssSample {
                t_s: i as f64,
                kib: k,
            })
            .collect()
    }

    #[test]
    fn rss_rule_compares_medians_of_thirds_after_the_warm_up() {
        // Growth during the warm-up (the first 3 samples) does not count; nor do single
        // spikes, in either third.
        let flat = curve(&[
            1000, 20_000, 40_000, 50_000, 95_000, 50_500, 50_000, 52_000, 51_000, 50_800, 80_000,
            51_500,
        ]);
        let j = judge_rss(&flat, 3.0, 10, 2048);
        assert_eq!(j.samples, 9);
        assert_eq!((j.early_kib, j.late_kib), (50_500, 51_500));
        assert_eq!((j.early_max_kib, j.late_max_kib), (95_000, 80_000));
        assert_eq!(j.limit_kib, 50_500 * 11 / 10 + 2048);
        assert_eq!(j.flat, Some(true));
        // Steady growth past 10 % + 2 MiB fails.
        let leak: Vec<u64> = (0..30).map(|i| 50_000 + i * 400).collect();
        let j = judge_rss(&curve(&leak), 0.0, 10, 2048);
        assert_eq!((j.early_kib, j.late_kib), (51_600, 59_600));
        assert_eq!(j.flat, Some(false), "{j:?}");
        // A looser allowance lets it through: 51,600 + 20 % + 0 = 61,920.
        let j = judge_rss(&curve(&leak), 0.0, 20, 0);
        assert_eq!((j.limit_kib, j.flat), (61_920, Some(true)));
        // Exactly at the limit passes; one KiB over fails.
        let mut edge = vec![10_000; 9];
        edge[6..].copy_from_slice(&[13_048, 13_048, 13_048]);
        assert_eq!(judge_rss(&curve(&edge), 0.0, 10, 2048).flat, Some(true));
        edge[7] = 13_049;
        edge[8] = 13_049;
        assert_eq!(judge_rss(&curve(&edge), 0.0, 10, 2048).flat, Some(false));
        // Fewer than three samples after the warm-up: not judged.
        assert_eq!(judge_rss(&curve(&[1, 2, 3, 4]), 2.0, 10, 2048).flat, None);
        assert_eq!(median(&[3, 1, 2]), 2);
        assert_eq!(median(&[4, 1, 3, 2]), 2);
        assert_eq!(median(&[]), 0);
    }
}
