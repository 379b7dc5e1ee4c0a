//! Import of Markdown folders and Obsidian vaults, and of Mnemon's own JSON dumps; export
//! to Markdown with front matter (which import reads back without loss) plus a JSON dump.
//!
//! Everything goes through the [`Api`] trait, so it works on a data folder opened in
//! this process and against a running `mnemon serve` alike.
//!
//! Import is idempotent: each imported memory remembers where it came from
//! (`source = {kind: "import", uri}`), and importing again updates it (or leaves it alone
//! when nothing changed) instead of adding a second copy. The key is the memory's id from
//! Mnemon's own front matter (`mnemon:ID`), else the file's path below the folder, prefixed
//! with the folder's name (`vault/notes/a.md`).
//!
//! Hostile input is skipped with a reason, never followed or loaded whole: symbolic links
//! are not followed (no loops, no escape from the folder), files over the content limit
//! are not read, binary and non-UTF-8 files and YAML with aliases (billion laughs) are
//! refused, and export writes only below its folder, under names made safe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use mnemon_api::{Api, Error as ApiError, TaskStatus};
use mnemon_api::{
    CreateMemory, LinkView, ListQuery, MemoryView, PatchMemory, SourceView, TaskFields, TaskView,
};
use mnemon_crdt::{MAX_CONTENT_BYTES, Task, Timestamp};
use serde::{Deserialize, Serialize};
use yaml_rust2::Yaml;

pub use mnemon_crdt::markdown::WIKILINK_RELATION;
use mnemon_crdt::markdown::{inline_tags, wikilinks};
/// The file name of the JSON dump `export` writes.
pub const DUMP_FILE: &str = "mnemon-export.json";
/// The `format` field of a JSON dump.
const DUMP_FORMAT: &str = "mnemon-export";
/// Largest front matter read, in bytes.
const MAX_FRONT_MATTER: usize = 64 * 1024;
/// Deepest folder nesting followed.
const MAX_DEPTH: usize = 64;
/// Most files looked at in one import.
const MAX_FILES: usize = 200_000;

/// What folders below the imported one become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Folders {
    /// A tag naming the folder path (`projects/garden`).
    #[default]
    Tags,
    /// A collection named after the top folder (made if missing).
    Collections,
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The collection (id or name) for notes that name none; default: the private one.
    pub collection: Option<String>,
    /// What folders become.
    pub folders: Folders,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Notes added as new memories.
    pub imported: usize,
    /// Memories updated from a changed note.
    pub updated: usize,
    /// Notes equal to the memory already imported from them.
    pub unchanged: usize,
    /// Links made or kept (from wikilinks and from front matter).
    pub links: usize,
    /// Wikilinks whose target is not among the notes (`file: target`).
    pub unresolved_links: Vec<String>,
    /// Files and folders not imported, with why.
    pub skipped: Vec<Skipped>,
    /// Front-matter fields Mnemon has no place for, with how many notes had them.
    pub ignored_fields: BTreeMap<String, usize>,
    /// Notes whose front matter names the id of a memory this node holds but this import
    /// did not make, and that differ from it: imported as new memories, the one named
    /// left alone (`file: id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_for_foreign_id: Vec<String>,
}

/// A file or folder that was not imported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    /// Its path below the imported folder.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl Summary {
    fn skip(&mut self, path: &str, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    /// Prints the summary for people.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "imported {}, updated {}, unchanged {}, skipped {}; {} links ({} unresolved)",
            self.imported,
            self.updated,
            self.unchanged,
            self.skipped.len(),
            self.links,
            self.unresolved_links.len()
        )?;
        for s in &self.skipped {
            writeln!(out, "  skipped {}: {}", s.path, s.reason)?;
        }
        for link in self.unresolved_links.iter().take(20) {
            writeln!(out, "  unresolved link {link}")?;
        }
        if self.unresolved_links.len() > 20 {
            writeln!(
                out,
                "  … {} more unresolved",
                self.unresolved_links.len() - 20
            )?;
        }
        for (field, notes) in &self.ignored_fields {
            writeln!(
                out,
                "  front-matter field {field:?} not imported ({notes} notes)"
            )?;
        }
        for note in &self.new_for_foreign_id {
            writeln!(
                out,
                "  {note}: its front matter names a memory of this node that this import \
                 did not make; imported as a new memory, that one left alone"
            )?;
        }
        Ok(())
    }
}

/// One note, read and parsed, ready to become a memory.
#[derive(Debug, Clone, Default)]
struct Note {
    /// Path below the imported folder, `/`-separated (or `#N` in a dump).
    path: String,
    /// The idempotency key (`source.uri`).
    key: String,
    /// The id it had in the Mnemon that exported it.
    old_id: Option<String>,
    title: String,
    content: String,
    tags: BTreeSet<String>,
    kind: Option<String>,
    importance: Option<f64>,
    collection: Option<String>,
    created: Option<Timestamp>,
    updated: Option<Timestamp>,
    task: Option<TaskFields>,
    /// Names a wikilink may use for this note (lowercased): path without `.md`, file
    /// name, title, aliases.
    names: Vec<String>,
    /// Links from front matter or a dump: old id → relation.
    links: Vec<LinkView>,
}

/// Imports the folder, vault or JSON dump at `path`.
pub fn import(api: &dyn Api, path: &Path, options: &ImportOptions) -> Result<Summary> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut summary = Summary::default();
    let notes = if meta.is_dir() {
        read_folder(path, options, &mut summary)?
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        read_dump(path, &mut summary)?
    } else if is_markdown(path) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut notes = Vec::new();
        match read_note(path, &name, "", options, &mut summary) {
            Ok(note) => notes.push(note),
            Err(reason) => summary.skip(&name, reason),
        }
        notes
    } else {
        bail!(
            "{} is neither a folder, a Markdown file nor a Mnemon JSON dump",
            path.display()
        );
    };
    write_notes(api, notes, options, &mut summary)?;
    Ok(summary)
}

fn is_markdown(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("md") || e.eq_ignore_ascii_case("markdown"))
}

/// Walks `root` without following symbolic links and reads every Markdown file in it.
fn read_folder(root: &Path, options: &ImportOptions, summary: &mut Summary) -> Result<Vec<Note>> {
    let root_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "import".to_owned());
    let mut notes = Vec::new();
    let mut files = 0usize;
    // (folder on disk, its path below root)
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_owned(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let mut entries: Vec<_> = match fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(std::result::Result::ok).collect(),
            Err(e) => {
                summary.skip(&display_rel(&rel), format!("cannot read the folder: {e}"));
                continue;
            }
        };
        entries.sort_by(|a, b| {
            natural_order(
                &a.file_name().to_string_lossy(),
                &b.file_name().to_string_lossy(),
            )
        });
        for entry in entries {
            files += 1;
            if files > MAX_FILES {
                bail!(
                    "more than {MAX_FILES} files below {}; import a smaller folder",
                    root.display()
                );
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let shown = name.to_string_lossy().into_owned();
                summary.skip(&join_rel(&rel, &shown), "the file name is not valid UTF-8");
                continue;
            };
            let child = join_rel(&rel, name);
            let Ok(kind) = entry.file_type() else {
                summary.skip(&child, "cannot read what it is");
                continue;
            };
            if kind.is_symlink() {
                summary.skip(&child, "a symbolic link (not followed)");
            } else if kind.is_dir() {
                if name.starts_with('.') {
                    summary.skip(
                        &child,
                        "a hidden folder (settings, trash or version control)",
                    );
                } else if depth + 1 >= MAX_DEPTH {
                    summary.skip(&child, format!("nested deeper than {MAX_DEPTH} folders"));
                } else {
                    stack.push((entry.path(), child, depth + 1));
                }
            } else if !kind.is_file() {
                summary.skip(&child, "not a regular file");
            } else if name.starts_with('.') {
                summary.skip(&child, "a hidden file");
            } else if !is_markdown(Path::new(name)) {
                summary.skip(&child, "an attachment (only Markdown notes are imported)");
            } else {
                match read_note(&entry.path(), &child, &root_name, options, summary) {
                    Ok(note) => notes.push(note),
                    Err(reason) => summary.skip(&child, reason),
                }
            }
        }
    }
    notes.sort_by(|a, b| natural_order(&a.path, &b.path));
    Ok(notes)
}

/// Names in the order a file manager shows them: runs of digits compare as numbers, so
/// `chat-2.md` comes before `chat-10.md` (the notes of a folder are written in this order).
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let trim = |s: &[u8]| {
                    let zeros = s.iter().take_while(|c| **c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (da, db) = (trim(&a[..na]), trim(&b[..nb]));
                let order = da
                    .len()
                    .cmp(&db.len())
                    .then_with(|| da.cmp(&db))
                    .then(na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

fn display_rel(rel: &str) -> String {
    if rel.is_empty() {
        ".".to_owned()
    } else {
        rel.to_owned()
    }
}

/// Reads one Markdown file; the error is the reason to skip it.
fn read_note(
    file: &Path,
    rel: &str,
    root_name: &str,
    options: &ImportOptions,
    summary: &mut Summary,
) -> Result<Note, String> {
    let meta = fs::symlink_metadata(file).map_err(|e| format!("cannot read it: {e}"))?;
    let len = meta.len();
    if len > MAX_CONTENT_BYTES as u64 {
        return Err(format!(
            "too large: {len} bytes; the limit is {MAX_CONTENT_BYTES}"
        ));
    }
    let bytes = fs::read(file).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() > MAX_CONTENT_BYTES {
        return Err(format!(
            "grew past the limit of {MAX_CONTENT_BYTES} bytes while read"
        ));
    }
    if bytes.contains(&0) {
        return Err("a binary file (it contains NUL bytes)".to_owned());
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Timestamp::from_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    let stem = Path::new(rel)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut note = parse_markdown(text, &stem, summary)?;
    note.path = rel.to_owned();
    note.key = match &note.old_id {
        Some(id) => format!("mnemon:{id}"),
        None => format!("{root_name}/{rel}"),
    };
    let without_ext = rel.rsplit_once('.').map_or(rel, |(p, _)| p);
    note.names.push(without_ext.to_lowercase());
    note.names.push(stem.to_lowercase());
    // Folders become tags or a collection, unless Mnemon's own front matter names one.
    let folder = Path::new(rel)
        .parent()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    if !folder.is_empty() && note.collection.is_none() {
        match options.folders {
            Folders::Tags => {
                let tag: String = folder
                    .chars()
                    .map(|c| {
                        if c.is_whitespace() || c == ',' {
                            '-'
                        } else {
                            c
                        }
                    })
                    .collect();
                if mnemon_crdt::normalize_tag(&tag).is_ok() {
                    note.tags.insert(tag);
                }
            }
            Folders::Collections => {
                note.collection = folder.split('/').next().map(str::to_owned);
            }
        }
    }
    if note.updated.is_none() {
        note.updated = modified.map(|m| note.created.map_or(m, |c| m.max(c)));
    }
    if note.created.is_none() {
        note.created = note.updated;
    }
    Ok(note)
}

/// Splits front matter from the body and reads both.
fn parse_markdown(text: &str, stem: &str, summary: &mut Summary) -> Result<Note, String> {
    let mut note = Note {
        title: stem.to_owned(),
        ..Note::default()
    };
    let (front, body) = split_front_matter(text)?;
    if let Some(front) = front {
        read_front_matter(front, &mut note, summary)?;
    }
    for tag in inline_tags(body) {
        note.tags.insert(tag);
    }
    note.tags.retain(|t| mnemon_crdt::normalize_tag(t).is_ok());
    note.content = body.to_owned();
    if note.content.trim().is_empty() {
        // An empty note still counts: its title is its content.
        note.content = note.title.clone();
    }
    note.names.push(note.title.to_lowercase());
    Ok(note)
}

/// `(front matter, body)`: front matter is the YAML between a first line `---` and the
/// next line `---` (or `...`).
fn split_front_matter(text: &str) -> Result<(Option<&str>, &str), String> {
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Ok((None, text));
    };
    let mut at = 0;
    for line in rest.split_inclusive('\n') {
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed == "---" || trimmed == "..." {
            let front = &rest[..at];
            if front.len() > MAX_FRONT_MATTER {
                return Err(format!(
                    "front matter of {} bytes; the limit is {MAX_FRONT_MATTER}",
                    front.len()
                ));
            }
            return Ok((Some(front), &rest[at + line.len()..]));
        }
        at += line.len();
    }
    // No closing line: it was not front matter after all.
    Ok((None, text))
}

/// Refuses YAML that uses aliases (they expand: "billion laughs") or nests deeply.
struct Guard {
    aliases: usize,
    depth: usize,
    deepest: usize,
}

impl yaml_rust2::parser::EventReceiver for Guard {
    fn on_event(&mut self, event: yaml_rust2::Event) {
        use yaml_rust2::Event;
        match event {
            Event::Alias(_) => self.aliases += 1,
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                self.depth += 1;
                self.deepest = self.deepest.max(self.depth);
            }
            Event::SequenceEnd | Event::MappingEnd => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
    }
}

fn load_yaml(text: &str) -> Result<Yaml, String> {
    let mut guard = Guard {
        aliases: 0,
        depth: 0,
        deepest: 0,
    };
    yaml_rust2::parser::Parser::new_from_str(text)
        .load(&mut guard, false)
        .map_err(|e| format!("front matter is not valid YAML: {e}"))?;
    if guard.aliases > 0 {
        return Err("front matter uses YAML aliases, which are not supported".to_owned());
    }
    if guard.deepest > 16 {
        return Err("front matter nests deeper than 16 levels".to_owned());
    }
    let mut docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| format!("front matter is not valid YAML: {e}"))?;
    Ok(if docs.is_empty() {
        Yaml::Null
    } else {
        docs.swap_remove(0)
    })
}

/// A scalar as text (dates and numbers too).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of strings: a YAML list, or one string split at commas and spaces.
fn strings(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other)
            .map(|s| {
                s.split([',', ' '])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn time(field: &str, value: &Yaml) -> Result<Timestamp, String> {
    let text = scalar(value).ok_or_else(|| format!("front matter {field:?} is not a time"))?;
    text.parse::<Timestamp>()
        .map_err(|e| format!("front matter {field:?}: {e}"))
}

fn read_front_matter(front: &str, note: &mut Note, summary: &mut Summary) -> Result<(), String> {
    let yaml = load_yaml(front)?;
    let map = match yaml {
        Yaml::Hash(map) => map,
        Yaml::Null => return Ok(()),
        _ => return Err("front matter is not a map of fields".to_owned()),
    };
    for (key, value) in &map {
        let Some(key) = scalar(key) else { continue };
        match key.as_str() {
            "title" => {
                if let Some(title) = scalar(value) {
                    note.title = title;
                }
            }
            "tags" | "tag" => note.tags.extend(
                strings(value)
                    .into_iter()
                    .map(|t| t.trim_start_matches('#').to_owned()),
            ),
            "aliases" | "alias" => note
                .names
                .extend(strings(value).into_iter().map(|a| a.to_lowercase())),
            "created" | "created_at" | "date" => note.created = Some(time(&key, value)?),
            "updated" | "updated_at" | "modified" => note.updated = Some(time(&key, value)?),
            "id" => {
                note.old_id = scalar(value).filter(|id| id.parse::<mnemon_crdt::MemoryId>().is_ok())
            }
            "kind" => note.kind = scalar(value),
            "importance" => {
                note.importance = Some(
                    scalar(value)
                        .and_then(|v| v.parse::<f64>().ok())
                        .ok_or("front matter \"importance\" is not a number")?,
                );
            }
            "collection" => note.collection = scalar(value),
            "links" => {
                let Yaml::Array(items) = value else {
                    return Err("front matter \"links\" is not a list".to_owned());
                };
                for item in items {
                    let target =
                        scalar(&item["target"]).ok_or("a front-matter link has no \"target\"")?;
                    let relation =
                        scalar(&item["relation"]).unwrap_or_else(|| "related".to_owned());
                    note.links.push(LinkView { target, relation });
                }
            }
            "task" => {
                let Yaml::Hash(_) = value else {
                    return Err("front matter \"task\" is not a map".to_owned());
                };
                let number = |field: &str| -> Result<Option<i64>, String> {
                    match &value[field] {
                        Yaml::BadValue | Yaml::Null => Ok(None),
                        Yaml::Integer(i) => Ok(Some(*i)),
                        _ => Err(format!("front matter task {field:?} is not a whole number")),
                    }
                };
                note.task = Some(TaskFields {
                    // A status this version does not know (other tools write many) is
                    // left out: the task is open.
                    status: scalar(&value["status"]).and_then(|s| s.parse::<TaskStatus>().ok()),
                    priority: number("priority")?,
                    due: scalar(&value["due"]),
                    difficulty: number("difficulty")?
                        .map(|d| {
                            u8::try_from(d)
                                .map_err(|_| format!("task difficulty {d} is out of range"))
                        })
                        .transpose()?,
                    xp: number("xp")?
                        .map(|x| {
                            u32::try_from(x).map_err(|_| format!("task xp {x} is out of range"))
                        })
                        .transpose()?,
                });
            }
            // Written by export; the importing node is the author and the import the source.
            "author" | "source" => {}
            other => {
                *summary.ignored_fields.entry(other.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(())
}

/// The JSON dump `export` writes.
#[derive(Debug, Serialize, Deserialize)]
struct Dump {
    format: String,
    version: u32,
    exported_at: String,
    memories: Vec<MemoryView>,
}

fn read_dump(path: &Path, summary: &mut Summary) -> Result<Vec<Note>> {
    let len = fs::metadata(path)?.len();
    // A dump holds many memories: allow 64 of the largest.
    let limit = 64 * MAX_CONTENT_BYTES as u64;
    if len > limit {
        bail!(
            "{} is {len} bytes; the limit for a dump is {limit}",
            path.display()
        );
    }
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let dump: Dump = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Mnemon JSON dump", path.display()))?;
    if dump.format != DUMP_FORMAT || dump.version != 1 {
        bail!(
            "{} is a {:?} version {} file; this Mnemon reads {DUMP_FORMAT:?} version 1",
            path.display(),
            dump.format,
            dump.version
        );
    }
    let mut notes = Vec::new();
    for (i, m) in dump.memories.into_iter().enumerate() {
        let at = format!("memory #{} ({})", i + 1, m.id);
        let parse = |field: &str, value: &str| {
            value
                .parse::<Timestamp>()
                .map_err(|e| format!("{field}: {e}"))
        };
        let times = parse("created_at", &m.created_at)
            .and_then(|c| Ok((c, parse("updated_at", &m.updated_at)?)));
        let (created, updated) = match times {
            Ok(t) => t,
            Err(reason) => {
                summary.skip(&at, reason);
                continue;
            }
        };
        if m.id.parse::<mnemon_crdt::MemoryId>().is_err() {
            summary.skip(&at, "its id is not a memory id");
            continue;
        }
        notes.push(Note {
            path: at,
            key: format!("mnemon:{}", m.id),
            names: vec![m.title.to_lowercase()],
            old_id: Some(m.id),
            title: m.title,
            content: m.content,
            tags: m.tags.into_iter().collect(),
            kind: Some(m.kind),
            importance: Some(m.importance),
            collection: m.collection_name.or(Some(m.collection)),
            created: Some(created),
            updated: Some(updated),
            task: m.task.map(|t| TaskFields {
                status: Some(t.status),
                priority: Some(t.priority),
                due: t.due,
                difficulty: Some(t.difficulty),
                xp: Some(t.xp),
            }),
            links: m.links,
        });
    }
    Ok(notes)
}

fn progress(enabled: bool, len: usize, what: &'static str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

/// Creates or updates a memory per note, then makes the links.
fn write_notes(
    api: &dyn Api,
    notes: Vec<Note>,
    options: &ImportOptions,
    summary: &mut Summary,
) -> Result<()> {
    let existing = api
        .list_all(&ListQuery::default())
        .context("listing the memories already stored")?;
    // Indexes into `existing`: by id, and by the key of what it was imported from.
    let by_id: HashMap<&str, usize> = existing
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    let by_key: HashMap<&str, usize> = existing
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let source = m.source.as_ref().filter(|s| s.kind == "import")?;
            Some((source.uri.as_deref()?, i))
        })
        .collect();
    let mut collections: HashMap<String, String> = api
        .collections()?
        .into_iter()
        .flat_map(|c| [(c.id.clone(), c.id.clone()), (c.name.clone(), c.id)])
        .collect();

    // Pass 1: the memories.
    let bar = progress(options.progress, notes.len(), "notes");
    // (note, the memory it is now)
    let mut written: Vec<(Note, MemoryView)> = Vec::new();
    for note in notes {
        bar.inc(1);
        // A front-matter id updates only a memory imported from that id's export (its
        // key, `mnemon:ID`): any file can claim any id, and this node's own memory must
        // not be rewritten by one. Equal to this node's memory of that id, it is that one.
        let mut current = by_key
            .get(note.key.as_str())
            .map(|&i| &existing[i])
            .cloned();
        if current.is_none()
            && let Some(own) = note
                .old_id
                .as_ref()
                .and_then(|id| by_id.get(id.as_str()))
                .map(|&i| &existing[i])
        {
            if patch_for(&note, own).is_none() {
                current = Some(own.clone());
            } else {
                summary
                    .new_for_foreign_id
                    .push(format!("{}: {}", note.path, own.id));
            }
        }
        let collection = match note.collection.as_ref().or(options.collection.as_ref()) {
            None => None,
            Some(name) => match collection_id(api, &mut collections, name) {
                Ok(id) => Some(id),
                Err(e) => {
                    summary.skip(&note.path, format!("collection {name:?}: {}", e.message));
                    continue;
                }
            },
        };
        let result = match current {
            None => create(api, &note, collection).inspect(|_| summary.imported += 1),
            Some(current) => match patch_for(&note, &current) {
                None => {
                    summary.unchanged += 1;
                    Ok(current)
                }
                Some(patch) => api
                    .update(&current.id, patch)
                    .inspect(|_| summary.updated += 1),
            },
        };
        match result {
            Ok(memory) => written.push((note, memory)),
            Err(e) if e.kind.is_callers() => summary.skip(&note.path, e.message),
            Err(e) => bail!("{}: {e}", note.path),
        }
    }
    bar.finish_and_clear();

    // Pass 2: the links. Names and old ids resolve to the memories written now; an old id
    // that is not among them may be a memory this node holds.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut old_ids: HashMap<String, String> = HashMap::new();
    for (note, memory) in &written {
        for name in &note.names {
            names
                .entry(name.clone())
                .or_insert_with(|| memory.id.clone());
        }
        if let Some(old) = &note.old_id {
            old_ids.insert(old.clone(), memory.id.clone());
        }
    }
    let bar = progress(options.progress, written.len(), "links");
    for (note, memory) in &written {
        bar.inc(1);
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for target in wikilinks(&note.content) {
            match names.get(&target.to_lowercase()) {
                Some(id) if *id != memory.id => {
                    wanted
                        .entry(id.clone())
                        .or_insert_with(|| WIKILINK_RELATION.to_owned());
                }
                Some(_) => {}
                // Mnemon's own front matter lists the links already (a wikilink may name a
                // file name the export changed); only other notes report what is missing.
                None if note.old_id.is_some() => {}
                None => summary
                    .unresolved_links
                    .push(format!("{}: {target}", note.path)),
            }
        }
        for link in &note.links {
            let target = old_ids.get(&link.target).cloned().or_else(|| {
                by_id
                    .contains_key(link.target.as_str())
                    .then(|| link.target.clone())
            });
            match target {
                Some(id) if id != memory.id => {
                    wanted.insert(id, link.relation.clone());
                }
                Some(_) => {}
                None => summary
                    .unresolved_links
                    .push(format!("{}: memory {}", note.path, link.target)),
            }
        }
        summary.links += wanted.len();
        let have: BTreeMap<&str, &str> = memory
            .links
            .iter()
            .map(|l| (l.target.as_str(), l.relation.as_str()))
            .collect();
        let add_links: Vec<LinkView> = wanted
            .iter()
            .filter(|(t, r)| have.get(t.as_str()) != Some(&r.as_str()))
            .map(|(t, r)| LinkView {
                target: t.clone(),
                relation: r.clone(),
            })
            .collect();
        // Wikilinks gone from the note go; links made in Mnemon stay.
        let remove_links: Vec<String> = memory
            .links
            .iter()
            .filter(|l| l.relation == WIKILINK_RELATION && !wanted.contains_key(&l.target))
            .map(|l| l.target.clone())
            .collect();
        if add_links.is_empty() && remove_links.is_empty() {
            continue;
        }
        let patch = PatchMemory {
            add_links,
            remove_links,
            ..PatchMemory::default()
        };
        if let Err(e) = api.update(&memory.id, patch) {
            summary.skip(&note.path, format!("its links: {}", e.message));
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn collection_id(
    api: &dyn Api,
    known: &mut HashMap<String, String>,
    name: &str,
) -> Result<String, ApiError> {
    if let Some(id) = known.get(name) {
        return Ok(id.clone());
    }
    let made = api.create_collection(name)?;
    known.insert(made.name.clone(), made.id.clone());
    known.insert(name.to_owned(), made.id.clone());
    Ok(made.id)
}

fn create(api: &dyn Api, note: &Note, collection: Option<String>) -> Result<MemoryView, ApiError> {
    api.create(CreateMemory {
        title: Some(note.title.clone()),
        content: note.content.clone(),
        tags: note.tags.iter().cloned().collect(),
        collection,
        kind: note.kind.clone(),
        importance: note.importance,
        links: Vec::new(),
        task: note.task.clone(),
        source: Some(SourceView {
            kind: "import".to_owned(),
            uri: Some(note.key.clone()),
        }),
        created_at: note.created.map(|t| t.to_string()),
        updated_at: note.updated.map(|t| t.to_string()),
        dedupe: None,
        within: None,
    })
}

/// The patch that makes `current` match `note`, or `None` when they already match.
fn patch_for(note: &Note, current: &MemoryView) -> Option<PatchMemory> {
    let mut patch = PatchMemory::default();
    if note.title.trim() != current.title {
        patch.title = Some(note.title.clone());
    }
    if note.content != current.content {
        patch.content = Some(note.content.clone());
    }
    let have: BTreeSet<&str> = current.tags.iter().map(String::as_str).collect();
    patch.add_tags = note
        .tags
        .iter()
        .filter(|t| !have.contains(t.as_str()))
        .cloned()
        .collect();
    patch.remove_tags = current
        .tags
        .iter()
        .filter(|t| !note.tags.contains(*t))
        .cloned()
        .collect();
    if let Some(kind) = note.kind.as_ref().filter(|k| **k != current.kind) {
        patch.kind = Some(kind.clone());
    }
    if let Some(importance) = note.importance.filter(|i| *i != current.importance) {
        patch.importance = Some(importance);
    }
    if let Some(task) = &note.task {
        let base = current.task.as_ref().map(task_of).unwrap_or_default();
        if task.apply(&base).as_ref() != Ok(&base) {
            patch.task = Some(task.clone());
        }
    }
    let unchanged = patch.title.is_none()
        && patch.content.is_none()
        && patch.add_tags.is_empty()
        && patch.remove_tags.is_empty()
        && patch.kind.is_none()
        && patch.importance.is_none()
        && patch.task.is_none();
    (!unchanged).then_some(patch)
}

/// The task fields of a view (a time that cannot be read counts as none).
fn task_of(view: &TaskView) -> Task {
    Task {
        status: view.status.as_str().to_owned(),
        priority: view.priority,
        due: view.due.as_deref().and_then(|d| d.parse().ok()),
        difficulty: view.difficulty,
        xp: view.xp,
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportSummary {
    /// Memories written as Markdown files (and into the dump).
    pub memories: usize,
    /// The folder written.
    pub path: String,
}

/// Writes every memory (or a collection's) below `dir` as Markdown with front matter, one
/// folder per collection, plus [`DUMP_FILE`]. `dir` must be new or empty.
pub fn export(api: &dyn Api, dir: &Path, collection: Option<&str>) -> Result<ExportSummary> {
    if dir.exists() {
        let mut entries =
            fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} is not empty; export into a new folder", dir.display());
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let mut memories = api.list_all(&ListQuery::default())?;
    if let Some(c) = collection {
        let id = api
            .collections()?
            .into_iter()
            .find(|x| x.id == c || x.name == c)
            .map(|x| x.id)
            .ok_or_else(|| anyhow::anyhow!("no collection named or with id {c:?}"))?;
        memories.retain(|m| m.collection == id);
    }
    memories.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let titles: HashMap<&str, &str> = memories
        .iter()
        .map(|m| (m.id.as_str(), m.title.as_str()))
        .collect();
    // Lowercased relative paths taken (file systems that ignore case see no clash either).
    let mut used: BTreeSet<String> = BTreeSet::new();
    for m in &memories {
        let folder = safe_name(m.collection_name.as_deref().unwrap_or(&m.collection));
        let base = safe_name(if m.title.trim().is_empty() {
            &m.id
        } else {
            &m.title
        });
        let mut rel = Path::new(&folder).join(format!("{base}.md"));
        let mut n = 2;
        while used.contains(&rel.to_string_lossy().to_lowercase()) {
            rel = Path::new(&folder).join(format!("{base} {n}.md"));
            n += 1;
        }
        used.insert(rel.to_string_lossy().to_lowercase());
        debug_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
        let file = dir.join(&rel);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&file, to_markdown(m, &titles))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let dump = Dump {
        format: DUMP_FORMAT.to_owned(),
        version: 1,
        exported_at: Timestamp::now().to_string(),
        memories,
    };
    let file = dir.join(DUMP_FILE);
    fs::write(&file, serde_json::to_vec_pretty(&dump)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(ExportSummary {
        memories: dump.memories.len(),
        path: dir.display().to_string(),
    })
}

/// A file or folder name made from a title: no separators, control characters, marks
/// that reorder text (`\u{202e}` would show `evil\u{202e}dm.exe` as `evilexe.md`) or
/// reserved names, never `.` or `..`, at most 100 characters.
pub fn safe_name(title: &str) -> String {
    let mut name: String = title
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' | '#' | '^' | '[' | ']' => '-',
            c if c.is_control() => ' ',
            c => c,
        })
        .filter(|c| !crate::output::reorders_text(*c))
        .take(100)
        .collect();
    name = name.trim().trim_start_matches('.').trim().to_owned();
    let reserved = ["con", "prn", "aux", "nul", "com1", "lpt1"];
    if name.is_empty() || reserved.contains(&name.to_lowercase().as_str()) {
        name = format!("untitled {name}").trim().to_owned();
    }
    name
}

/// A YAML scalar: as it is when plain is safe, else double-quoted (JSON's escapes are
/// YAML's).
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '/' | '.'))
        && s.chars().next().is_some_and(char::is_alphabetic)
        && !matches!(
            s.to_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// A memory as Markdown with front matter.
fn to_markdown(m: &MemoryView, titles: &HashMap<&str, &str>) -> String {
    let mut out = String::from("---\n");
    out.push_str(&format!(
        "id: {}\n",
        serde_json::to_string(&m.id).unwrap_or_default()
    ));
    out.push_str(&format!(
        "title: {}\n",
        serde_json::to_string(&m.title).unwrap_or_default()
    ));
    out.push_str(&format!("kind: {}\n", yaml_str(&m.kind)));
    if !m.tags.is_empty() {
        out.push_str("tags:\n");
        for t in &m.tags {
            out.push_str(&format!("  - {}\n", yaml_str(t)));
        }
    }
    out.push_str(&format!("importance: {}\n", m.importance));
    out.push_str(&format!(
        "collection: {}\n",
        yaml_str(m.collection_name.as_deref().unwrap_or(&m.collection))
    ));
    out.push_str(&format!("created: {}\n", m.created_at));
    out.push_str(&format!("updated: {}\n", m.updated_at));
    out.push_str(&format!("author: {}\n", yaml_str(&m.author)));
    if let Some(task) = &m.task {
        out.push_str("task:\n");
        out.push_str(&format!("  status: {}\n", task.status));
        out.push_str(&format!("  priority: {}\n", task.priority));
        if let Some(due) = &task.due {
            out.push_str(&format!("  due: {due}\n"));
        }
        out.push_str(&format!("  difficulty: {}\n", task.difficulty));
        out.push_str(&format!("  xp: {}\n", task.xp));
    }
    if !m.links.is_empty() {
        out.push_str("links:\n");
        for l in &m.links {
            out.push_str(&format!(
                "  - target: {}\n",
                serde_json::to_string(&l.target).unwrap_or_default()
            ));
            out.push_str(&format!(
                "    relation: {}\n",
                serde_json::to_string(&l.relation).unwrap_or_default()
            ));
            if let Some(title) = titles.get(l.target.as_str()) {
                out.push_str(&format!(
                    "    title: {}\n",
                    serde_json::to_string(title).unwrap_or_default()
                ));
            }
        }
    }
    out.push_str("---\n");
    // The body exactly as it is: import takes everything after the closing line.
    out.push_str(&m.content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_taken_in_natural_order() {
        let mut names = vec![
            "chat-10.md",
            "chat-2.md",
            "Chat-1.md",
            "chat-02.md",
            "chat-1.md",
            "a/b9",
            "a/b10",
            "z",
        ];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            names,
            [
                "Chat-1.md",
                "a/b9",
                "a/b10",
                "chat-1.md",
                "chat-2.md",
                "chat-02.md",
                "chat-10.md",
                "z"
            ]
        );
    }

    #[test]
    fn front_matter_is_read_and_aliases_are_refused() {
        let mut summary = Summary::default();
        let note = parse_markdown(
            "---\ntitle: Hello\ntags: [one, \"#two\"]\ncreated: 2024-01-02\ncssclass: wide\n---\nBody #three\n",
            "file",
            &mut summary,
        )
        .expect("note");
        assert_eq!(note.title, "Hello");
        assert_eq!(note.content, "Body #three\n");
        let tags: Vec<&str> = note.tags.iter().map(String::as_str).collect();
        assert_eq!(tags, ["one", "three", "two"]);
        assert_eq!(note.created, Some("2024-01-02".parse().expect("date")));
        assert_eq!(summary.ignored_fields.get("cssclass"), Some(&1));
        let laughs = "---\na: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n---\nbody";
        let err = parse_markdown(laughs, "f", &mut summary).expect_err("aliases");
        assert!(err.contains("aliases"), "{err}");
        let err = parse_markdown("---\ntitle: [unclosed\n---\nbody", "f", &mut summary)
            .expect_err("bad yaml");
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn safe_names_stay_inside_the_folder() {
        assert_eq!(safe_name("evil\u{202e}dm.exe"), "evildm.exe");
        for title in ["../../etc/passwd", "..", ".", "a/b\\c", "", "con", "\u{0}x"] {
            let name = safe_name(title);
            let path = Path::new(&name);
            assert!(
                path.components().count() == 1
                    && path.components().all(|c| matches!(c, Component::Normal(_))),
                "{title:?} → {name:?}"
            );
        }
    }
}
