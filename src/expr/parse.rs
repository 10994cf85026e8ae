//! The scan language's grammar, by recursive descent, and its two types: a condition
//! (a comparison or a cross) and a number. Nothing here evaluates.
//!
//! ```text
//! expr    := sum (cmp sum)?              comparisons do not chain
//! sum     := product (('+' | '-') product)*
//! product := unary (('*' | '/') unary)*
//! unary   := '-' unary | primary
//! primary := NUMBER | NAME | NAME '(' args ')' | '(' expr ')'
//! ```
//!
//! The functions: `crosses_above(a, b)` and `crosses_below(a, b)`, with an optional
//! third argument (bars the cross holds for), and `abs(x)`; every other name is an
//! indicator, or one of the variables the caller offers (an alert rule's `score`).

use super::Error;
use super::catalog::{self, ABS, CROSSES, Indicator, MAX_PERIOD};
use super::lex::{CmpOp, Tok, tokens};

/// Arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// Which way a cross goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The first passes the second upwards.
    Above,
    /// The first passes the second downwards.
    Below,
}

/// A parsed expression and the column it starts at.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub node: Node,
    pub col: usize,
}

/// What an expression is.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Num(f64),
    Ind(Indicator),
    Neg(Box<Expr>),
    Arith(Arith, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// Holds on the bar where the first passes the second, and while it stays past it
    /// for the given number of bars in all.
    Cross(Dir, u32, Box<Expr>, Box<Expr>),
    /// The absolute value.
    Abs(Box<Expr>),
    /// The caller's variable `n`.
    Var(u8),
}

/// An expression's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A value.
    Number,
    /// Holds or not: a comparison or a cross.
    Condition,
}

impl Expr {
    /// Its type; the operands' types were checked when it was built.
    pub fn ty(&self) -> Type {
        match self.node {
            Node::Cmp(..) | Node::Cross(..) => Type::Condition,
            _ => Type::Number,
        }
    }
}

/// Parses `text` as one expression in which the names `vars` are variables (before any
/// indicator of the same name written without arguments).
pub fn parse_with(text: &str, vars: &[&str]) -> Result<Expr, Error> {
    let toks = tokens(text)?;
    let mut p = Parser { toks, at: 0, vars };
    let expr = p.expr()?;
    match p.peek() {
        Tok::End => Ok(expr),
        Tok::Cmp(op) => Err(Error::at(
            p.col(),
            format!(
                "comparisons do not chain (`{}` after a comparison); write two conditions",
                op.symbol()
            ),
        )),
        _ => Err(Error::at(
            p.col(),
            format!("expected an operator or the end, found {}", p.describe()),
        )),
    }
}

struct Parser<'v> {
    toks: Vec<(Tok, usize)>,
    at: usize,
    vars: &'v [&'v str],
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn col(&self) -> usize {
        self.toks[self.at].1
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn describe(&self) -> String {
        match self.peek() {
            Tok::Num(n) => format!("the number {n}"),
            Tok::Ident(name) => format!("`{name}`"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Plus => "`+`".into(),
            Tok::Minus => "`-`".into(),
            Tok::Star => "`*`".into(),
            Tok::Slash => "`/`".into(),
            Tok::Cmp(op) => format!("`{}`", op.symbol()),
            Tok::End => "the end".into(),
        }
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), Error> {
        if *self.peek() == want {
            self.bump();
            Ok(())
        } else {
            Err(Error::at(
                self.col(),
                format!("expected {what}, found {}", self.describe()),
            ))
        }
    }

    fn expr(&mut self) -> Result<Expr, Error> {
        let left = self.sum()?;
        let Tok::Cmp(op) = *self.peek() else {
            return Ok(left);
        };
        self.bump();
        let right = self.sum()?;
        number(&left, "a comparison's left side")?;
        number(&right, "a comparison's right side")?;
        Ok(Expr {
            col: left.col,
            node: Node::Cmp(op, Box::new(left), Box::new(right)),
        })
    }

    fn sum(&mut self) -> Result<Expr, Error> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => Arith::Add,
                Tok::Minus => Arith::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.product()?;
            left = arith(op, left, right)?;
        }
    }

    fn product(&mut self) -> Result<Expr, Error> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => Arith::Mul,
                Tok::Slash => Arith::Div,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = arith(op, left, right)?;
        }
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        if *self.peek() == Tok::Minus {
            let (_, col) = self.bump();
            let inner = self.unary()?;
            number(&inner, "`-`")?;
            return Ok(Expr {
                col,
                node: Node::Neg(Box::new(inner)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let col = self.col();
        match self.peek().clone() {
            Tok::Num(n) => {
                self.bump();
                Ok(Expr {
                    col,
                    node: Node::Num(n),
                })
            }
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Ident(name) => {
                self.bump();
                self.call(&name, col)
            }
            _ => Err(Error::at(
                col,
                format!(
                    "expected a number, an indicator or `(`, found {}",
                    self.describe()
                ),
            )),
        }
    }

    /// `name`, `name()` or `name(args)`, whose name was just read at `col`.
    fn call(&mut self, name: &str, col: usize) -> Result<Expr, Error> {
        if *self.peek() != Tok::LParen {
            if let Some(k) = self.vars.iter().position(|v| *v == name) {
                return Ok(Expr {
                    col,
                    node: Node::Var(k as u8),
                });
            }
        }
        if let Some(dir) = cross_dir(name) {
            self.expect(Tok::LParen, &format!("`(` after {name}"))?;
            let a = self.expr()?;
            self.expect(Tok::Comma, &format!("`,` between {name}'s two arguments"))?;
            let b = self.expr()?;
            // An optional third argument: the cross holds for that many bars from the
            // one it happens on, while the first stays on its new side.
            let mut within = 1;
            if *self.peek() == Tok::Comma {
                self.bump();
                let at = self.col();
                within = match self.bump().0 {
                    Tok::Num(n)
                        if n.fract() == 0.0 && (1.0..=f64::from(MAX_PERIOD)).contains(&n) =>
                    {
                        n as u32
                    }
                    _ => {
                        return Err(Error::at(
                            at,
                            format!("{name}'s bars are a whole number from 1 to {MAX_PERIOD}"),
                        ));
                    }
                };
            }
            self.expect(Tok::RParen, "`)`")?;
            number(&a, &format!("{name}'s first argument"))?;
            number(&b, &format!("{name}'s second argument"))?;
            return Ok(Expr {
                col,
                node: Node::Cross(dir, within, Box::new(a), Box::new(b)),
            });
        }
        if name == ABS {
            self.expect(Tok::LParen, "`(` after abs")?;
            let inner = self.expr()?;
            self.expect(Tok::RParen, "`)`")?;
            number(&inner, "abs")?;
            return Ok(Expr {
                col,
                node: Node::Abs(Box::new(inner)),
            });
        }
        if !catalog::is_indicator(name) {
            return Err(catalog::unknown(name, col, self.vars));
        }
        let mut args = Vec::new();
        if *self.peek() == Tok::LParen {
            self.bump();
            while *self.peek() != Tok::RParen {
                if !args.is_empty() {
                    self.expect(Tok::Comma, "`,` or `)`")?;
                }
                let at = self.col();
                match self.bump().0 {
                    Tok::Num(n) => args.push((n, at)),
                    _ => {
                        return Err(Error::at(
                            at,
                            format!("{name}'s parameters are plain numbers"),
                        ));
                    }
                }
            }
            self.bump();
        }
        // A missing argument list is checked by `indicator`, which names the parameters.
        Ok(Expr {
            col,
            node: Node::Ind(catalog::indicator(name, &args, col)?),
        })
    }
}

fn cross_dir(name: &str) -> Option<Dir> {
    match name {
        n if n == CROSSES[0] => Some(Dir::Above),
        n if n == CROSSES[1] => Some(Dir::Below),
        _ => None,
    }
}

fn arith(op: Arith, left: Expr, right: Expr) -> Result<Expr, Error> {
    let what = match op {
        Arith::Add => "`+`",
        Arith::Sub => "`-`",
        Arith::Mul => "`*`",
        Arith::Div => "`/`",
    };
    number(&left, what)?;
    number(&right, what)?;
    Ok(Expr {
        col: left.col,
        node: Node::Arith(op, Box::new(left), Box::new(right)),
    })
}

/// `e` must be a number where `what` takes one.
fn number(e: &Expr, what: &str) -> Result<(), Error> {
    match e.ty() {
        Type::Number => Ok(()),
        Type::Condition => Err(Error::at(
            e.col,
            format!("{what} takes a number, not a condition"),
        )),
    }
}
