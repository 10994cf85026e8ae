//! Tokens of the scan language, each with the column it starts at (1-based, in
//! characters), so an error can point at it.

use super::Error;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Num(f64),
    Ident(String),
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Cmp(CmpOp),
    End,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    /// As written.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

/// The tokens of `text` and their columns, ending with [`Tok::End`].
pub fn tokens(text: &str) -> Result<Vec<(Tok, usize)>, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // An exponent, as in 1e-3.
            if i < chars.len() && matches!(chars[i], 'e' | 'E') {
                let mut j = i + 1;
                if j < chars.len() && matches!(chars[j], '+' | '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let literal: String = chars[start..i].iter().collect();
            let value: f64 = literal
                .parse()
                .map_err(|_| Error::at(col, format!("`{literal}` is not a number")))?;
            out.push((Tok::Num(value), col));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), col));
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            ('<', Some('=')) => (Tok::Cmp(CmpOp::Le), 2),
            ('>', Some('=')) => (Tok::Cmp(CmpOp::Ge), 2),
            ('=', Some('=')) => (Tok::Cmp(CmpOp::Eq), 2),
            ('!', Some('=')) => (Tok::Cmp(CmpOp::Ne), 2),
            ('<', _) => (Tok::Cmp(CmpOp::Lt), 1),
            ('>', _) => (Tok::Cmp(CmpOp::Gt), 1),
            ('=', _) => return Err(Error::at(col, "`=` is not a comparison; write `==`")),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            (',', _) => (Tok::Comma, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('*', _) => (Tok::Star, 1),
            ('/', _) => (Tok::Slash, 1),
            _ => return Err(Error::at(col, format!("unexpected character `{c}`"))),
        };
        out.push((tok, col));
        i += len;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_columns() {
        let toks = tokens("rsi(14) <= 30.5e0").unwrap();
        let want = [
            (Tok::Ident("rsi".into()), 1),
            (Tok::LParen, 4),
            (Tok::Num(14.0), 5),
            (Tok::RParen, 7),
            (Tok::Cmp(CmpOp::Le), 9),
            (Tok::Num(30.5), 12),
            (Tok::End, 18),
        ];
        assert_eq!(toks, want);
    }

    #[test]
    fn bad_characters_and_numbers_say_where() {
        for (text, col, needle) in [
            ("close # 3", 7, "unexpected character `#`"),
            ("close = 3", 7, "write `==`"),
            ("1.2.3 > 0", 1, "`1.2.3` is not a number"),
        ] {
            let err = tokens(text).unwrap_err();
            assert_eq!(err.col, col, "{text}");
            assert!(err.message.contains(needle), "{text}: {}", err.message);
        }
    }
}
