//! Reads that fit a context window: a budget in tokens (estimated as characters / 4 of
//! the JSON answer), and cursors that say where the rest starts. Every interface that
//! pages or cuts for a budget (MCP's `recall`, `get`, `list`) uses these, so a cut is
//! always said and always resumable.

use serde::Serialize;

use crate::Error;

/// Characters per token, the estimate budgets are counted in.
pub const CHARS_PER_TOKEN: usize = 4;

/// The characters a budget of `max_tokens` allows (at least 256).
pub fn chars_for(max_tokens: usize) -> usize {
    max_tokens.saturating_mul(CHARS_PER_TOKEN).max(256)
}

/// The position a cursor names: a decimal number handed out by a previous answer.
pub fn read_cursor(cursor: Option<&str>) -> Result<usize, Error> {
    match cursor {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            Error::invalid(format!(
                "cursor: {:?} is not a cursor this node handed out",
                text.chars().take(40).collect::<String>()
            ))
        }),
    }
}

/// How long `value` is as JSON, in characters.
pub fn json_chars(value: &impl Serialize) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.chars().count())
}

/// The longest prefix of `items` whose JSON fits in `budget` characters — at least one
/// item, so an answer always moves on — and whether some were left out.
pub fn fit<T: Serialize>(items: Vec<T>, budget: usize) -> (Vec<T>, bool) {
    let total = items.len();
    let mut used = 0;
    let mut kept = Vec::new();
    for item in items {
        let size = json_chars(&item) + 1;
        if !kept.is_empty() && used + size > budget {
            break;
        }
        used += size;
        kept.push(item);
    }
    let cut = kept.len() < total;
    (kept, cut)
}

/// The characters of `text` from `from` (in characters), at most `max` of them, and
/// where the rest starts if something is left.
pub fn window(text: &str, from: usize, max: usize) -> (String, Option<usize>) {
    let piece: String = text.chars().skip(from).take(max).collect();
    let end = from + piece.chars().count();
    let total = text.chars().count();
    (piece, (end < total).then_some(end))
}

/// Like [`window`], but `max` counts the piece as JSON writes it (quotes and escapes
/// included), so a text full of `"` or control characters still fits. At least one
/// character when any is left, so a reader always moves on.
pub fn json_window(text: &str, from: usize, max: usize) -> (String, Option<usize>) {
    let mut take = max;
    loop {
        let (piece, next) = window(text, from, take);
        let size = json_chars(&piece);
        if size <= max || take <= 1 {
            return (piece, next);
        }
        // Shrink in proportion, and by at least one character.
        take = (take * max / size).min(take - 1).max(1);
    }
}

/// A duration for people: `40s`, `5m`, `3h 12m`, `2d 4h`.
pub fn human_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// The first lines of `text`, at most `max` characters, with `…` when cut: what a brief
/// shows of a memory.
pub fn first_lines(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, line) in text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .enumerate()
    {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line.trim_end());
    }
    if out.chars().count() > max {
        let mut cut: String = out.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        return cut;
    }
    if text.lines().filter(|l| !l.trim().is_empty()).count() > 3 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_a_prefix_within_the_budget_and_at_least_one() {
        let items = vec!["aaaa".to_owned(), "bbbb".to_owned(), "cccc".to_owned()];
        // "aaaa" is 6 characters of JSON, 7 with a separator.
        assert_eq!(fit(items.clone(), 14), (items[..2].to_vec(), true));
        assert_eq!(fit(items.clone(), 100), (items.clone(), false));
        assert_eq!(fit(items.clone(), 1), (items[..1].to_vec(), true));
        assert_eq!(fit(Vec::<String>::new(), 1), (vec![], false));
    }

    #[test]
    fn windows_walk_a_text_in_characters() {
        let text = "héllo wörld";
        assert_eq!(window(text, 0, 5), ("héllo".to_owned(), Some(5)));
        assert_eq!(window(text, 5, 100), (" wörld".to_owned(), None));
        let mut from = 0;
        let mut whole = String::new();
        while let (piece, Some(next)) = window(text, from, 3) {
            whole.push_str(&piece);
            from = next;
        }
        whole.push_str(&window(text, from, 3).0);
        assert_eq!(whole, text);
        assert_eq!(read_cursor(Some("12")).expect("cursor"), 12);
        assert!(read_cursor(Some("twelve")).is_err());
        assert_eq!(first_lines("a\n\nb\nc\nd", 100), "a\nb\nc…");
        let quoted = "\"".repeat(100);
        let (piece, next) = json_window(&quoted, 0, 50);
        assert!(json_chars(&piece) <= 50 && !piece.is_empty(), "{piece}");
        assert_eq!(next, Some(piece.chars().count()));
        assert_eq!(first_lines("abcdef", 4), "abc…");
    }
}
