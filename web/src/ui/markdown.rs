//! Markdown to HTML for memory pages, safe to put in a page: raw HTML in the source is
//! shown as text, and links and images may only point to web, mail or local addresses.
//!
//! Notes read like a notes app's: `[[Title]]`, `[[Title|shown]]` and `[[Title#heading]]`
//! link to the memory of that title (one not written yet shows as such, with a link that
//! starts it), `![[Title]]` shows that memory's text inline (one level deep), and bare
//! web addresses and `#tags` are links.

use std::collections::HashMap;

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

use super::encode_component;

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_WIKILINKS
}

/// How wikilinks resolve: the lower-cased title → the memory's id, and the HTML of the
/// memories `![[…]]` shows inline (by id).
#[derive(Debug, Default)]
pub(crate) struct Links {
    /// Lower-cased, trimmed title → id.
    pub(crate) ids: HashMap<String, String>,
    /// Id → that memory's text, rendered without embeds.
    pub(crate) embedded: HashMap<String, String>,
}

impl Links {
    fn id(&self, title: &str) -> Option<&str> {
        self.ids.get(&key(title)).map(String::as_str)
    }
}

/// How a title is looked up: trimmed, lower-cased.
pub(crate) fn key(title: &str) -> String {
    title.trim().to_lowercase()
}

/// The titles `source`'s wikilinks name (without `#heading`), and whether each is an embed.
pub(crate) fn wikilinks(source: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    for event in Parser::new_ext(source, options()) {
        match event {
            Event::Start(Tag::Link {
                link_type: LinkType::WikiLink { .. },
                dest_url,
                ..
            }) => found.push((title_of(&dest_url).to_owned(), false)),
            Event::Start(Tag::Image {
                link_type: LinkType::WikiLink { .. },
                dest_url,
                ..
            }) => found.push((title_of(&dest_url).to_owned(), true)),
            _ => {}
        }
    }
    found
}

/// `Title` of `Title#heading`.
fn title_of(dest: &str) -> &str {
    dest.split_once('#').map_or(dest, |(title, _)| title).trim()
}

/// A heading's anchor as the page names it: lower-cased words joined by `-`.
fn anchor(heading: &str) -> String {
    heading
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// Renders `source` (CommonMark with tables, strikethrough, task lists and wikilinks) to
/// HTML, wikilinks resolved through `links`; task-list checkboxes are shown, not ticked.
pub(crate) fn render(source: &str, links: &Links) -> String {
    render_with(source, links, false)
}

/// Like [`render`], for the memory's own page: each task-list checkbox can be ticked
/// (`data-task` numbers them in order, as [`tick`] counts them).
pub(crate) fn render_page(source: &str, links: &Links) -> String {
    render_with(source, links, true)
}

/// `source` with its `n`th task-list checkbox (from 0) ticked or not: the one character
/// between its brackets changes, so the edit merges with any other. `None` if it has no
/// such checkbox.
pub(crate) fn tick(source: &str, n: usize, done: bool) -> Option<String> {
    let (_, range) = Parser::new_ext(source, options())
        .into_offset_iter()
        .filter(|(event, _)| matches!(event, Event::TaskListMarker(_)))
        .nth(n)?;
    // The marker's text is `[ ]`, `[x]` or `[X]`: the character inside is what changes.
    let marker = source.get(range.clone())?;
    let inside = range.start + marker.find('[')? + 1;
    let mut text = String::with_capacity(source.len());
    text.push_str(&source[..inside]);
    text.push(if done { 'x' } else { ' ' });
    text.push_str(&source[inside + 1..]);
    Some(text)
}

fn render_with(source: &str, links: &Links, tickable: bool) -> String {
    let mut out: Vec<Event<'_>> = Vec::new();
    let mut tasks = 0usize;
    // Inside a link or image (no links within links), a code block, or an embed's alt
    // text (skipped: the embed replaces it).
    let mut in_link = 0usize;
    // Per open link: whether it is an unwritten note's, inside its own span.
    let mut spans: Vec<bool> = Vec::new();
    let mut in_code = false;
    let mut skipping_embed = false;
    for event in Parser::new_ext(source, options()) {
        if skipping_embed {
            if matches!(event, Event::End(TagEnd::Image)) {
                skipping_embed = false;
            }
            continue;
        }
        match event {
            // Raw HTML is the author's text, not markup for this page.
            Event::Html(html) | Event::InlineHtml(html) => out.push(Event::Text(html)),
            Event::Start(Tag::Link {
                link_type: LinkType::WikiLink { .. },
                dest_url,
                title,
                id,
            }) => {
                in_link += 1;
                let (target, heading) = match dest_url.split_once('#') {
                    Some((t, h)) => (t.trim().to_owned(), Some(h.to_owned())),
                    None => (dest_url.trim().to_owned(), None),
                };
                spans.push(links.id(&target).is_none());
                match links.id(&target) {
                    Some(memory) => {
                        let fragment = heading
                            .map(|h| format!("#{}", anchor(&h)))
                            .unwrap_or_default();
                        out.push(Event::Start(Tag::Link {
                            link_type: LinkType::Inline,
                            dest_url: CowStr::from(format!("/m/{memory}{fragment}")),
                            title,
                            id,
                        }));
                    }
                    None => {
                        // A note not written yet: say so, and offer to start it.
                        out.push(Event::Html(CowStr::from(
                            "<span class=\"unresolved\" title=\"No memory has this title yet\">",
                        )));
                        out.push(Event::Start(Tag::Link {
                            link_type: LinkType::Inline,
                            dest_url: CowStr::from(format!(
                                "/?title={}#capture",
                                encode_component(&target)
                            )),
                            title: CowStr::from("Create this note"),
                            id,
                        }));
                    }
                }
            }
            Event::End(TagEnd::Link) => {
                in_link = in_link.saturating_sub(1);
                out.push(Event::End(TagEnd::Link));
                if spans.pop() == Some(true) {
                    out.push(Event::Html(CowStr::from("</span>")));
                }
            }
            Event::Start(Tag::Image {
                link_type: LinkType::WikiLink { .. },
                dest_url,
                ..
            }) => {
                skipping_embed = true;
                let target = title_of(&dest_url).to_owned();
                out.push(Event::Html(CowStr::from(embed(&target, links))));
            }
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                in_link += 1;
                spans.push(false);
                out.push(Event::Start(Tag::Link {
                    link_type,
                    dest_url: safe_url(dest_url),
                    title,
                    id,
                }));
            }
            Event::Start(Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                in_link += 1;
                out.push(Event::Start(Tag::Image {
                    link_type,
                    dest_url: safe_url(dest_url),
                    title,
                    id,
                }));
            }
            Event::End(TagEnd::Image) => {
                in_link = in_link.saturating_sub(1);
                out.push(Event::End(TagEnd::Image));
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                in_code = true;
                out.push(Event::Start(Tag::CodeBlock(kind)));
            }
            Event::End(TagEnd::CodeBlock) => {
                in_code = false;
                out.push(Event::End(TagEnd::CodeBlock));
            }
            Event::Text(text) if in_link == 0 && !in_code => linkify(text, &mut out),
            Event::TaskListMarker(done) if tickable => {
                out.push(Event::Html(CowStr::from(format!(
                    "<input type=\"checkbox\" class=\"tick\" data-task=\"{tasks}\" aria-label=\"Done\"{}> ",
                    if done { " checked" } else { "" }
                ))));
                tasks += 1;
            }
            other => out.push(other),
        }
    }
    name_headings(&mut out);
    let mut html = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, out.into_iter());
    html
}

/// Gives each heading without an id the anchor `[[Title#heading]]` links to.
fn name_headings(events: &mut [Event<'_>]) {
    let mut i = 0;
    while i < events.len() {
        if let Event::Start(Tag::Heading { id: None, .. }) = &events[i] {
            let mut text = String::new();
            for event in &events[i + 1..] {
                match event {
                    Event::End(TagEnd::Heading(_)) => break,
                    Event::Text(t) | Event::Code(t) => text.push_str(t),
                    _ => {}
                }
            }
            if let Event::Start(Tag::Heading { id, .. }) = &mut events[i] {
                *id = Some(CowStr::from(anchor(&text)));
            }
        }
        i += 1;
    }
}

/// The HTML of `![[target]]`: the memory's text, inline, or a note that none has that
/// title yet.
fn embed(target: &str, links: &Links) -> String {
    let escaped = escape(target);
    match links.id(target) {
        Some(id) => format!(
            "<figure class=\"embed\"><figcaption><a href=\"/m/{id}\">{escaped}</a></figcaption>{}</figure>",
            links
                .embedded
                .get(id)
                .map_or("<p class=\"empty\">(not shown)</p>", String::as_str)
        ),
        None => format!(
            "<span class=\"unresolved\" title=\"No memory has this title yet\"><a href=\"/?title={}#capture\" title=\"Create this note\">{escaped}</a></span>",
            encode_component(target)
        ),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text with its bare web addresses and `#tags` made links.
fn linkify<'a>(text: CowStr<'a>, out: &mut Vec<Event<'a>>) {
    let source: &str = &text;
    let mut rest = 0;
    let mut i = 0;
    let bytes = source.as_bytes();
    while i < bytes.len() {
        let at_word_start = i == 0 || bytes[i - 1].is_ascii_whitespace() || bytes[i - 1] == b'(';
        let url = at_word_start
            && (source[i..].starts_with("https://") || source[i..].starts_with("http://"));
        let tag = at_word_start
            && bytes[i] == b'#'
            && source[i + 1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() && !c.is_ascii_digit());
        if !(url || tag) {
            i += 1;
            continue;
        }
        let start = if tag { i + 1 } else { i };
        let mut end = start
            + source[start..]
                .find(|c: char| {
                    if tag {
                        !(c.is_alphanumeric() || matches!(c, '_' | '-' | '/'))
                    } else {
                        c.is_whitespace() || matches!(c, '<' | '>' | '"')
                    }
                })
                .unwrap_or(source.len() - start);
        if url {
            // Punctuation that ends a sentence is not part of the address.
            while end > start && source[..end].ends_with(['.', ',', ';', ':', '!', '?', ')']) {
                end -= 1;
            }
        }
        if rest < i {
            out.push(Event::Text(CowStr::from(source[rest..i].to_owned())));
        }
        let (href, shown) = if tag {
            (
                format!(
                    "/?tag={}",
                    encode_component(&source[start..end].to_lowercase())
                ),
                source[i..end].to_owned(),
            )
        } else {
            (source[i..end].to_owned(), source[i..end].to_owned())
        };
        out.push(Event::Start(Tag::Link {
            link_type: LinkType::Autolink,
            dest_url: CowStr::from(href),
            title: CowStr::Borrowed(""),
            id: CowStr::Borrowed(""),
        }));
        out.push(Event::Text(CowStr::from(shown)));
        out.push(Event::End(TagEnd::Link));
        rest = end;
        i = end.max(i + 1);
    }
    if rest == 0 {
        out.push(Event::Text(text));
    } else if rest < source.len() {
        out.push(Event::Text(CowStr::from(source[rest..].to_owned())));
    }
}

/// The words of `source` without Markdown's marks, on one line: what lists and search
/// results show of a memory.
pub(crate) fn plain(source: &str) -> String {
    let mut text = String::with_capacity(source.len());
    for event in Parser::new_ext(source, options()) {
        match event {
            Event::Text(t) | Event::Code(t) => {
                text.push_str(&t);
                text.push(' ');
            }
            Event::SoftBreak | Event::HardBreak | Event::End(_) => text.push(' '),
            Event::TaskListMarker(done) => text.push_str(if done { "☑ " } else { "☐ " }),
            Event::Html(t) | Event::InlineHtml(t) => text.push_str(&t),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `url` if it is http(s), mailto, or relative to this site; otherwise `#`.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim_start().to_ascii_lowercase();
    let scheme = lower
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|s| !s.contains(['/', '?', '#']));
    match scheme {
        None | Some("http" | "https" | "mailto") => url,
        Some(_) => CowStr::Borrowed("#"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_plain(source: &str) -> String {
        render(source, &Links::default())
    }

    #[test]
    fn markdown_is_rendered_and_html_is_not() {
        let html = render_plain("# Hi there\n\n*soft* <script>alert(1)</script>\n\n- [x] done");
        assert!(html.contains("<h1 id=\"hi-there\">Hi there</h1>"), "{html}");
        assert!(html.contains("<em>soft</em>"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("checkbox"), "{html}");
    }

    #[test]
    fn only_safe_link_targets() {
        let html = render_plain(
            "[a](javascript:alert(1)) [b](JavaScript:x) [c](https://x.example/) [d](/m/1) [e](data:text/html,x) ![i](vbscript:x)",
        );
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{html}");
        assert!(!html.contains("data:text"), "{html}");
        assert!(!html.contains("vbscript"), "{html}");
        assert!(html.contains("href=\"https://x.example/\""), "{html}");
        assert!(html.contains("href=\"/m/1\""), "{html}");
    }

    #[test]
    fn wikilinks_resolve_and_the_unwritten_offer_to_start_a_note() {
        let mut links = Links::default();
        links.ids.insert("pizza dough".into(), "ID1".into());
        links.ids.insert("stand-up".into(), "ID2".into());
        links
            .embedded
            .insert("ID2".into(), "<p>Daily at <em>nine</em></p>".into());
        let source = "See [[Pizza Dough]], [[pizza dough|the dough]], [[Pizza dough#Proofing time]] and [[Sauce <b>]].\n\n![[Stand-up]]\n\n![[Nowhere]]";
        assert_eq!(
            wikilinks(source),
            [
                ("Pizza Dough".to_owned(), false),
                ("pizza dough".to_owned(), false),
                ("Pizza dough".to_owned(), false),
                ("Sauce <b>".to_owned(), false),
                ("Stand-up".to_owned(), true),
                ("Nowhere".to_owned(), true),
            ]
        );
        let html = render(source, &links);
        assert!(
            html.contains("<a href=\"/m/ID1\">Pizza Dough</a>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"/m/ID1\">the dough</a>"), "{html}");
        assert!(html.contains("href=\"/m/ID1#proofing-time\""), "{html}");
        assert!(
            html.contains("<span class=\"unresolved\" title=\"No memory has this title yet\"><a href=\"/?title=Sauce%20%3Cb%3E#capture\" title=\"Create this note\">Sauce &lt;b&gt;</a></span>"),
            "{html}"
        );
        assert!(!html.contains("<b>"), "{html}");
        assert!(
            html.contains("<figure class=\"embed\"><figcaption><a href=\"/m/ID2\">Stand-up</a></figcaption><p>Daily at <em>nine</em></p></figure>"),
            "{html}"
        );
        assert!(html.contains("/?title=Nowhere#capture"), "{html}");
    }

    #[test]
    fn bare_addresses_and_tags_are_links_but_not_in_code() {
        let html = render_plain(
            "Read https://example.org/a?b=1. Tagged #Recipes and #tea-time, not #1 or a#b.\n\n`#code https://x.example` and\n\n    #block https://y.example\n\n[a link https://z.example](https://w.example)",
        );
        assert!(
            html.contains("<a href=\"https://example.org/a?b=1\">https://example.org/a?b=1</a>."),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/?tag=recipes\">#Recipes</a>"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/?tag=tea-time\">#tea-time</a>"),
            "{html}"
        );
        assert!(!html.contains("tag=1"), "{html}");
        assert!(!html.contains("tag=b"), "{html}");
        assert!(!html.contains("href=\"https://x.example"), "{html}");
        assert!(!html.contains("href=\"https://y.example"), "{html}");
        assert!(!html.contains("href=\"https://z.example"), "{html}");
        assert!(html.contains("href=\"https://w.example\""), "{html}");
    }

    #[test]
    fn a_tick_changes_one_character_of_the_right_checkbox() {
        let source =
            "Shopping:\n\n- [ ] milk\n- [X] eggs\n  - [ ] free range\n\n`- [ ] not a task`\n";
        assert_eq!(
            tick(source, 0, true).as_deref(),
            Some("Shopping:\n\n- [x] milk\n- [X] eggs\n  - [ ] free range\n\n`- [ ] not a task`\n")
        );
        assert_eq!(
            tick(source, 1, false).as_deref(),
            Some("Shopping:\n\n- [ ] milk\n- [ ] eggs\n  - [ ] free range\n\n`- [ ] not a task`\n")
        );
        assert_eq!(
            tick(source, 2, true).as_deref(),
            Some("Shopping:\n\n- [ ] milk\n- [X] eggs\n  - [x] free range\n\n`- [ ] not a task`\n")
        );
        assert_eq!(tick(source, 3, true), None, "code is not a task");
        let html = render_page(source, &Links::default());
        assert!(html.contains("<input type=\"checkbox\" class=\"tick\" data-task=\"1\" aria-label=\"Done\" checked>"), "{html}");
        assert!(!render(source, &Links::default()).contains("data-task"));
    }

    #[test]
    fn previews_are_plain_text() {
        assert_eq!(
            plain(
                "# Standup\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] **done** [[Note|alias]] `code`"
            ),
            "Standup a b 1 2 ☑ done alias code"
        );
    }
}
