//! A lexer that follows PostgreSQL's own lexical rules (the backend's `scan.l`).
//!
//! The statement summary is a security boundary: if this lexer and the server disagree about where a
//! string, comment or identifier ends, a client could hide a statement from the read-only policy. So the
//! rules here mirror the server's exactly where it matters (string, comment, quote and dollar-quote
//! boundaries, what counts as whitespace and as an identifier character), and are merely close enough
//! where it does not (how operators and malformed numbers are split).
//!
//! The lexer works on bytes, as the server does: every byte >= 0x80 is an identifier character, and only
//! ASCII space, tab, newline, carriage return, form feed and vertical tab are whitespace. It never fails:
//! an unterminated construct runs to the end of the input and is marked `unterminated`.

/// Which flavour of string constant a [`TokenKind::String`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringKind {
    /// `'...'`: a backslash is an ordinary character, unless `standard_conforming_strings` is off.
    Standard,
    /// `N'...'`: a national character string, lexed like a `'...'` one.
    National,
    /// `E'...'`: backslash escapes, so `\'` does not end it.
    Escape,
    /// `U&'...'`: Unicode escapes (the escape character never ends the string).
    Unicode,
    /// `B'...'`: a bit string.
    Bit,
    /// `X'...'`: a hexadecimal bit string.
    Hex,
    /// `$tag$...$tag$` or `$$...$$`.
    Dollar,
}

/// What a [`Token`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A run of ASCII whitespace.
    Whitespace,
    /// A `-- ...` comment (without its newline) or a nested `/* ... */` comment.
    Comment,
    /// An unquoted identifier or keyword.
    Word,
    /// A quoted identifier, `"..."`, or with `unicode` a `U&"..."` one.
    QuotedIdent {
        /// Whether it is a `U&"..."` identifier, whose escapes depend on a following `UESCAPE`.
        unicode: bool,
    },
    /// A string constant, including any continuation segments (`'a'` newline `'b'`).
    String(StringKind),
    /// A numeric constant.
    Number,
    /// A positional parameter, `$1`.
    Param,
    /// A run of operator characters.
    Operator,
    /// Punctuation (`( ) [ ] , . ; :` and `::`) and any other single character.
    Punct,
}

/// One lexical token: its kind and its byte range in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What the token is.
    pub kind: TokenKind,
    /// Byte offset of its first byte.
    pub start: usize,
    /// Byte offset just past its last byte.
    pub end: usize,
    /// The input ended before the token's closing delimiter (a string, quoted identifier or comment).
    pub unterminated: bool,
    /// A string taking backslash escapes (`E'...'`, or any plain one with `standard_conforming_strings`
    /// off) in which a backslash directly follows a byte >= 0x80. Under a client encoding
    /// such as SJIS, BIG5 or GBK that byte pair is one character, so the server would not see an escape
    /// there and would end the string elsewhere: the lexer cannot know the encoding, so it says so.
    pub ambiguous: bool,
}

impl Token {
    /// The token's text within `sql` (the string it was lexed from); "" if the range does not fit.
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        sql.get(self.start..self.end).unwrap_or("")
    }

    /// Whether the token is whitespace or a comment, which separate tokens but mean nothing.
    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, TokenKind::Whitespace | TokenKind::Comment)
    }
}

/// Splits `sql` into tokens, whitespace and comments included, covering the whole input in order, as a
/// server with `standard_conforming_strings = on` (PostgreSQL's default) would.
pub fn tokens(sql: &str) -> Vec<Token> {
    tokens_with(sql, true)
}

/// [`tokens`] for a session whose `standard_conforming_strings` is `standard_strings`: when it is off, a
/// plain `'...'` or `N'...'` string takes backslash escapes like an `E'...'` one, so `'\''` does not end it.
pub fn tokens_with(sql: &str, standard_strings: bool) -> Vec<Token> {
    let mut out = Vec::new();
    tokens_into(sql, standard_strings, &mut out);
    out
}

/// [`tokens_with`] into `out` (cleared first), whose allocation a caller may reuse.
pub fn tokens_into(sql: &str, standard_strings: bool, out: &mut Vec<Token>) {
    out.clear();
    // About one token per four bytes of typical SQL (words, spaces, punctuation).
    out.reserve(sql.len() / 4 + 4);
    out.extend(each_token(sql, standard_strings));
}

/// The tokens [`tokens_with`] lists, one at a time, for a reader that needs no list.
pub(super) fn each_token(sql: &str, standard_strings: bool) -> impl Iterator<Item = Token> + '_ {
    let mut lexer = Lexer {
        bytes: sql.as_bytes(),
        pos: 0,
        standard_strings,
    };
    std::iter::from_fn(move || (lexer.pos < lexer.bytes.len()).then(|| lexer.next_token()))
}

/// [`each_token`] without the whitespace tokens: a run of whitespace is skipped where it starts, a byte
/// loop where a token each would cost a call (half the tokens of typical SQL are whitespace). Comments
/// are still returned. The other tokens are [`each_token`]'s exactly: whitespace ends no token early.
pub(super) fn each_nonspace_token(
    sql: &str,
    standard_strings: bool,
) -> impl Iterator<Item = Token> + '_ {
    let mut lexer = Lexer {
        bytes: sql.as_bytes(),
        pos: 0,
        standard_strings,
    };
    std::iter::from_fn(move || {
        while lexer.bytes.get(lexer.pos).is_some_and(|&b| is_space(b)) {
            lexer.pos += 1;
        }
        (lexer.pos < lexer.bytes.len()).then(|| lexer.next_token())
    })
}

/// Byte classes, one bit each, looked up in [`CLASSES`]: one load where the lexer's loops made several
/// comparisons per byte (and searched the operator characters for each).
const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const DIGIT: u8 = 4;
const DOLLAR: u8 = 8;
const OP: u8 = 16;

/// Each byte's classes (see [`class_of`]).
static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < table.len() {
        table[b] = class_of(b as u8);
        b += 1;
    }
    table
};

/// The classes of a byte, by PostgreSQL's rules (scan.l): whitespace is ASCII only (a U+00A0 is an
/// identifier character, not a space); every byte >= 0x80 may start an identifier.
const fn class_of(b: u8) -> u8 {
    let mut class = 0;
    if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        class |= SPACE;
    }
    if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
        class |= IDENT_START;
    }
    if b.is_ascii_digit() {
        class |= DIGIT;
    }
    if b == b'$' {
        class |= DOLLAR;
    }
    if matches!(
        b,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    ) {
        class |= OP;
    }
    class
}

fn has(b: u8, classes: u8) -> bool {
    CLASSES[usize::from(b)] & classes != 0
}

/// PostgreSQL's whitespace.
pub(super) fn is_space(b: u8) -> bool {
    has(b, SPACE)
}

fn is_ident_start(b: u8) -> bool {
    has(b, IDENT_START)
}

fn is_ident_cont(b: u8) -> bool {
    has(b, IDENT_START | DIGIT | DOLLAR)
}

/// Characters of a dollar-quote tag: identifier characters without `$`.
fn is_tag_char(b: u8) -> bool {
    has(b, IDENT_START | DIGIT)
}

fn is_op_char(b: u8) -> bool {
    has(b, OP)
}

/// How a quoted string's body treats quotes and backslashes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `''` is a quote; backslash is ordinary.
    Doubled,
    /// `''` is a quote; a backslash escapes the next byte.
    Escaped,
    /// The first quote ends it (bit strings).
    Plain,
}

struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The session's `standard_conforming_strings`.
    standard_strings: bool,
}

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn token(&self, kind: TokenKind, start: usize) -> Token {
        Token {
            kind,
            start,
            end: self.pos,
            unterminated: false,
            ambiguous: false,
        }
    }

    fn next_token(&mut self) -> Token {
        let start = self.pos;
        let b = self.bytes[start];
        let next = self.at(start + 1);
        match b {
            _ if is_space(b) => {
                while self.at(self.pos).is_some_and(is_space) {
                    self.pos += 1;
                }
                self.token(TokenKind::Whitespace, start)
            }
            b'-' if next == Some(b'-') => {
                self.skip_line_comment();
                self.token(TokenKind::Comment, start)
            }
            b'/' if next == Some(b'*') => self.block_comment(start),
            b'\'' => self.string(start, 1, StringKind::Standard),
            b'"' => self.quoted_ident(start, 1, false),
            b'$' => self.dollar(start),
            b'0'..=b'9' => self.number(start),
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => self.number(start),
            _ if is_ident_start(b) => self.word_or_prefixed(start),
            _ if is_op_char(b) => self.operator(start),
            b':' if next == Some(b':') => {
                self.pos += 2;
                self.token(TokenKind::Punct, start)
            }
            _ => {
                // Only ASCII reaches here (bytes >= 0x80 start identifiers), so one byte is one char.
                self.pos += 1;
                self.token(TokenKind::Punct, start)
            }
        }
    }

    /// Skips a `--` comment up to (not including) the end of line.
    fn skip_line_comment(&mut self) {
        while self.at(self.pos).is_some_and(|c| c != b'\n' && c != b'\r') {
            self.pos += 1;
        }
    }

    /// `/* ... */`, which nests in PostgreSQL: `/* a /* b */ c */` is one comment.
    fn block_comment(&mut self, start: usize) -> Token {
        self.pos = start + 2;
        let mut depth = 1usize;
        while self.pos < self.bytes.len() {
            match (self.bytes[self.pos], self.at(self.pos + 1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return self.token(TokenKind::Comment, start);
                    }
                }
                _ => self.pos += 1,
            }
        }
        Token {
            unterminated: true,
            ..self.token(TokenKind::Comment, start)
        }
    }

    /// An identifier, a keyword, or one of the prefixed constants `E'`, `B'`, `X'`, `N'`, `U&'`, `U&"`.
    fn word_or_prefixed(&mut self, start: usize) -> Token {
        let b = self.bytes[start].to_ascii_uppercase();
        let next = self.at(start + 1);
        if next == Some(b'\'') {
            let kind = match b {
                b'E' => Some(StringKind::Escape),
                b'B' => Some(StringKind::Bit),
                b'X' => Some(StringKind::Hex),
                b'N' => Some(StringKind::National),
                _ => None,
            };
            if let Some(kind) = kind {
                return self.string(start, 2, kind);
            }
        }
        if b == b'U' && next == Some(b'&') {
            match self.at(start + 2) {
                Some(b'\'') => return self.string(start, 3, StringKind::Unicode),
                Some(b'"') => return self.quoted_ident(start, 3, true),
                _ => {}
            }
        }
        self.pos = start + 1;
        while self.at(self.pos).is_some_and(is_ident_cont) {
            self.pos += 1;
        }
        self.token(TokenKind::Word, start)
    }

    /// A quoted string whose opening quote ends at `start + open`.
    fn string(&mut self, start: usize, open: usize, kind: StringKind) -> Token {
        let body = match kind {
            StringKind::Escape => Body::Escaped,
            StringKind::Standard | StringKind::National if !self.standard_strings => Body::Escaped,
            StringKind::Bit | StringKind::Hex => Body::Plain,
            _ => Body::Doubled,
        };
        self.pos = start + open;
        let mut ambiguous = false;
        loop {
            let (closed, amb) = self.quoted_body(body);
            ambiguous |= amb;
            if !closed {
                let tok = self.token(TokenKind::String(kind), start);
                return Token {
                    unterminated: true,
                    ambiguous,
                    ..tok
                };
            }
            match self.continuation(self.pos) {
                Some(after_quote) => self.pos = after_quote,
                None => {
                    return Token {
                        ambiguous,
                        ..self.token(TokenKind::String(kind), start)
                    };
                }
            }
        }
    }

    /// Scans one quoted segment's body up to and including its closing quote. Returns whether the
    /// quote was found, and whether an escape was ambiguous (see [`Token::ambiguous`]).
    fn quoted_body(&mut self, body: Body) -> (bool, bool) {
        let mut ambiguous = false;
        while let Some(c) = self.at(self.pos) {
            if c == b'\\' && body == Body::Escaped {
                if self.pos > 0 && self.bytes[self.pos - 1] >= 0x80 {
                    ambiguous = true;
                }
                self.pos = (self.pos + 2).min(self.bytes.len());
                continue;
            }
            if c == b'\'' {
                if body != Body::Plain && self.at(self.pos + 1) == Some(b'\'') {
                    self.pos += 2;
                    continue;
                }
                self.pos += 1;
                return (true, ambiguous);
            }
            self.pos += 1;
        }
        (false, ambiguous)
    }

    /// If a string continues at `from` (whitespace that includes a newline, `--` comments allowed, then
    /// a quote), returns the position just after that quote. Block comments do not continue a string.
    fn continuation(&self, from: usize) -> Option<usize> {
        let mut i = from;
        let mut newline = false;
        loop {
            match self.at(i)? {
                b' ' | b'\t' | 0x0b | 0x0c => i += 1,
                b'\n' | b'\r' => {
                    newline = true;
                    i += 1;
                }
                b'-' if self.at(i + 1) == Some(b'-') => {
                    while self.at(i).is_some_and(|c| c != b'\n' && c != b'\r') {
                        i += 1;
                    }
                }
                b'\'' if newline => return Some(i + 1),
                _ => return None,
            }
        }
    }

    /// `"..."` with `""` for a quote; `open` is the length of the opening (`"` or `U&"`).
    fn quoted_ident(&mut self, start: usize, open: usize, unicode: bool) -> Token {
        self.pos = start + open;
        let kind = TokenKind::QuotedIdent { unicode };
        while let Some(c) = self.at(self.pos) {
            self.pos += 1;
            if c == b'"' {
                if self.at(self.pos) == Some(b'"') {
                    self.pos += 1;
                    continue;
                }
                return self.token(kind, start);
            }
        }
        Token {
            unterminated: true,
            ..self.token(kind, start)
        }
    }

    /// `$1` (a parameter), `$tag$...$tag$` / `$$...$$` (a dollar-quoted string), or a lone `$`.
    fn dollar(&mut self, start: usize) -> Token {
        let mut i = start + 1;
        if self.at(i).is_some_and(|c| c.is_ascii_digit()) {
            while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            self.pos = i;
            return self.token(TokenKind::Param, start);
        }
        while self.at(i).is_some_and(is_tag_char) {
            i += 1;
        }
        if self.at(i) != Some(b'$') {
            // `$foo` without a closing `$` is a lone `$` followed by whatever comes next.
            self.pos = start + 1;
            return self.token(TokenKind::Punct, start);
        }
        let tag = &self.bytes[start..=i];
        let kind = TokenKind::String(StringKind::Dollar);
        // Every `$` in the body may start the closing tag; a tag holds no `$`, so each comparison stops
        // by the next `$` and the search stays linear.
        let mut j = i + 1;
        while j < self.bytes.len() {
            if self.bytes[j] == b'$' && self.bytes[j..].starts_with(tag) {
                self.pos = j + tag.len();
                return self.token(kind, start);
            }
            j += 1;
        }
        self.pos = self.bytes.len();
        Token {
            unterminated: true,
            ..self.token(kind, start)
        }
    }

    /// A numeric constant: decimal (with `_` separators, a fraction and an exponent) or `0x`/`0o`/`0b`.
    /// Trailing identifier characters are left for the next token (the server rejects them anyway).
    fn number(&mut self, start: usize) -> Token {
        self.pos = start;
        let radix = match (
            self.bytes[start],
            self.at(start + 1).map(|c| c.to_ascii_lowercase()),
        ) {
            (b'0', Some(b'x')) => 16,
            (b'0', Some(b'o')) => 8,
            (b'0', Some(b'b')) => 2,
            _ => 10,
        };
        let is_digit = |c: Option<u8>| c.is_some_and(|c| (c as char).is_digit(radix));
        let first = if self.at(start + 2) == Some(b'_') {
            start + 3
        } else {
            start + 2
        };
        if radix != 10 && is_digit(self.at(first)) {
            self.pos = start + 2;
            self.digits(radix);
            return self.token(TokenKind::Number, start);
        }
        self.digits(10);
        if self.at(self.pos) == Some(b'.') && self.at(self.pos + 1) != Some(b'.') {
            self.pos += 1;
            self.digits(10);
        }
        if self.at(self.pos).is_some_and(|c| c == b'e' || c == b'E') {
            let mut i = self.pos + 1;
            if self.at(i).is_some_and(|c| c == b'+' || c == b'-') {
                i += 1;
            }
            if self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                self.pos = i;
                self.digits(10);
            }
        }
        self.token(TokenKind::Number, start)
    }

    /// Digits of `radix`, with single `_` separators between them.
    fn digits(&mut self, radix: u32) {
        let is_digit = |c: Option<u8>| c.is_some_and(|c| (c as char).is_digit(radix));
        let after_alnum = |i: usize| i > 0 && self.bytes[i - 1].is_ascii_alphanumeric();
        while is_digit(self.at(self.pos))
            || (self.at(self.pos) == Some(b'_')
                && is_digit(self.at(self.pos + 1))
                && after_alnum(self.pos))
        {
            self.pos += 1;
        }
    }

    /// A run of operator characters, cut before any `--` or `/*`, which start comments.
    fn operator(&mut self, start: usize) -> Token {
        self.pos = start + 1;
        while let Some(c) = self.at(self.pos) {
            let next = self.at(self.pos + 1);
            if !is_op_char(c)
                || (c == b'-' && next == Some(b'-'))
                || (c == b'/' && next == Some(b'*'))
            {
                break;
            }
            self.pos += 1;
        }
        self.token(TokenKind::Operator, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds and texts of the significant tokens.
    fn sig(sql: &str) -> Vec<(TokenKind, &str)> {
        tokens(sql)
            .into_iter()
            .filter(|t| !t.is_trivia())
            .map(|t| (t.kind, t.text(sql)))
            .collect()
    }

    fn texts(sql: &str) -> Vec<&str> {
        sig(sql).into_iter().map(|(_, t)| t).collect()
    }

    fn one(sql: &str) -> Token {
        let toks = tokens(sql);
        assert_eq!(toks.len(), 1, "{sql:?}: {toks:?}");
        toks[0]
    }

    const STD: TokenKind = TokenKind::String(StringKind::Standard);

    #[test]
    fn byte_classes_follow_the_servers_definitions() {
        // scan.l: space [ \t\n\r\f\v]; ident_start [A-Za-z\200-\377_]; ident_cont adds [0-9\$];
        // self/op_chars [~!@#^&|`?+\-*/%<>=].
        for b in 0..=u8::MAX {
            let ident_start = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
            assert_eq!(is_space(b), b" \t\n\r\x0b\x0c".contains(&b), "{b:#x}");
            assert_eq!(is_ident_start(b), ident_start, "{b:#x}");
            assert_eq!(
                is_ident_cont(b),
                ident_start || b.is_ascii_digit() || b == b'$',
                "{b:#x}"
            );
            assert_eq!(is_tag_char(b), ident_start || b.is_ascii_digit(), "{b:#x}");
            assert_eq!(is_op_char(b), b"~!@#^&|`?+-*/%<>=".contains(&b), "{b:#x}");
        }
    }

    #[test]
    fn covers_input_in_order() {
        let sql = "SELECT a, \"b\" FROM t -- c\n WHERE x = $1 /* d */ AND y = 'e'";
        let toks = tokens(sql);
        let mut at = 0;
        for t in &toks {
            assert_eq!(t.start, at);
            assert!(t.end > t.start);
            at = t.end;
        }
        assert_eq!(at, sql.len());
        assert_eq!(
            texts(sql),
            [
                "SELECT", "a", ",", "\"b\"", "FROM", "t", "WHERE", "x", "=", "$1", "AND", "y", "=",
                "'e'"
            ]
        );
    }

    #[test]
    fn skipping_whitespace_leaves_the_other_tokens_as_they_were() {
        // Random runs of fragments where whitespace meets every other kind of token, under both
        // settings of standard_conforming_strings.
        const PIECES: &[&str] = &[
            " ",
            "\t\n",
            "\x0b\x0c\r",
            "SELECT",
            "e'",
            "'a\\'",
            "'",
            "\"q\"",
            "\"",
            "--c\n",
            "--",
            "/*",
            "*/",
            "$$",
            "$a$",
            "$1",
            "1.5",
            "1e",
            ".",
            "-",
            "+",
            "(",
            ")",
            ";",
            "::",
            "U&'x'",
            "\u{a0}",
            "x",
        ];
        let mut next = crate::sql::test_rng(0x9E37_79B9_7F4A_7C15_u64);
        for _ in 0..5_000 {
            let sql: String = (0..next(24)).map(|_| PIECES[next(PIECES.len())]).collect();
            for standard in [true, false] {
                let all: Vec<Token> = each_token(&sql, standard)
                    .filter(|t| t.kind != TokenKind::Whitespace)
                    .collect();
                let skipped: Vec<Token> = each_nonspace_token(&sql, standard).collect();
                assert_eq!(skipped, all, "{sql:?} (standard strings {standard})");
            }
        }
    }

    #[test]
    fn empty_input() {
        assert!(tokens("").is_empty());
    }

    #[test]
    fn line_comments_stop_before_the_newline() {
        let toks = tokens("-- a ; b\nx");
        assert_eq!(toks[0].kind, TokenKind::Comment);
        assert_eq!(toks[0].text("-- a ; b\nx"), "-- a ; b");
        assert_eq!(texts("a --\rb"), ["a", "b"]);
        assert_eq!(one("-- to the end").kind, TokenKind::Comment);
    }

    #[test]
    fn block_comments_nest() {
        let sql = "/* a /* b */ ; DELETE */ x";
        assert_eq!(texts(sql), ["x"]);
        assert_eq!(tokens(sql)[0].text(sql), "/* a /* b */ ; DELETE */");
        // `//*` inside a comment still opens a nested one; `/*/` does not close.
        assert_eq!(texts("/* //* */ y */ z"), ["z"]);
        assert_eq!(texts("/*/ x */ z"), ["z"]);
        assert_eq!(texts("/* **/ z"), ["z"]);
        let t = one("/* a /* b */");
        assert!(t.unterminated && t.kind == TokenKind::Comment);
        assert!(one("/*").unterminated);
        assert!(one("/*/").unterminated);
    }

    #[test]
    fn operators_stop_at_comment_starts() {
        assert_eq!(
            sig("+/* c */1"),
            [(TokenKind::Operator, "+"), (TokenKind::Number, "1")]
        );
        assert_eq!(
            sig("1<--c\n2"),
            [
                (TokenKind::Number, "1"),
                (TokenKind::Operator, "<"),
                (TokenKind::Number, "2")
            ]
        );
        assert_eq!(texts("a*/*c*/b"), ["a", "*", "b"]);
        assert_eq!(texts("a::int"), ["a", "::", "int"]);
        assert_eq!(texts("a<>b"), ["a", "<>", "b"]);
        assert_eq!(texts("a */ b"), ["a", "*/", "b"]);
    }

    #[test]
    fn standard_strings() {
        assert_eq!(sig("'it''s'"), [(STD, "'it''s'")]);
        // Standard-conforming: a backslash is ordinary and the quote after it ends the string.
        assert_eq!(texts(r"'a\' x"), [r"'a\'", "x"]);
        assert_eq!(texts("'a;b' ;"), ["'a;b'", ";"]);
        let t = one("'abc");
        assert!(t.unterminated);
        assert!(one("'").unterminated);
        assert!(one("'a''").unterminated);
    }

    #[test]
    fn string_continuation_needs_a_newline() {
        assert_eq!(texts("'a'\n'b'"), ["'a'\n'b'"]);
        assert_eq!(texts("'a' \t\r\n  'b'"), ["'a' \t\r\n  'b'"]);
        assert_eq!(texts("'a' -- c'\n'b'"), ["'a' -- c'\n'b'"]);
        assert_eq!(texts("'a'\n-- c\n'b'"), ["'a'\n-- c\n'b'"]);
        assert_eq!(texts("'a' 'b'"), ["'a'", "'b'"]);
        assert_eq!(texts("'a'\n/* c */ 'b'"), ["'a'", "'b'"]);
        assert_eq!(texts("'a'\nx"), ["'a'", "x"]);
        // Continuation of an E string is lexed as an E string: `\'` does not end it.
        assert_eq!(texts("E'a'\n'\\'' x"), ["E'a'\n'\\''", "x"]);
        assert_eq!(texts("'a'\n'\\' x"), ["'a'\n'\\'", "x"]);
    }

    #[test]
    fn escape_strings() {
        let k = TokenKind::String(StringKind::Escape);
        assert_eq!(sig(r"E'a\'b' x"), [(k, r"E'a\'b'"), (TokenKind::Word, "x")]);
        assert_eq!(sig(r"e'\\' x"), [(k, r"e'\\'"), (TokenKind::Word, "x")]);
        assert_eq!(texts(r"E'it''s'"), [r"E'it''s'"]);
        assert!(one(r"E'abc\").unterminated);
        assert!(one(r"E'abc\'").unterminated);
        // A word ending in e is not a prefix.
        assert_eq!(texts("somee'x'"), ["somee", "'x'"]);
    }

    #[test]
    fn escape_after_non_ascii_is_ambiguous() {
        assert!(one("E'\u{95}\\''").ambiguous);
        assert!(one("E'é\\n'").ambiguous);
        assert!(!one("E'é \\n'").ambiguous);
        assert!(!one("'é\\'").ambiguous);
        assert!(!one("E'\\n'").ambiguous);
    }

    #[test]
    fn prefixed_strings() {
        let s = |k| TokenKind::String(k);
        assert_eq!(sig("B'101'")[0], (s(StringKind::Bit), "B'101'"));
        assert_eq!(sig("x'FF'")[0], (s(StringKind::Hex), "x'FF'"));
        assert_eq!(sig("n'x'")[0], (s(StringKind::National), "n'x'"));
        assert_eq!(sig("U&'\\0041'")[0], (s(StringKind::Unicode), "U&'\\0041'"));
        assert_eq!(sig("u&'a''b'")[0], (s(StringKind::Unicode), "u&'a''b'"));
        // Bit strings have no doubled quote: the second quote starts another string.
        assert_eq!(texts("B'10''01'"), ["B'10'", "'01'"]);
        assert_eq!(texts("U&x"), ["U", "&", "x"]);
        assert_eq!(texts("U&'a' UESCAPE '!'"), ["U&'a'", "UESCAPE", "'!'"]);
    }

    #[test]
    fn quoted_identifiers() {
        let q = TokenKind::QuotedIdent { unicode: false };
        let u = TokenKind::QuotedIdent { unicode: true };
        assert_eq!(
            sig("\"a\"\"b\" x"),
            [(q, "\"a\"\"b\""), (TokenKind::Word, "x")]
        );
        assert_eq!(sig("U&\"a\""), [(u, "U&\"a\"")]);
        assert_eq!(sig("u&\"a\""), [(u, "u&\"a\"")]);
        assert_eq!(texts("\"x;'y\" z"), ["\"x;'y\"", "z"]);
        assert!(one("\"abc").unterminated);
        assert!(one("\"a\"\"").unterminated);
    }

    #[test]
    fn dollar_quotes_and_parameters() {
        let d = TokenKind::String(StringKind::Dollar);
        assert_eq!(sig("$$a;'b$$ x"), [(d, "$$a;'b$$"), (TokenKind::Word, "x")]);
        assert_eq!(sig("$a$ $$ $b$ $a$"), [(d, "$a$ $$ $b$ $a$")]);
        assert_eq!(texts("$a$x$b$a$ y"), ["$a$x$b$a$", "y"]);
        assert_eq!(texts("$A$ $a$ $A$"), ["$A$ $a$ $A$"]);
        assert_eq!(texts("$_1é$ x $_1é$"), ["$_1é$ x $_1é$"]);
        assert_eq!(sig("$1"), [(TokenKind::Param, "$1")]);
        assert_eq!(
            sig("$12x"),
            [(TokenKind::Param, "$12"), (TokenKind::Word, "x")]
        );
        // `$foo` with no closing `$` is a lone `$`; `$` continues identifiers.
        assert_eq!(
            sig("$foo"),
            [(TokenKind::Punct, "$"), (TokenKind::Word, "foo")]
        );
        assert_eq!(texts("foo$$bar$$"), ["foo$$bar$$"]);
        assert!(one("$$abc").unterminated);
        assert!(one("$q$abc$q").unterminated);
        assert_eq!(texts("$"), ["$"]);
    }

    #[test]
    fn numbers() {
        for n in [
            "1", "1.5", "1.", ".5", "1e5", "1.5E-3", "1_000", "0x1F", "0o17", "0b101", "0X_1F",
        ] {
            assert_eq!(sig(n), [(TokenKind::Number, n)], "{n}");
        }
        // Malformed exponents leave the letter for the next token, as the server's lexer backs off.
        assert_eq!(texts("1e--x\ny"), ["1", "e", "y"]);
        assert_eq!(texts("1ex"), ["1", "ex"]);
        assert_eq!(texts("1..5"), ["1", ".", ".5"]);
        assert_eq!(texts("1._5"), ["1.", "_5"]);
        assert_eq!(texts("1e'x'"), ["1", "e'x'"]);
        assert_eq!(texts("0x"), ["0", "x"]);
    }

    #[test]
    fn whitespace_is_ascii_only() {
        assert_eq!(texts("a\u{a0}b c"), ["a\u{a0}b", "c"]);
        assert_eq!(texts("a\u{3000}b"), ["a\u{3000}b"]);
        assert_eq!(texts("a\x0bb\x0cc"), ["a", "b", "c"]);
        assert_eq!(texts("\u{a0}select"), ["\u{a0}select"]);
    }

    #[test]
    fn other_characters_are_single_punctuation() {
        assert_eq!(
            sig("\\{}"),
            [
                (TokenKind::Punct, "\\"),
                (TokenKind::Punct, "{"),
                (TokenKind::Punct, "}")
            ]
        );
        assert_eq!(texts("a\0b"), ["a", "\0", "b"]);
    }
}
