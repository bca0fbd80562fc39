//! Text from peers, made safe to show: a server's realm, an error body, an SMTP
//! reply. Such text is untrusted: it can be megabytes long, and a newline or an
//! ESC sequence in it would forge a log line or repaint a terminal. Every place
//! that quotes a peer goes through `peer` (escape, then clip); the runner bounds
//! whole summaries with `bounded`, so a kind that forgets is still held.

use std::borrow::Cow;
use std::fmt::Write as _;

/// How many characters of a peer's text are quoted.
pub(crate) const PEER_MAX: usize = 200;

/// `text` as it may be quoted from a peer: control characters escaped, then
/// clipped to `PEER_MAX` characters.
pub(crate) fn peer(text: &str) -> String {
    clip(&escape(text), PEER_MAX).into_owned()
}

/// `text` without a raw control character: `\n`, `\r` and `\t` as those two
/// characters, any other control or bidirectional-override character as
/// `\u{..}`. Printable text, including non-ASCII, is left as is.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max` characters, the last of them `…` when cut.
pub(crate) fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            Cow::Owned(format!("{}…", &text[..end]))
        }
    }
}

/// `text` escaped and clipped to `max` characters: the guard for a whole line
/// (a summary) built from pieces some of which came from peers.
pub(crate) fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    match escape(text) {
        Cow::Borrowed(t) => clip(t, max),
        Cow::Owned(t) => Cow::Owned(clip(&t, max).into_owned()),
    }
}

/// Whether `c` must not reach an output raw: C0 and C1 controls (ESC, newline,
/// DEL…) and the Unicode marks that reorder or hide the text around them.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// What a caught panic said (its `&str` or `String` payload, clipped to 200
/// characters), as "panicked: …".
pub(crate) fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    };
    format!("panicked: {}", text.chars().take(200).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain text, ünïcode"), "plain text, ünïcode");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\r\tc\u{1b}[31mred\u{7f}\u{85}"),
            "a\\nb\\r\\tc\\u{1b}[31mred\\u{7f}\\u{85}"
        );
        assert_eq!(escape("evil\u{202e}txt"), "evil\\u{202e}txt");
    }

    #[test]
    fn clipping_counts_characters_and_marks_the_cut() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly10!", 10), "exactly10!");
        assert_eq!(clip("eleven char", 10), "eleven ch…");
        assert_eq!(clip("ééééé", 3), "éé…");
        assert_eq!(clip("abc", 0), "…");
    }

    #[test]
    fn peer_text_is_one_short_line() {
        let hostile = format!("line1\nINFO forged\u{1b}[2J{}", "x".repeat(500_000));
        let shown = peer(&hostile);
        assert_eq!(shown.chars().count(), PEER_MAX);
        assert!(shown.starts_with("line1\\nINFO forged\\u{1b}[2Jxx"));
        assert!(!shown.chars().any(|c| c.is_control()));
        assert_eq!(bounded("ok\n", 1024), "ok\\n");
    }
}
