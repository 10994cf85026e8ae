//! The scan language: conditions and scores over a symbol's indicators, as written in
//! the config file's `[[scans]]` and alert rules (`rsi(14) < 35`,
//! `crosses_above(ema(12), ema(26))`, `(35 - rsi(14)) / 5 + volume_ratio(20)`).
//!
//! Parsed and type-checked once, at start, with errors that point at a column; compiled
//! to flat programs ([`Program`]) that read a symbol's indicator values by slot. What a
//! set of programs reads is gathered in [`Needs`], each indicator once, so a symbol keeps
//! only the indicators some scan or rule uses. Sans-IO: nothing here touches data feeds.

mod catalog;
mod lex;
mod parse;
mod program;
mod table;

pub use catalog::{Factor, Indicator, MAX_PERIOD, Macd};
pub use parse::{Dir, Type};
pub use program::{
    CROSS_SLOTS, Frame, MAX_DEPTH, Needs, Program, cross_at, cross_states, push_cross,
};
pub use table::{Conditions, Held, MAX_CONDITIONS, Mask, WORDS};

/// Where `item` sits in `list`, appended if it is not there yet: how a set of programs
/// gives each thing it reads one slot, and how a list keeps each name once.
pub(crate) fn slot_of<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    list.iter().position(|x| *x == item).unwrap_or_else(|| {
        list.push(item);
        list.len() - 1
    })
}

/// Why an expression was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("col {col}: {message}")]
pub struct Error {
    /// The column (1-based, in characters) of the offending token.
    pub col: usize,
    /// What was wrong, or what was expected.
    pub message: String,
}

impl Error {
    fn at(col: usize, message: impl Into<String>) -> Error {
        Error {
            col,
            message: message.into(),
        }
    }
}

/// A condition (`when`): a comparison or a cross, compiled.
pub fn condition(text: &str, needs: &mut Needs) -> Result<Compiled, Error> {
    compile(text, Type::Condition, &[], needs)
}

/// A condition in which the names `vars` are the caller's variables, read from the
/// `vars` of [`Program::eval_with`] in this order.
pub fn condition_with(text: &str, vars: &[&str], needs: &mut Needs) -> Result<Compiled, Error> {
    compile(text, Type::Condition, vars, needs)
}

/// A number (`score`), compiled.
pub fn number(text: &str, needs: &mut Needs) -> Result<Compiled, Error> {
    compile(text, Type::Number, &[], needs)
}

/// A compiled expression and the indicators it names (a result's `values`).
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The program.
    pub program: Program,
    /// Every indicator named, in the order written, each once.
    pub named: Vec<Indicator>,
    /// Every variable read, in the order written, each once.
    pub vars: Vec<u8>,
}

fn compile(text: &str, want: Type, vars: &[&str], needs: &mut Needs) -> Result<Compiled, Error> {
    let expr = parse::parse_with(text, vars)?;
    if expr.ty() != want {
        let message = match want {
            Type::Condition => {
                "expected a condition (a comparison such as `rsi(14) < 30`, or \
                 crosses_above/crosses_below), found a number"
            }
            Type::Number => "expected a number, found a condition",
        };
        return Err(Error::at(expr.col, message));
    }
    let program = Program::compile(&expr, needs)?;
    let mut named = Vec::new();
    program::named(&expr, &mut named);
    let mut read = Vec::new();
    program::vars(&expr, &mut read);
    Ok(Compiled {
        program,
        named,
        vars: read,
    })
}

#[cfg(test)]
mod tests;
