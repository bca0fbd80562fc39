//! `${VAR}` and `${VAR:-default}` substitution, done on the raw text before TOML
//! parsing. `$${` writes a literal `${`. Comments are left alone, so a commented-out
//! line never fails on an unset variable.
//!
//! A value is substituted as a value, never as TOML: inside a `"…"` or `"""…"""`
//! string it is escaped for that string (a `"` or a line break in it cannot end
//! the string or start a new key); a `'…'` or `'''…'''` string, which has no
//! escapes, refuses a value it cannot hold; outside strings only a plain scalar
//! (a number, a boolean, a date) is accepted. A default (`:-…`) is file text and
//! is kept as written. Every replacement is recorded as a `Splice`, so that
//! positions in the substituted text map back to the file as written.

use std::borrow::Cow;
use std::ops::Range;

/// A variable reference that could not be substituted: byte offset in the
/// original text, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubstError {
    pub offset: usize,
    pub message: String,
}

/// One replacement: `raw` bytes of the file became `out` bytes of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Splice {
    pub out: Range<usize>,
    pub raw: Range<usize>,
}

/// The substituted text, the errors, and where the text differs from the file.
pub(crate) struct Substituted {
    pub text: String,
    pub errors: Vec<SubstError>,
    pub splices: Vec<Splice>,
}

/// The offset in the file as written of byte `offset` of the substituted text:
/// inside a substituted value, the start of its `${`.
pub(crate) fn raw_offset(splices: &[Splice], offset: usize) -> usize {
    let i = splices.partition_point(|s| s.out.start <= offset);
    match i.checked_sub(1).map(|i| &splices[i]) {
        None => offset,
        Some(s) if offset < s.out.end => s.raw.start,
        Some(s) => s.raw.end + (offset - s.out.end),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Lex {
    Normal,
    Comment,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

/// Substitutes variables from `env`.
pub(crate) fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Substituted {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut splices: Vec<Splice> = Vec::new();
    let mut state = Lex::Normal;
    let mut i = 0;
    let mut copied = 0; // bytes of `text` already pushed to `out`
    while i < bytes.len() {
        let rest = &bytes[i..];
        match state {
            Lex::Comment => {
                if rest[0] == b'\n' {
                    state = Lex::Normal;
                }
                i += 1;
                continue;
            }
            Lex::Normal => {
                if rest[0] == b'#' {
                    state = Lex::Comment;
                    i += 1;
                    continue;
                }
                if rest.starts_with(b"\"\"\"") {
                    state = Lex::MultiBasic;
                    i += 3;
                    continue;
                }
                if rest.starts_with(b"'''") {
                    state = Lex::MultiLiteral;
                    i += 3;
                    continue;
                }
                if rest[0] == b'"' {
                    state = Lex::Basic;
                    i += 1;
                    continue;
                }
                if rest[0] == b'\'' {
                    state = Lex::Literal;
                    i += 1;
                    continue;
                }
            }
            Lex::Basic => {
                if rest[0] == b'\\' && rest.len() > 1 {
                    i += 2;
                    continue;
                }
                if rest[0] == b'"' || rest[0] == b'\n' {
                    state = Lex::Normal;
                    i += 1;
                    continue;
                }
            }
            Lex::Literal => {
                if rest[0] == b'\'' || rest[0] == b'\n' {
                    state = Lex::Normal;
                    i += 1;
                    continue;
                }
            }
            Lex::MultiBasic => {
                if rest[0] == b'\\' && rest.len() > 1 {
                    i += 2;
                    continue;
                }
                if rest.starts_with(b"\"\"\"") {
                    state = Lex::Normal;
                    i += 3;
                    continue;
                }
            }
            Lex::MultiLiteral => {
                if rest.starts_with(b"'''") {
                    state = Lex::Normal;
                    i += 3;
                    continue;
                }
            }
        }
        if rest.starts_with(b"$${") {
            out.push_str(&text[copied..i]);
            let at = out.len();
            out.push_str("${");
            splices.push(Splice {
                out: at..out.len(),
                raw: i..i + 3,
            });
            i += 3;
            copied = i;
            continue;
        }
        if rest.starts_with(b"${") {
            out.push_str(&text[copied..i]);
            let start = i;
            let out_start = out.len();
            let Some(close) = text[i + 2..].find(['}', '\n']).map(|p| p + i + 2) else {
                errors.push(SubstError {
                    offset: start,
                    message: "unterminated `${`: expected `}`".into(),
                });
                i = bytes.len();
                copied = i;
                splices.push(Splice {
                    out: out_start..out.len(),
                    raw: start..i,
                });
                break;
            };
            if bytes[close] == b'\n' {
                errors.push(SubstError {
                    offset: start,
                    message: "unterminated `${`: expected `}` before the end of the line".into(),
                });
                i = close;
                copied = close;
                splices.push(Splice {
                    out: out_start..out.len(),
                    raw: start..close,
                });
                continue;
            }
            let inner = &text[start + 2..close];
            let (name, default) = match inner.find(":-") {
                Some(p) => (&inner[..p], Some(&inner[p + 2..])),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errors.push(SubstError {
                    offset: start,
                    message: format!(
                        "invalid variable name `{name}` in `${{{inner}}}`; expected letters, digits and `_`"
                    ),
                });
            } else {
                match (env(name), default) {
                    (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                    (Some(v), _) => match encode(&v, state, name) {
                        Ok(v) => out.push_str(&v),
                        Err(message) => errors.push(SubstError {
                            offset: start,
                            message,
                        }),
                    },
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errors.push(SubstError {
                        offset: start,
                        message: format!(
                            "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
                        ),
                    }),
                }
            }
            i = close + 1;
            copied = i;
            splices.push(Splice {
                out: out_start..out.len(),
                raw: start..i,
            });
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied.min(text.len())..]);
    Substituted {
        text: out,
        errors,
        splices,
    }
}

/// `value` written for where it stands (`state`), or why it cannot be. The
/// messages name the variable, never the value (it may be a secret).
fn encode<'v>(value: &'v str, state: Lex, name: &str) -> Result<Cow<'v, str>, String> {
    let control = |c: char| c.is_control() && c != '\t';
    match state {
        Lex::Normal | Lex::Comment => {
            let scalar = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-'));
            if scalar {
                Ok(Cow::Borrowed(value))
            } else {
                Err(format!(
                    "the value of `{name}` is not a plain number, boolean or date, so it cannot \
                     stand outside a string: write \"${{{name}}}\""
                ))
            }
        }
        Lex::Basic => Ok(escape(value, false)),
        Lex::MultiBasic => Ok(escape(value, true)),
        Lex::Literal => {
            if value.contains('\'') || value.chars().any(control) {
                Err(format!(
                    "the value of `{name}` holds a `'` or a line break, which a '…' string \
                     cannot hold: write \"${{{name}}}\""
                ))
            } else {
                Ok(Cow::Borrowed(value))
            }
        }
        Lex::MultiLiteral => {
            if value.contains("'''") || value.chars().any(|c| control(c) && c != '\n') {
                Err(format!(
                    "the value of `{name}` holds `'''` or a control character, which a \
                     '''…''' string cannot hold: write \"\"\"${{{name}}}\"\"\""
                ))
            } else {
                Ok(Cow::Borrowed(value))
            }
        }
    }
}

/// `value` escaped for a basic string (`multi_line`: a `"""` one, where line
/// breaks may stay as they are).
fn escape(value: &str, multi_line: bool) -> Cow<'_, str> {
    let plain = |c: char| !(c == '"' || c == '\\' || c.is_control()) || c == '\t';
    if value.chars().all(plain) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' if multi_line => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("mx.example.com".into()),
            "EMPTY" => Some(String::new()),
            "SMTP_PORT" => Some("2525".into()),
            "HOSTILE" => Some("x\"\nevil = true\n# \\ '''\u{1b}".into()),
            _ => None,
        }
    }

    fn sub(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<SubstError>) {
        let s = substitute(text, env);
        (s.text, s.errors)
    }

    #[test]
    fn a_value_is_substituted_as_a_value_never_as_toml() {
        let text = "a = \"${HOSTILE}\"\nb = \"\"\"${HOSTILE}\"\"\"\nport = ${SMTP_PORT}\n";
        let (out, errs) = sub(text, &env);
        assert!(errs.is_empty(), "{errs:?}");
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        let hostile = "x\"\nevil = true\n# \\ '''\u{1b}";
        assert_eq!(parsed["a"].as_str(), Some(hostile));
        assert_eq!(parsed["b"].as_str(), Some(hostile));
        assert_eq!(parsed["port"].as_integer(), Some(2525));
        assert!(!parsed.contains_key("evil"));

        // Where a value cannot be held, an error names the variable, not the value.
        for text in [
            "a = '${HOSTILE}'",
            "a = '''${HOSTILE}'''",
            "a = ${HOSTILE}",
            "a = ${EMPTY}",
        ] {
            let (_, errs) = sub(text, &env);
            assert_eq!(errs.len(), 1, "{text}: {errs:?}");
            assert_eq!(errs[0].offset, text.find("${").unwrap(), "{text}");
            assert!(errs[0].message.contains("`HOSTILE`") || errs[0].message.contains("`EMPTY`"));
            assert!(!errs[0].message.contains("evil"), "{}", errs[0].message);
        }
        assert_eq!(sub("a = '${HOST}'", &env).0, "a = 'mx.example.com'");
    }

    #[test]
    fn offsets_map_back_to_the_file_as_written() {
        let text = "a = \"${HOST}\" # x\nb = \"$${\" ${NOPE:-}z\n";
        let s = substitute(text, &env);
        assert!(s.errors.is_empty());
        let out = &s.text;
        assert_eq!(out, "a = \"mx.example.com\" # x\nb = \"${\" z\n");
        let map = |needle: &str| raw_offset(&s.splices, out.find(needle).unwrap());
        assert_eq!(map("a ="), 0);
        assert_eq!(
            map("example"),
            text.find("${HOST}").unwrap(),
            "inside a value: its `${{`"
        );
        assert_eq!(map("# x"), text.find("# x").unwrap());
        assert_eq!(map("b ="), text.find("b =").unwrap());
        assert_eq!(map(" z"), text.find(" ${NOPE").unwrap());
        assert_eq!(map("z\n"), text.find("z\n").unwrap());
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let (out, errs) = sub(
            "a = \"${HOST}:25\"\nb = \"${PORT:-587}\"\nc = \"${EMPTY:-x}\"\n",
            &env,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(out, "a = \"mx.example.com:25\"\nb = \"587\"\nc = \"x\"\n");
    }

    #[test]
    fn unset_variable_is_an_error_at_its_offset() {
        let text = "x = 1\ny = \"${NOPE}\"\nz = \"${ALSO_NOPE}\"";
        let (_, errs) = sub(text, &env);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].offset, text.find("${NOPE").unwrap());
        assert!(errs[0].message.contains("`NOPE` is not set"));
        assert!(errs[1].message.contains("`ALSO_NOPE`"));
    }

    #[test]
    fn comments_are_not_substituted_and_escape_works() {
        let (out, errs) = sub("# ${NOPE}\nv = \"$${HOST} # ${HOST}\" # ${NOPE}\n", &env);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            out,
            "# ${NOPE}\nv = \"${HOST} # mx.example.com\" # ${NOPE}\n"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        let (_, errs) = sub("a = \"${1X}\"\nb = \"${OPEN\"\n", &env);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].message.contains("invalid variable name `1X`"));
        assert!(errs[1].message.contains("unterminated"));
    }

    #[test]
    fn non_ascii_text_survives() {
        let (out, errs) = sub("name = \"sondé ${HOST} ✓\"", &env);
        assert!(errs.is_empty());
        assert_eq!(out, "name = \"sondé mx.example.com ✓\"");
    }
}
