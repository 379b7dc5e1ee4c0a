//! What the store reads in a memory's Markdown: `[[wikilinks]]` and inline `#tags`,
//! outside code. One parser for the store's link tables, import and every interface.

/// The relation of links made from `[[wikilinks]]` in a memory's text.
pub const WIKILINK_RELATION: &str = "wikilink";

/// The lines of Markdown text outside fenced code blocks (``` or ~~~).
pub(crate) fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The `#tags` in Markdown text, outside code.
pub fn inline_tags(text: &str) -> Vec<String> {
    let mut tags = Vec::new();
    for line in prose_lines(text) {
        let mut in_code = false;
        let mut prev = ' ';
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '`' {
                in_code = !in_code;
            } else if c == '#' && !in_code && (prev.is_whitespace() || prev == '(') {
                let tag: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '/'))
                    .collect();
                let len = tag.chars().count();
                let tag = tag.trim_end_matches('/').to_owned();
                if !tag.is_empty() && !tag.chars().all(|c| c.is_ascii_digit()) {
                    tags.push(tag);
                }
                i += len;
            }
            prev = chars.get(i).copied().unwrap_or(' ');
            i += 1;
        }
    }
    tags
}

/// The targets of `[[wikilinks]]` in Markdown text (without `|alias` or `#heading`),
/// outside code. Embeds (`![[…]]`) are not links.
pub fn wikilinks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line;
        while let Some(start) = rest.find("[[") {
            let embed = rest[..start].ends_with('!');
            let after = &rest[start + 2..];
            let Some(end) = after.find("]]") else { break };
            let inner = &after[..end];
            rest = &after[end + 2..];
            if embed || inner.contains('[') || inner.contains('\n') {
                continue;
            }
            let target = inner.split('|').next().unwrap_or("");
            let target = target.split(['#', '^']).next().unwrap_or("").trim();
            if !target.is_empty() {
                out.push(target.to_owned());
            }
        }
    }
    out
}

/// The key a title is found by: trimmed and folded to lower case (Unicode).
pub fn title_key(title: &str) -> String {
    title.trim().to_lowercase()
}

/// A text as two writes of the same fact compare: folded to lower case, every run of
/// whitespace one space, and sentence punctuation (`.!?,;:`) trimmed from its end — and
/// nothing else: "+20%" and "-20%", "C" and "C++", "👍" and "👎" stay different ("The
/// boiler is due in October." and "the boiler is due  in october" read the same).
pub fn same_text_key(text: &str) -> String {
    // One buffer of the text's size (a memory may be megabytes). Folding word by word is
    // folding the whole text: whitespace is neither cased nor case-ignorable, so a final
    // sigma reads the same either way.
    let mut key = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !key.is_empty() {
            key.push(' ');
        }
        if word.is_ascii() {
            key.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            key.push_str(&word.to_lowercase());
        }
    }
    let end = key
        .trim_end_matches(['.', '!', '?', ',', ';', ':', ' '])
        .len();
    key.truncate(end);
    key
}

/// The key a wikilink target resolves by: its last path segment, folded like a title
/// (`[[dir/Note]]` and `[[note]]` both look for a memory titled "Note").
pub fn wikilink_key(target: &str) -> String {
    title_key(target.rsplit('/').next().unwrap_or(target))
}

/// Most distinct wikilink keys read from one text: what one memory can wait for. Text
/// from a peer is hostile, and every key is a row written with the memory.
pub const MAX_WIKILINK_KEYS: usize = 256;

/// The distinct keys of the wikilinks in `text`, in order of first appearance: at most
/// [`MAX_WIKILINK_KEYS`], each no longer than a title may be (a longer one names nothing).
pub fn wikilink_keys(text: &str) -> Vec<String> {
    if !text.contains("[[") {
        return Vec::new();
    }
    let mut keys: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for target in wikilinks(text) {
        if target.len() > crate::memory::MAX_TITLE_BYTES {
            continue;
        }
        let key = wikilink_key(&target);
        if !key.is_empty() && seen.insert(key.clone()) {
            keys.push(key);
            if keys.len() == MAX_WIKILINK_KEYS {
                break;
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {

    /// The key as it was first written: the whole text folded, split and joined.
    fn same_text_key_plain(text: &str) -> String {
        let folded = text.to_lowercase();
        let words: Vec<&str> = folded.split_whitespace().collect();
        words
            .join(" ")
            .trim_end_matches(['.', '!', '?', ',', ';', ':', ' '])
            .to_owned()
    }

    proptest::proptest! {
        #[test]
        fn same_text_key_in_one_buffer_reads_as_the_plain_one(
            text in "(\\PC|[ \\t\\n.!?,;:ΣσςİIi]){0,40}"
        ) {
            proptest::prop_assert_eq!(same_text_key(&text), same_text_key_plain(&text));
        }
    }

    #[test]
    fn same_text_key_folds_a_final_sigma_as_the_whole_text_does() {
        for text in ["ΟΔΟΣ ΟΔΟΣ.", "Σ", "AΣ b", "ΑΣ'Σ x", "İstanbul  İSTANBUL!"] {
            assert_eq!(same_text_key(text), same_text_key_plain(text), "{text}");
        }
    }

    use super::*;

    #[test]
    fn wikilinks_drop_aliases_headings_and_embeds() {
        let text = "See [[Alpha]], [[beta|the B]] and [[Gamma#Part 2|g]].\n![[image.png]] [[#local]]\n```\n[[in code]]\n```\n[[dir/Delta^block]]";
        assert_eq!(wikilinks(text), ["Alpha", "beta", "Gamma", "dir/Delta"]);
    }

    #[test]
    fn inline_tags_skip_headings_code_and_numbers() {
        let text = "# Heading\nA #garden note with #a/b and #1 and `#code` (#paren)\n```\n#fenced\n```\nend #last";
        assert_eq!(inline_tags(text), ["garden", "a/b", "paren", "last"]);
    }

    #[test]
    fn wikilink_keys_fold_case_paths_and_repeats() {
        let text = "[[Ünïcode Note]] then [[dir/ünïcode note|again]] and [[Other]]";
        assert_eq!(wikilink_keys(text), ["ünïcode note", "other"]);
        assert!(wikilink_keys("no links here").is_empty());
        // Hostile text: many distinct links and an overlong one are bounded.
        let many: String = (0..100_000).map(|i| format!("[[n{i}]] ")).collect();
        let keys = wikilink_keys(&many);
        assert_eq!(keys.len(), MAX_WIKILINK_KEYS);
        assert_eq!(keys[0], "n0");
        let long = format!(
            "[[{}]] [[ok]]",
            "x".repeat(crate::memory::MAX_TITLE_BYTES + 1)
        );
        assert_eq!(wikilink_keys(&long), ["ok"]);
    }
}
