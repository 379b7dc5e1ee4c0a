//! How the CLI prints memories, collections and hits, for people and as JSON. Local and
//! remote commands print the same API views, so `--json` gives the API's own shapes.

use std::io::Write;

use mnemon_api::{CollectionView, HitView, MemoryView, SyncView, TaskBoard, TaskStatus};

/// A collection's sync state with a peer, for people: `in sync`, `behind (why)`, ….
pub(crate) fn sync_state(sync: &SyncView) -> String {
    let state = sync.state.label();
    let mut out = match &sync.detail {
        Some(detail) => format!("{state} ({detail})"),
        None => state.to_owned(),
    };
    if let Some(refused) = &sync.last_refused
        && sync.detail.as_ref() != Some(refused)
    {
        out.push_str(&format!("; last refused: {refused}"));
    }
    out
}

/// Any view as one line of JSON. Characters a terminal could act on (controls, and the
/// marks that reorder text) are written as `\uXXXX` escapes: the values stay exact, and
/// the line passes [`Terminal`] untouched.
pub(crate) fn json(value: &impl serde::Serialize) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, InertJson);
    if serde::Serialize::serialize(value, &mut serializer).is_err() {
        return "null".to_owned();
    }
    String::from_utf8(out).unwrap_or_else(|_| "null".to_owned())
}

/// serde_json's compact output, with [`acts_on_terminal`] characters escaped too.
struct InertJson;

impl serde_json::ser::Formatter for InertJson {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(acts_on_terminal) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// Whether a terminal could act on `c` rather than show it: control characters other
/// than newline and tab (ESC starts escape sequences, OSC 52 writes the clipboard, CR
/// and BS overwrite), and the invisible marks that reorder text (bidirectional overrides).
pub(crate) fn acts_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || reorders_text(c)
}

/// Whether `c` is an invisible mark that changes the order text is shown in.
pub(crate) fn reorders_text(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` as a terminal should show it (for a line written with `eprintln!`).
pub(crate) fn shown(text: &str) -> String {
    let mut out = Terminal::new(Vec::new());
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    String::from_utf8_lossy(&out.inner).into_owned()
}

/// Standard output for people: whatever a memory, a peer or a file put in a title, a
/// name or a text, a terminal only shows it. Characters it could act on
/// ([`acts_on_terminal`]) are written as `\u{1b}`; bytes that are not UTF-8 as `\x9b`.
pub(crate) struct Terminal<W: Write> {
    inner: W,
    /// The start of a character whose rest has not been written yet.
    pending: Vec<u8>,
}

impl<W: Write> Terminal<W> {
    pub(crate) fn new(inner: W) -> Terminal<W> {
        Terminal {
            inner,
            pending: Vec::new(),
        }
    }

    fn write_text(&mut self, text: &str) -> std::io::Result<()> {
        let mut rest = text;
        while let Some(at) = rest.find(acts_on_terminal) {
            self.inner.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            write!(self.inner, "{}", c.escape_unicode())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.inner.write_all(rest.as_bytes())
    }
}

impl<W: Write> Write for Terminal<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let mut bytes = std::mem::take(&mut self.pending);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&bytes[start..]) {
                Ok(text) => {
                    self.write_text(text)?;
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    let text = std::str::from_utf8(&bytes[start..valid]).expect("valid");
                    self.write_text(text)?;
                    match e.error_len() {
                        Some(bad) => {
                            for b in &bytes[valid..valid + bad] {
                                write!(self.inner, "\\x{b:02x}")?;
                            }
                            start = valid + bad;
                        }
                        None => {
                            // A character cut between two writes: finish it next time.
                            bytes.drain(..valid);
                            self.pending = bytes;
                            break;
                        }
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for b in std::mem::take(&mut self.pending) {
            write!(self.inner, "\\x{b:02x}")?;
        }
        self.inner.flush()
    }
}

pub(crate) fn print_memory(out: &mut impl Write, memory: &MemoryView) -> std::io::Result<()> {
    writeln!(out, "{}", memory.title)?;
    writeln!(out, "id:         {}", memory.id)?;
    let collection = memory
        .collection_name
        .as_ref()
        .unwrap_or(&memory.collection);
    writeln!(out, "collection: {collection}")?;
    writeln!(out, "kind:       {}", memory.kind)?;
    if !memory.tags.is_empty() {
        let tags: Vec<String> = memory.tags.iter().map(|t| format!("#{t}")).collect();
        writeln!(out, "tags:       {}", tags.join(" "))?;
    }
    writeln!(out, "importance: {}", memory.importance)?;
    writeln!(out, "created:    {}", memory.created_at)?;
    writeln!(out, "updated:    {}", memory.updated_at)?;
    writeln!(out, "author:     {}", memory.author)?;
    for link in &memory.links {
        writeln!(out, "link:       {} → {}", link.relation, link.target)?;
    }
    writeln!(out)?;
    writeln!(out, "{}", memory.content)?;
    if let Some(conflict) = &memory.conflict {
        writeln!(out)?;
        writeln!(
            out,
            "conflict:   this node and a peer changed the same words at the same time \
             ({}); the text above is how they merged. Keep one with \
             `mnemon resolve {} --keep ours|theirs`, or write it anew with `mnemon edit`.",
            conflict.at, memory.id
        )?;
        writeln!(out, "ours:       {}", conflict.ours)?;
        writeln!(out, "theirs:     {}", conflict.theirs)?;
    }
    Ok(())
}

pub(crate) fn print_list(out: &mut impl Write, memories: &[MemoryView]) -> std::io::Result<()> {
    for memory in memories {
        let date = &memory.updated_at;
        let tags: Vec<String> = memory.tags.iter().map(|t| format!("#{t}")).collect();
        let title: String = memory.title.chars().take(60).collect();
        writeln!(
            out,
            "{}  {}  {}{}{}",
            memory.id,
            &date[..10.min(date.len())],
            title,
            if tags.is_empty() { "" } else { "  " },
            tags.join(" ")
        )?;
    }
    Ok(())
}

pub(crate) fn print_collections(
    out: &mut impl Write,
    collections: &[CollectionView],
) -> std::io::Result<()> {
    for c in collections {
        let access = match c.access.as_str() {
            "owner" => String::new(),
            "none" => "  (no access: its owner removed this node)".to_owned(),
            role => format!("  ({role})"),
        };
        writeln!(
            out,
            "{}  {:<24} {:>6} memories{}{access}",
            c.id,
            c.name,
            c.memories,
            if c.default { "  (default)" } else { "" }
        )?;
    }
    Ok(())
}

pub(crate) fn print_hits(out: &mut impl Write, hits: &[HitView]) -> std::io::Result<()> {
    if hits.is_empty() {
        writeln!(out, "no memories found")?;
    }
    for hit in hits {
        let date = hit.created_at.get(..10).unwrap_or(&hit.created_at);
        writeln!(out, "{}  {date}  {:.4}  {}", hit.id, hit.score, hit.title)?;
        writeln!(out, "    {}", hit.snippet)?;
    }
    Ok(())
}

/// Prints a to-do list for people: `[x] ID  title  p1 d2 20xp  due 2026-12-01`, then the
/// counts and the points earned.
pub(crate) fn print_tasks(
    board: &TaskBoard,
    out: &mut impl Write,
    all: bool,
) -> std::io::Result<()> {
    let line = |out: &mut dyn Write, m: &MemoryView| -> std::io::Result<()> {
        let Some(t) = &m.task else { return Ok(()) };
        let mark = if t.status == TaskStatus::Done {
            "x"
        } else {
            " "
        };
        let due = t
            .due
            .as_deref()
            .map(|d| format!("  due {}", d.get(..10).unwrap_or(d)))
            .unwrap_or_default();
        writeln!(
            out,
            "[{mark}] {}  {}  p{} d{} {}xp{due}",
            m.id, m.title, t.priority, t.difficulty, t.xp
        )
    };
    for m in &board.open {
        line(out, m)?;
    }
    if all {
        for m in &board.done {
            line(out, m)?;
        }
    }
    writeln!(
        out,
        "{} open, {} done, {} xp earned",
        board.open.len(),
        board.done.len(),
        board.xp_earned()
    )
}

/// The sources after a streamed answer: the cited ones marked.
pub(crate) fn print_sources(
    out: &mut impl Write,
    answer: &mnemon_api::AnswerView,
) -> std::io::Result<()> {
    writeln!(out)?;
    if answer.sources.is_empty() {
        return writeln!(out, "\n(no memories matched the question)");
    }
    writeln!(out, "\nSources:")?;
    for s in &answer.sources {
        let mark = if answer.cited.contains(&s.n) {
            "*"
        } else {
            " "
        };
        writeln!(out, "{mark}[{}] {}  {}", s.n, s.title, s.id)?;
    }
    if !answer.cited.is_empty() {
        writeln!(out, "(* cited in the answer)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_terminal_is_shown_controls_never_given_them() {
        let mut out = Terminal::new(Vec::new());
        let hostile =
            "Title\u{1b}]52;c;ZXZpbA==\u{7}\u{0} \u{9b}31m \u{202e}gpj.exe\r\nline two\tok";
        // Written in pieces that cut characters apart.
        for piece in hostile.as_bytes().chunks(3) {
            out.write_all(piece).expect("write");
        }
        out.write_all(b" \xff end").expect("write");
        out.flush().expect("flush");
        let shown = String::from_utf8(out.inner).expect("UTF-8");
        assert_eq!(
            shown,
            "Title\\u{1b}]52;c;ZXZpbA==\\u{7}\\u{0} \\u{9b}31m \\u{202e}gpj.exe\\u{d}\nline two\tok \\xff end"
        );
        assert!(!shown.chars().any(acts_on_terminal));
    }

    #[test]
    fn json_keeps_values_exact_and_gives_a_terminal_nothing_to_act_on() {
        let value = serde_json::json!({"title": "a\u{1b}[2Jb\u{9b}c\u{202e}d\u{7f}", "n": 1});
        let line = json(&value);
        assert!(!line.chars().any(acts_on_terminal), "{line}");
        let back: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(back, value);
        let mut out = Terminal::new(Vec::new());
        writeln!(out, "{line}").expect("write");
        assert_eq!(
            String::from_utf8(out.inner).expect("UTF-8"),
            format!("{line}\n")
        );
    }
}
