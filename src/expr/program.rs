//! An expression compiled to a flat postfix program over a symbol's indicator values,
//! evaluated on a fixed stack: no allocation per bar, time in proportion to its length.
//!
//! Conditions evaluate to 1 or 0. An indicator not yet defined reads NaN, which makes
//! every comparison false and every number NaN, so a scan cannot fire on a value it does
//! not have yet.

use super::catalog::Indicator;
use super::lex::CmpOp;
use super::parse::{Arith, Dir, Expr, Node};
use super::{Error, slot_of};

/// The deepest stack a program may need (a power of two: positions are masked into it).
pub const MAX_DEPTH: usize = 32;

/// One step.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Num(f64),
    /// The value of indicator slot `n`.
    Ind(u16),
    /// Whether cross slot `n` crossed in direction `Dir` within the last `u32` bars and
    /// still holds.
    Cross(u16, Dir, u32),
    /// The caller's variable `n`.
    Var(u8),
    Neg,
    Abs,
    Arith(Arith),
    Cmp(CmpOp),
    /// The top `op` a number: `Num` then `Arith` in one step.
    ArithNum(Arith, f64),
    /// The top `op` an indicator's value: `Ind` then `Arith` in one step.
    ArithInd(Arith, u16),
    /// The top compared with a number: `Num` then `Cmp` in one step.
    CmpNum(CmpOp, f64),
}

/// `ops` with an operand that is pushed only to be taken by the next step merged into
/// that step: half the steps for the usual `atr(14) / close * 100 > 3`.
fn fuse(ops: &[Op]) -> Box<[Op]> {
    let mut out = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        let fused = match (ops[i], ops.get(i + 1)) {
            (Op::Num(x), Some(&Op::Arith(op))) => Some(Op::ArithNum(op, x)),
            (Op::Ind(slot), Some(&Op::Arith(op))) => Some(Op::ArithInd(op, slot)),
            (Op::Num(x), Some(&Op::Cmp(op))) => Some(Op::CmpNum(op, x)),
            _ => None,
        };
        match fused {
            Some(op) => {
                out.push(op);
                i += 2;
            }
            None => {
                out.push(ops[i]);
                i += 1;
            }
        }
    }
    out.into()
}

/// `a op b`.
#[inline(always)]
fn arith(op: Arith, a: f64, b: f64) -> f64 {
    match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        // x / 0 is infinite or NaN: neither passes a comparison by chance.
        Arith::Div => a / b,
    }
}

/// What a set of programs reads per symbol: each indicator and each cross once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    /// The indicators, by slot.
    pub indicators: Vec<Indicator>,
    /// The crosses, by slot: the program of `a - b`, evaluated on every bar.
    pub crosses: Vec<Program>,
}

/// A symbol's indicator values and cross states on one bar, by the slots of some
/// [`Needs`]: what programs compiled against those needs read, away from the symbol.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// The indicators' values, by slot.
    pub values: Box<[f64]>,
    /// The crosses' states, [`CROSS_SLOTS`] numbers each, by slot.
    pub crosses: Box<[f64]>,
}

impl Needs {
    /// Takes in what `other` reads; returns where each of its indicators and crosses now
    /// sits, for [`Program::remap`].
    pub fn merge(&mut self, other: &Needs) -> (Vec<u16>, Vec<u16>) {
        let slots: Vec<u16> = other
            .indicators
            .iter()
            .map(|ind| self.indicator(*ind))
            .collect();
        // A cross's `a - b` reads only indicators, never a cross.
        let crosses = other
            .crosses
            .iter()
            .map(|diff| self.cross(diff.remap(&slots, &[])))
            .collect();
        (slots, crosses)
    }

    fn indicator(&mut self, ind: Indicator) -> u16 {
        slot_of(&mut self.indicators, ind) as u16
    }

    fn cross(&mut self, diff: Program) -> u16 {
        slot_of(&mut self.crosses, diff) as u16
    }
}

/// Numbers one cross keeps per symbol: `a - b` on the last bar, and the last cross with
/// the bars since it, as `age + 1` above, `-(age + 1)` below, 0 before any. A symbol's
/// crosses sit in one slice right after its indicator values, so evaluating it reads
/// one block of memory rather than two.
pub const CROSS_SLOTS: usize = 2;

/// The oldest age a cross keeps counting to, plus one.
const AGE_CAP: f64 = u32::MAX as f64 + 1.0;

/// Where cross slot `c`'s numbers sit in a symbol's cross states.
#[inline(always)]
pub fn cross_at(c: usize) -> std::ops::Range<usize> {
    c * CROSS_SLOTS..(c + 1) * CROSS_SLOTS
}

/// The states of `n` crosses before the first bar.
pub fn cross_states(n: usize) -> Vec<f64> {
    [f64::NAN, 0.0].repeat(n)
}

/// Takes cross `c`'s `a - b` on a new bar. A cross is `a - b` going from `<= 0` to `> 0`
/// (above) or from `>= 0` to `< 0` (below); never while either bar's value is undefined.
#[inline]
pub fn push_cross(states: &mut [f64], c: usize, diff: f64) {
    let Some([last, cross]) = states.get_mut(cross_at(c)) else {
        return;
    };
    let prev = std::mem::replace(last, diff);
    *cross = if prev <= 0.0 && diff > 0.0 {
        1.0
    } else if prev >= 0.0 && diff < 0.0 {
        -1.0
    } else if *cross > 0.0 {
        (*cross + 1.0).min(AGE_CAP)
    } else if *cross < 0.0 {
        (*cross - 1.0).max(-AGE_CAP)
    } else {
        0.0
    };
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    ops: Box<[Op]>,
    /// The common conditions, run without the stack.
    shape: Shape,
}

/// An expression a scan writes most (every built-in condition has one of these shapes,
/// every cross follows a `Diff`), which evaluates without walking `ops`; the same answer
/// either way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Shape {
    /// Anything: walk the steps.
    General,
    /// `ind op x` (`abs(ind) op x` with the flag) for every `op` but `!=`, as
    /// `lo <= ind <= hi`: no branch on `op`, and NaN is inside no range.
    IndIn(u16, bool, f64, f64),
    /// `a op b`.
    IndInd(u16, CmpOp, u16),
    /// A cross alone.
    Cross(u16, Dir, u32),
    /// A number: a constant score.
    Const(f64),
    /// An indicator's value.
    Value(u16),
    /// `a - b`: what a cross follows.
    Diff(u16, u16),
}

impl Shape {
    /// The same shape reading other slots (see [`Program::remap`]).
    fn remap(self, slots: &[u16], crosses: &[u16]) -> Shape {
        let at = |n: u16| slots[usize::from(n)];
        match self {
            Shape::IndIn(a, abs, lo, hi) => Shape::IndIn(at(a), abs, lo, hi),
            Shape::IndInd(a, op, b) => Shape::IndInd(at(a), op, at(b)),
            Shape::Cross(c, dir, within) => Shape::Cross(crosses[usize::from(c)], dir, within),
            Shape::Value(a) => Shape::Value(at(a)),
            Shape::Diff(a, b) => Shape::Diff(at(a), at(b)),
            shape @ (Shape::General | Shape::Const(_)) => shape,
        }
    }

    /// `ind op x` as a range, when it is one.
    fn range(a: u16, abs: bool, op: CmpOp, x: f64) -> Shape {
        if !x.is_finite() {
            return Shape::General;
        }
        let (lo, hi) = match op {
            CmpOp::Lt => (f64::NEG_INFINITY, -next_up(-x)),
            CmpOp::Le => (f64::NEG_INFINITY, x),
            CmpOp::Gt => (next_up(x), f64::INFINITY),
            CmpOp::Ge => (x, f64::INFINITY),
            CmpOp::Eq => (x, x),
            CmpOp::Ne => return Shape::General,
        };
        Shape::IndIn(a, abs, lo, hi)
    }

    fn of(ops: &[Op]) -> Shape {
        match *ops {
            [Op::Ind(a), Op::Num(x), Op::Cmp(op)] => Shape::range(a, false, op, x),
            [Op::Ind(a), Op::Abs, Op::Num(x), Op::Cmp(op)] => Shape::range(a, true, op, x),
            [Op::Ind(a), Op::Ind(b), Op::Cmp(op)] => Shape::IndInd(a, op, b),
            [Op::Cross(c, dir, within)] => Shape::Cross(c, dir, within),
            [Op::Num(x)] => Shape::Const(x),
            [Op::Ind(a)] => Shape::Value(a),
            [Op::Ind(a), Op::Ind(b), Op::Arith(Arith::Sub)] => Shape::Diff(a, b),
            _ => Shape::General,
        }
    }
}

/// Indicator slot `slot`'s value; NaN past the end.
#[inline(always)]
pub(super) fn value(values: &[f64], slot: u16) -> f64 {
    values.get(usize::from(slot)).copied().unwrap_or(f64::NAN)
}

/// `lo <= x <= hi` (of `|x|` with `abs`); NaN is in no range.
#[inline(always)]
pub(super) fn in_range(x: f64, abs: bool, lo: f64, hi: f64) -> bool {
    let x = if abs { x.abs() } else { x };
    (x >= lo) & (x <= hi)
}

/// Cross slot `c` crossed in `dir` within `within` bars (1: on the last bar), and is
/// still past it.
#[inline(always)]
pub(super) fn crossed(crosses: &[f64], c: u16, dir: Dir, within: u32) -> bool {
    let Some(&[last, cross]) = crosses.get(cross_at(usize::from(c))) else {
        return false;
    };
    let within = f64::from(within);
    match dir {
        Dir::Above => cross > 0.0 && cross - 1.0 < within && last > 0.0,
        Dir::Below => cross < 0.0 && -cross - 1.0 < within && last < 0.0,
    }
}

/// The least number above finite `x` (`f64::next_up`, which is newer than our MSRV).
fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        // Above both zeros: the least positive number.
        return f64::from_bits(1);
    }
    let bits = x.to_bits();
    f64::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

/// `a op b`; NaN on either side never holds.
#[inline(always)]
pub(super) fn compare(op: CmpOp, a: f64, b: f64) -> bool {
    match op {
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Eq => a == b,
        // Not `a != b`, which NaN satisfies: undefined is never unequal.
        CmpOp::Ne => a != b && !(a.is_nan() || b.is_nan()),
    }
}

impl Program {
    /// Compiles `expr`, taking slots in `needs` for what it reads.
    pub fn compile(expr: &Expr, needs: &mut Needs) -> Result<Program, Error> {
        let mut ops = Vec::new();
        let depth = emit(expr, needs, &mut ops)?;
        if depth > MAX_DEPTH {
            return Err(Error::at(
                expr.col,
                format!("the expression nests too deeply (more than {MAX_DEPTH} values at once)"),
            ));
        }
        Ok(Program {
            shape: Shape::of(&ops),
            ops: fuse(&ops),
        })
    }

    /// The value over a symbol's indicator values and cross states (1 or 0 for a
    /// condition).
    #[inline]
    pub fn eval(&self, values: &[f64], crosses: &[f64]) -> f64 {
        self.eval_on(values, crosses, &mut [0.0; MAX_DEPTH])
    }

    /// [`eval`](Self::eval) on a caller's stack, so a run of programs clears one stack
    /// rather than one each.
    #[inline]
    pub fn eval_on(&self, values: &[f64], crosses: &[f64], stack: &mut [f64; MAX_DEPTH]) -> f64 {
        self.eval_with(values, crosses, &[], stack)
    }

    /// [`eval_on`](Self::eval_on) with the caller's variables (a variable not given
    /// reads NaN).
    #[inline]
    pub fn eval_with(
        &self,
        values: &[f64],
        crosses: &[f64],
        vars: &[f64],
        stack: &mut [f64; MAX_DEPTH],
    ) -> f64 {
        match self.shape {
            Shape::General => self.walk(values, crosses, vars, stack),
            Shape::Const(x) => x,
            Shape::Value(a) => value(values, a),
            Shape::Diff(a, b) => value(values, a) - value(values, b),
            _ => f64::from(u8::from(self.test(values, crosses).unwrap_or(false))),
        }
    }

    /// A condition of a common shape, answered directly (`None` for any other program).
    #[inline(always)]
    fn test(&self, values: &[f64], crosses: &[f64]) -> Option<bool> {
        Some(match self.shape {
            Shape::IndIn(a, abs, lo, hi) => in_range(value(values, a), abs, lo, hi),
            Shape::IndInd(a, op, b) => compare(op, value(values, a), value(values, b)),
            Shape::Cross(c, dir, within) => crossed(crosses, c, dir, within),
            _ => return None,
        })
    }

    /// Its shape.
    pub(super) fn shape(&self) -> Shape {
        self.shape
    }

    /// Evaluates step by step.
    fn walk(
        &self,
        values: &[f64],
        crosses: &[f64],
        vars: &[f64],
        stack: &mut [f64; MAX_DEPTH],
    ) -> f64 {
        // The top of the stack lives in `acc` and the rest in `stack`, so a step that
        // works on the top (most do, once fused) touches no memory. Positions are masked
        // into the stack: `compile` bounds the depth by MAX_DEPTH, a power of two, so the
        // mask changes nothing and spares every bounds check.
        const M: usize = MAX_DEPTH - 1;
        let mut acc = f64::NAN;
        let mut below = 0usize;
        for op in self.ops.iter() {
            let push = match *op {
                Op::Num(x) => x,
                Op::Ind(slot) => value(values, slot),
                Op::Cross(slot, dir, within) => {
                    f64::from(u8::from(crossed(crosses, slot, dir, within)))
                }
                Op::Var(n) => vars.get(usize::from(n)).copied().unwrap_or(f64::NAN),
                Op::Neg => {
                    acc = -acc;
                    continue;
                }
                Op::Abs => {
                    acc = acc.abs();
                    continue;
                }
                Op::Arith(op) => {
                    below = below.wrapping_sub(1);
                    acc = arith(op, stack[below & M], acc);
                    continue;
                }
                Op::ArithNum(op, x) => {
                    acc = arith(op, acc, x);
                    continue;
                }
                Op::ArithInd(op, slot) => {
                    acc = arith(op, acc, value(values, slot));
                    continue;
                }
                Op::CmpNum(op, x) => {
                    acc = f64::from(u8::from(compare(op, acc, x)));
                    continue;
                }
                Op::Cmp(op) => {
                    below = below.wrapping_sub(1);
                    acc = f64::from(u8::from(compare(op, stack[below & M], acc)));
                    continue;
                }
            };
            // The first push has nothing below it to spill.
            stack[below & M] = acc;
            below += 1;
            acc = push;
        }
        acc
    }

    /// Does a condition hold?
    #[inline]
    pub fn holds(&self, values: &[f64], crosses: &[f64]) -> bool {
        self.eval(values, crosses) == 1.0
    }

    /// [`holds`](Self::holds) on a caller's stack.
    #[inline]
    pub fn holds_on(&self, values: &[f64], crosses: &[f64], stack: &mut [f64; MAX_DEPTH]) -> bool {
        // The common shapes answer directly, without a detour through 1.0 and 0.0.
        match self.test(values, crosses) {
            Some(holds) => holds,
            None => self.eval_on(values, crosses, stack) == 1.0,
        }
    }

    /// The same program reading indicator `n` from slot `slots[n]` and cross `n` from
    /// slot `crosses[n]`: a program compiled against one [`Needs`] run against another.
    pub fn remap(&self, slots: &[u16], crosses: &[u16]) -> Program {
        let ops: Box<[Op]> = self
            .ops
            .iter()
            .map(|op| match *op {
                Op::Ind(n) => Op::Ind(slots[usize::from(n)]),
                Op::ArithInd(a, n) => Op::ArithInd(a, slots[usize::from(n)]),
                Op::Cross(n, dir, within) => Op::Cross(crosses[usize::from(n)], dir, within),
                op => op,
            })
            .collect();
        Program {
            shape: self.shape.remap(slots, crosses),
            ops,
        }
    }

    /// Steps in the program.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// A program has at least one step.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Appends `e`'s steps; returns the stack depth it needs.
fn emit(e: &Expr, needs: &mut Needs, ops: &mut Vec<Op>) -> Result<usize, Error> {
    Ok(match &e.node {
        Node::Num(x) => {
            ops.push(Op::Num(*x));
            1
        }
        Node::Ind(ind) => {
            ops.push(Op::Ind(needs.indicator(*ind)));
            1
        }
        Node::Var(n) => {
            ops.push(Op::Var(*n));
            1
        }
        Node::Neg(inner) => {
            // A negative number is a number, not a step; but not -0, which would then
            // equal 0 to `==` and share a condition with it (x / -0 is not x / 0).
            if let Node::Num(x) = inner.node {
                if x != 0.0 {
                    ops.push(Op::Num(-x));
                    return Ok(1);
                }
            }
            let d = emit(inner, needs, ops)?;
            ops.push(Op::Neg);
            d
        }
        Node::Abs(inner) => {
            let d = emit(inner, needs, ops)?;
            ops.push(Op::Abs);
            d
        }
        Node::Arith(op, a, b) => {
            let (da, db) = (emit(a, needs, ops)?, emit(b, needs, ops)?);
            ops.push(Op::Arith(*op));
            da.max(db + 1)
        }
        Node::Cmp(op, a, b) => {
            let (da, db) = (emit(a, needs, ops)?, emit(b, needs, ops)?);
            ops.push(Op::Cmp(*op));
            da.max(db + 1)
        }
        Node::Cross(dir, within, a, b) => {
            // A cross follows `a - b` bar by bar, where only indicators exist.
            if let Some(col) = first_var(a).or_else(|| first_var(b)) {
                return Err(Error::at(
                    col,
                    "a cross compares indicators bar by bar; this name is not one",
                ));
            }
            let diff = Expr {
                col: e.col,
                node: Node::Arith(Arith::Sub, a.clone(), b.clone()),
            };
            let diff = Program::compile(&diff, needs)?;
            ops.push(Op::Cross(needs.cross(diff), *dir, *within));
            1
        }
    })
}

/// The column of the first variable in `e`.
fn first_var(e: &Expr) -> Option<usize> {
    match &e.node {
        Node::Var(_) => Some(e.col),
        Node::Num(_) | Node::Ind(_) => None,
        Node::Neg(inner) | Node::Abs(inner) => first_var(inner),
        Node::Arith(_, a, b) | Node::Cmp(_, a, b) | Node::Cross(_, _, a, b) => {
            first_var(a).or_else(|| first_var(b))
        }
    }
}

/// Every variable `e` reads, in the order written, each once.
pub fn vars(e: &Expr, out: &mut Vec<u8>) {
    match &e.node {
        Node::Var(n) => {
            slot_of(out, *n);
        }
        Node::Num(_) | Node::Ind(_) => {}
        Node::Neg(inner) | Node::Abs(inner) => vars(inner, out),
        Node::Arith(_, a, b) | Node::Cmp(_, a, b) | Node::Cross(_, _, a, b) => {
            vars(a, out);
            vars(b, out);
        }
    }
}

/// Every indicator `e` names, in the order written, each once.
pub fn named(e: &Expr, out: &mut Vec<Indicator>) {
    match &e.node {
        Node::Num(_) | Node::Var(_) => {}
        Node::Ind(ind) => {
            slot_of(out, *ind);
        }
        Node::Neg(inner) | Node::Abs(inner) => named(inner, out),
        Node::Arith(_, a, b) | Node::Cmp(_, a, b) | Node::Cross(_, _, a, b) => {
            named(a, out);
            named(b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::expr::condition;

    #[test]
    fn a_cross_counts_its_age_up_to_a_cap_in_either_direction() {
        let mut s = cross_states(2);
        for (c, diffs) in [(0, [-1.0, 2.0, 3.0, 4.0]), (1, [1.0, -2.0, -3.0, -4.0])] {
            for d in diffs {
                push_cross(&mut s, c, d);
            }
        }
        // Each crossed two bars before the last: age 2.
        assert_eq!(s, [4.0, 3.0, -4.0, -3.0]);
        assert!(crossed(&s, 0, Dir::Above, 3) && !crossed(&s, 0, Dir::Above, 2));
        assert!(crossed(&s, 1, Dir::Below, 3) && !crossed(&s, 1, Dir::Above, 3));
        // A cross that old stays that old, and never counts as recent.
        let mut s = vec![5.0, AGE_CAP, -5.0, -AGE_CAP];
        push_cross(&mut s, 0, 6.0);
        push_cross(&mut s, 1, -6.0);
        assert_eq!(s, [6.0, AGE_CAP, -6.0, -AGE_CAP]);
        assert!(!crossed(&s, 0, Dir::Above, u32::MAX) && !crossed(&s, 1, Dir::Below, u32::MAX));
        // A slot past the end holds nothing and takes nothing.
        assert!(!crossed(&s, 2, Dir::Above, 1));
        push_cross(&mut s, 2, 1.0);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn next_up_is_the_next_number() {
        for x in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            3.5e-310,
            -3.5e-310,
            f64::MAX,
            -f64::MAX,
            1e300,
        ] {
            let up = next_up(x);
            assert!(up > x, "{x}");
            assert_eq!(f64::from_bits(up.to_bits()), up);
            // Nothing between.
            assert!(!(x < (x + up) / 2.0 && (x + up) / 2.0 < up), "{x}");
        }
        assert_eq!(next_up(-f64::from_bits(1)), -0.0);
    }

    #[test]
    fn the_common_shapes_answer_as_the_steps_do() {
        use crate::expr::number;
        let numbers = ["1", "rsi(14)", "sma(5) - sma(20)", "sma(5) - 1"];
        let picks = [f64::NAN, -3.0, 0.0, 2.5, f64::INFINITY];
        for (k, text) in numbers.into_iter().enumerate() {
            let mut needs = Needs::default();
            let c = number(text, &mut needs).unwrap();
            assert_eq!(c.program.shape == Shape::General, k == 3, "{text}");
            for a in picks {
                for b in picks {
                    let stack = &mut [0.0; MAX_DEPTH];
                    let fast = c.program.eval_with(&[a, b], &[], &[], stack);
                    let slow = c.program.walk(&[a, b], &[], &[], stack);
                    assert!(fast == slow || fast.is_nan() && slow.is_nan(), "{text}");
                }
            }
        }
        let cases = [
            ("rsi(14) >= 70", false),
            ("abs(change_pct) < 3", false),
            ("close > highest(20)", false),
            ("vwap != close", false),
            ("sma(50) == 0", false),
            ("rsi(14) != 3", true),
            ("rsi(14) < -3", false),
            ("rsi(14) > 1e999", true),
            ("crosses_above(sma(5), sma(20), 2)", false),
            ("close > highest(20) * 1.01", true),
            ("atr(14) / close * 100 > 3", true),
            ("2 * rsi(14) - close >= -1", true),
            ("(rsi(14) + 1) / (close - 3) < 0.5", true),
        ];
        let picks = [f64::NAN, -3.0, 0.0, 2.5, 3.0, 70.0, 71.0, f64::INFINITY];
        for (text, general) in cases {
            let mut needs = Needs::default();
            let c = condition(text, &mut needs).unwrap();
            assert_eq!(c.program.shape == Shape::General, general, "{text}");
            let stack = &mut [0.0; MAX_DEPTH];
            let mut crosses = cross_states(needs.crosses.len());
            for (i, a) in picks.iter().enumerate() {
                for b in picks.iter().skip(i % 3) {
                    let values = [*a, *b];
                    for c in 0..needs.crosses.len() {
                        push_cross(&mut crosses, c, a - b);
                    }
                    let fast = c.program.eval_with(&values, &crosses, &[], stack);
                    let slow = c.program.walk(&values, &crosses, &[], stack);
                    assert_eq!(fast, slow, "{text} on {a}, {b}");
                }
            }
        }
    }
}
