//! Markdown to HTML for memory pages, safe to put in a page: raw HTML in the source is
//! shown as text, and links and images may only point to web, mail or local addresses.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// Renders `source` (CommonMark with tables, strikethrough and task lists) to HTML.
pub(crate) fn render(source: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(source, options).map(|event| match event {
        // Raw HTML is the author's text, not markup for this page.
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut html = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
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
    use super::render;

    #[test]
    fn markdown_is_rendered_and_html_is_not() {
        let html = render("# Hi\n\n*soft* <script>alert(1)</script>\n\n- [x] done");
        assert!(html.contains("<h1>Hi</h1>"), "{html}");
        assert!(html.contains("<em>soft</em>"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("checkbox"), "{html}");
    }

    #[test]
    fn only_safe_link_targets() {
        let html = render(
            "[a](javascript:alert(1)) [b](JavaScript:x) [c](https://x.example/) [d](/m/1) [e](data:text/html,x) ![i](vbscript:x)",
        );
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{html}");
        assert!(!html.contains("data:text"), "{html}");
        assert!(!html.contains("vbscript"), "{html}");
        assert!(html.contains("href=\"https://x.example/\""), "{html}");
        assert!(html.contains("href=\"/m/1\""), "{html}");
    }
}
