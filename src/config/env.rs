//! `${VAR}` and `${VAR:-default}` substitution, done on the raw text before TOML
//! parsing. `$${` writes a literal `${`. Comments are left alone, so a commented-out
//! line never fails on an unset variable.

/// A variable reference that could not be substituted: byte offset in the
/// original text, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    pub offset: usize,
    pub message: String,
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

/// Substitutes variables from `env`; returns the new text and every error.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<SubstError>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
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
            out.push_str("${");
            i += 3;
            copied = i;
            continue;
        }
        if rest.starts_with(b"${") {
            out.push_str(&text[copied..i]);
            let start = i;
            let Some(close) = text[i + 2..].find(['}', '\n']).map(|p| p + i + 2) else {
                errors.push(SubstError {
                    offset: start,
                    message: "unterminated `${`: expected `}`".into(),
                });
                i = bytes.len();
                copied = i;
                break;
            };
            if bytes[close] == b'\n' {
                errors.push(SubstError {
                    offset: start,
                    message: "unterminated `${`: expected `}` before the end of the line".into(),
                });
                i = close;
                copied = close;
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
                    (Some(v), _) => out.push_str(&v),
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
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied.min(text.len())..]);
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("mx.example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let (out, errs) = substitute(
            "a = \"${HOST}:25\"\nb = \"${PORT:-587}\"\nc = \"${EMPTY:-x}\"\n",
            &env,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(out, "a = \"mx.example.com:25\"\nb = \"587\"\nc = \"x\"\n");
    }

    #[test]
    fn unset_variable_is_an_error_at_its_offset() {
        let text = "x = 1\ny = \"${NOPE}\"\nz = \"${ALSO_NOPE}\"";
        let (_, errs) = substitute(text, &env);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].offset, text.find("${NOPE").unwrap());
        assert!(errs[0].message.contains("`NOPE` is not set"));
        assert!(errs[1].message.contains("`ALSO_NOPE`"));
    }

    #[test]
    fn comments_are_not_substituted_and_escape_works() {
        let (out, errs) = substitute("# ${NOPE}\nv = \"$${HOST} # ${HOST}\" # ${NOPE}\n", &env);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            out,
            "# ${NOPE}\nv = \"${HOST} # mx.example.com\" # ${NOPE}\n"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        let (_, errs) = substitute("a = \"${1X}\"\nb = \"${OPEN\"\n", &env);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].message.contains("invalid variable name `1X`"));
        assert!(errs[1].message.contains("unterminated"));
    }

    #[test]
    fn non_ascii_text_survives() {
        let (out, errs) = substitute("name = \"sondé ${HOST} ✓\"", &env);
        assert!(errs.is_empty());
        assert_eq!(out, "name = \"sondé mx.example.com ✓\"");
    }
}
