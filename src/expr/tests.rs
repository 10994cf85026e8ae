use super::*;

/// Evaluates `text` as a number with the indicators given by name.
fn value(text: &str, given: &[(&str, f64)]) -> f64 {
    let mut needs = Needs::default();
    let c = number(text, &mut needs).unwrap_or_else(|e| panic!("{text}: {e}"));
    c.program.eval(&values(&needs, given), &[])
}

fn holds(text: &str, given: &[(&str, f64)]) -> bool {
    let mut needs = Needs::default();
    let c = condition(text, &mut needs).unwrap_or_else(|e| panic!("{text}: {e}"));
    c.program.holds(&values(&needs, given), &[])
}

/// Each needed indicator's value, by its canonical name; NaN where not given.
fn values(needs: &Needs, given: &[(&str, f64)]) -> Vec<f64> {
    needs
        .indicators
        .iter()
        .map(|ind| {
            let name = ind.to_string();
            given
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(f64::NAN, |(_, v)| *v)
        })
        .collect()
}

#[test]
fn precedence_and_associativity() {
    for (text, want) in [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),
        ("24 / 4 / 2", 3.0),
        ("-2 * 3", -6.0),
        ("2 * -3", -6.0),
        ("- -2", 2.0),
        ("1 - -1", 2.0),
        ("2 + 3 * 4 - 6 / 2", 11.0),
        ("1.5e1 + .5", 15.5),
        ("(35 - rsi(14)) / 5 + volume_ratio(20)", 3.0 + 1.5),
        ("abs(2 - 5) * 2", 6.0),
        ("-abs(-rsi(14))", -20.0),
    ] {
        let got = value(text, &[("rsi(14)", 20.0), ("volume_ratio(20)", 1.5)]);
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn comparisons_bind_looser_than_arithmetic() {
    let given = [("close", 10.0), ("bb_lower(20, 2)", 9.0), ("rsi(14)", 30.0)];
    for (text, want) in [
        ("close > bb_lower(20, 2)", true),
        ("close - 1 > bb_lower(20, 2)", false),
        ("close - 1 >= bb_lower(20, 2)", true),
        ("rsi(14) < 35", true),
        ("rsi(14) == 30", true),
        ("rsi(14) != 30", false),
        ("rsi(14) <= 29.9", false),
        ("close * 2 > 19 + 0.5", true),
    ] {
        assert_eq!(holds(text, &given), want, "{text}");
    }
}

#[test]
fn an_undefined_indicator_never_satisfies_a_condition() {
    for text in [
        "rsi(14) < 35",
        "rsi(14) >= 35",
        "rsi(14) != 1",
        "-rsi(14) < 0",
    ] {
        assert!(!holds(text, &[]), "{text}");
    }
    assert!(value("rsi(14) + 1", &[]).is_nan());
    // A division by zero is not a number that passes by chance either.
    assert!(!holds("close / 0 < 5", &[("close", 0.0)]));
}

#[test]
fn a_cross_holds_on_the_bar_where_it_happens_only() {
    let mut needs = Needs::default();
    let above = condition("crosses_above(ema(12), ema(26))", &mut needs).unwrap();
    let below = condition("crosses_below(ema(12), ema(26))", &mut needs).unwrap();
    assert_eq!(needs.crosses.len(), 1, "one series for both directions");
    let mut state = cross_states(1);
    let mut fired = Vec::new();
    // ema(12) - ema(26) over the bars: undefined, then -1, 0, 2, 3, -1, -2.
    for (fast, slow) in [
        (f64::NAN, f64::NAN),
        (9.0, 10.0),
        (10.0, 10.0),
        (12.0, 10.0),
        (13.0, 10.0),
        (9.0, 10.0),
        (8.0, 10.0),
    ] {
        let slots = values(&needs, &[("ema(12)", fast), ("ema(26)", slow)]);
        let diff = needs.crosses[0].eval(&slots, &[]);
        push_cross(&mut state, 0, diff);
        fired.push((
            above.program.holds(&slots, &state),
            below.program.holds(&slots, &state),
        ));
    }
    let want = [
        (false, false),
        (false, false), // the bar before was undefined
        (false, false), // touching is not crossing
        (true, false),  // from 0 to 2
        (false, false),
        (false, true),
        (false, false),
    ];
    assert_eq!(fired, want);
}

#[test]
fn a_cross_with_bars_holds_that_long_while_it_stays_past() {
    let mut needs = Needs::default();
    let above = condition("crosses_above(sma(20), sma(50), 3)", &mut needs).unwrap();
    let mut state = cross_states(1);
    let mut fired = Vec::new();
    // sma(20) - sma(50): -1, 1, 2, 3, 4 (three bars from the cross), then -1, 1, 0, 1.
    for diff in [-1.0, 1.0, 2.0, 3.0, 4.0, -1.0, 1.0, 0.0, 1.0] {
        let slots = values(&needs, &[("sma(20)", 10.0 + diff), ("sma(50)", 10.0)]);
        push_cross(&mut state, 0, needs.crosses[0].eval(&slots, &[]));
        fired.push(above.program.holds(&slots, &state));
    }
    let want = [false, true, true, true, false, false, true, false, true];
    assert_eq!(
        fired, want,
        "at 0 it no longer holds; from 0 to 1 is a new cross"
    );
}

#[test]
fn errors_point_at_the_column_and_say_what_was_expected() {
    for (text, col, needle) in [
        (
            "close > bb_lowr(20, 2)",
            9,
            "unknown indicator bb_lowr (did you mean bb_lower?)",
        ),
        (
            "rsi(14) <",
            10,
            "expected a number, an indicator or `(`, found the end",
        ),
        ("rsi(14 < 30", 8, "expected `,` or `)`, found `<`"),
        ("(close > 1", 11, "expected `)`, found the end"),
        (
            "close 1",
            7,
            "expected an operator or the end, found the number 1",
        ),
        ("1 < close < 3", 11, "comparisons do not chain"),
        ("rsi(n) < 3", 5, "rsi's parameters are plain numbers"),
        ("rsi(1) < 3", 5, "from 2 to 5000, not 1"),
        (
            "bb_upper(20) > close",
            1,
            "takes 2 arguments (bb_upper(n, k)), not 1",
        ),
        ("rsi < 30", 1, "takes 1 argument (rsi(n)), not 0"),
        (
            "crosses_above(close)",
            20,
            "expected `,` between crosses_above's two arguments",
        ),
        ("(close > 1) + 2", 2, "`+` takes a number, not a condition"),
        (
            "crosses_above(close, open, 0)",
            28,
            "bars are a whole number from 1",
        ),
        (
            "crosses_below(close, open, 2.5)",
            28,
            "bars are a whole number from 1",
        ),
        ("abs(close > 1) > 0", 5, "abs takes a number"),
        (
            "ab(close) > 0",
            1,
            "unknown indicator ab (did you mean abs?)",
        ),
        (
            "crosses_above(close > 1, 2) ",
            15,
            "crosses_above's first argument takes a number",
        ),
    ] {
        let err = condition(text, &mut Needs::default())
            .map(|_| ())
            .expect_err(text);
        assert_eq!(err.col, col, "{text}: {err}");
        assert!(err.message.contains(needle), "{text}: {err}");
    }
}

#[test]
fn a_when_must_be_a_condition_and_a_score_a_number() {
    let err = condition("rsi(14) - 30", &mut Needs::default()).unwrap_err();
    assert!(err.message.starts_with("expected a condition"), "{err}");
    assert_eq!(err.col, 1);
    let err = number("rsi(14) < 30", &mut Needs::default()).unwrap_err();
    assert_eq!(err.message, "expected a number, found a condition");
}

#[test]
fn needs_hold_each_indicator_once_and_named_keeps_the_written_order() {
    let mut needs = Needs::default();
    let a = condition("rsi(14) < 35", &mut needs).unwrap();
    let b = number(
        "(35 - rsi( 14 )) / 5 + volume_ratio(20) + rsi(14)",
        &mut needs,
    )
    .unwrap();
    let names: Vec<String> = needs.indicators.iter().map(|i| i.to_string()).collect();
    assert_eq!(names, ["rsi(14)", "volume_ratio(20)"]);
    assert_eq!(a.named.len(), 1);
    let named: Vec<String> = b.named.iter().map(|i| i.to_string()).collect();
    assert_eq!(named, ["rsi(14)", "volume_ratio(20)"]);
    // Bare and empty-parenthesised names are the same indicator.
    let c = number("vwap() - vwap", &mut needs).unwrap();
    assert_eq!(c.named.len(), 1);
}

#[test]
fn an_expression_too_deep_for_the_stack_is_refused() {
    // Right-nested sums need one more stack slot per level.
    let deep = format!("{}1{}", "1 + (".repeat(40), ")".repeat(40));
    let err = number(&deep, &mut Needs::default()).unwrap_err();
    assert!(err.message.contains("nests too deeply"), "{err}");
    let fine = format!("{}1{}", "1 + (".repeat(20), ")".repeat(20));
    assert_eq!(value(&fine, &[]), 21.0);
}

#[test]
fn variables_read_the_callers_values_and_stay_out_of_crosses() {
    let vars = ["score", "rsi"];
    let mut needs = Needs::default();
    let c = condition_with("score * 2 > rsi(14) + rsi", &vars, &mut needs).unwrap();
    assert_eq!(c.vars, [0, 1]);
    assert_eq!(c.named, [Indicator::Rsi(14)]);
    let stack = &mut [0.0; MAX_DEPTH];
    assert_eq!(c.program.eval_with(&[10.0], &[], &[8.0, 5.0], stack), 1.0);
    assert_eq!(c.program.eval_with(&[10.0], &[], &[7.0, 5.0], stack), 0.0);
    assert_eq!(c.program.eval_with(&[10.0], &[], &[8.0], stack), 0.0, "NaN");
    // A name is a variable only where the caller offers it.
    let err = condition("score > 1", &mut Needs::default()).unwrap_err();
    assert!(err.message.contains("unknown indicator score"), "{err}");
    let err = condition_with("scor > 1", &vars, &mut needs).unwrap_err();
    assert!(err.message.ends_with("(did you mean score?)"), "{err}");
    let err = condition_with("crosses_above(sma(5), rsi)", &vars, &mut needs).unwrap_err();
    assert_eq!(err.col, 23, "{err}");
}

#[test]
fn merged_needs_keep_one_slot_each_and_remapped_programs_read_the_same() {
    let mut scans = Needs::default();
    number("sma(10) + ema(5)", &mut scans).unwrap();
    let mut rules = Needs::default();
    condition("crosses_above(ema(5), sma(30))", &mut rules).unwrap();
    assert_eq!(rules.indicators, [Indicator::Ema(5), Indicator::Sma(30)]);
    let (slots, crosses) = scans.merge(&rules);
    assert_eq!(slots, [1, 2], "ema(5) is shared, sma(30) appended");
    assert_eq!(crosses, [0]);
    assert_eq!(scans.indicators.len(), 3);
    // The rules' cross, moved into the scans' slots, computes the same difference.
    let merged = [7.0, 20.0, 12.5];
    let own = [merged[1], merged[2]];
    assert_eq!(scans.crosses[0].eval(&merged, &[]), 7.5);
    assert_eq!(rules.crosses[0].eval(&own, &[]), 7.5);
    // Merging again adds nothing.
    assert_eq!(scans.merge(&rules), (slots, crosses));
    assert_eq!((scans.indicators.len(), scans.crosses.len()), (3, 1));
}
