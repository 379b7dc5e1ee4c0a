//! What a query asks for: the words that tell memories apart (question words and stop words
//! left out), the word stems to mark in snippets, and a time it names ("last week", "in May
//! 2023", "yesterday").
//!
//! One analysis for every mode and every caller: the API, the UI, the CLI and MCP all reach
//! search through [`crate::SearchIndex::search`].

use mnemon_crdt::Timestamp;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
};

const DAY: i64 = 86_400_000;

/// Words that ask rather than describe: left out of the keyword query and of highlighting.
/// (The indexes keep every word: a quoted phrase still finds them.)
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "both", "but", "by", "can", "could", "did", "do", "does", "doing",
    "for", "from", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "itself", "me", "my", "of", "on", "or",
    "our", "ours", "she", "should", "so", "some", "than", "that", "the", "their", "theirs", "them",
    "then", "there", "these", "they", "this", "those", "to", "us", "was", "we", "were", "what",
    "when", "where", "which", "while", "who", "whom", "whose", "why", "will", "with", "would",
    "you", "your", "yours", "s", "t", "ever", "kind", "sort", "type", "much", "many",
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A query, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysed {
    /// The text for the keyword index and the embedder: the query without the time it
    /// names, and for the keyword index without its stop words.
    pub words: String,
    /// The query as given, without the time it names (what the embedder sees).
    pub meaning: String,
    /// Stems of the words worth marking in a snippet.
    pub stems: Vec<String>,
    /// The time range the query names, as `[since, until)` in milliseconds.
    pub when: Option<(i64, i64)>,
}

/// The analyser the keyword index indexes with (registered as `en_stem`, tantivy's own
/// definition): words, lower case, English stems.
pub(crate) fn analyser() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The stems of `text`'s words, in order.
pub(crate) fn stems(analyser: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyser.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

fn is_stop(word: &str) -> bool {
    STOP_WORDS.contains(&word.to_lowercase().as_str())
}

/// Reads `text` as asked at `now`; without a `now`, no time is looked for.
pub fn analyse(text: &str, now: Option<Timestamp>) -> Analysed {
    let (rest, when) = match now {
        Some(now) => take_time(text, now),
        None => (text.to_owned(), None),
    };
    let rest = if rest.trim().is_empty() {
        // Only a time ("yesterday"): search for it as words too, so something matches.
        text.to_owned()
    } else {
        rest
    };
    // A quoted phrase or an operator is the user's own query syntax: kept as written.
    let syntax = rest.contains(['"', ':', '+', '^', '(', ')'])
        || rest
            .split_whitespace()
            .any(|w| w.starts_with('-') && w.len() > 1 || matches!(w, "AND" | "OR" | "NOT"));
    let words = if syntax {
        rest.clone()
    } else {
        let kept: Vec<&str> = rest
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty() && !is_stop(w))
            .collect();
        if kept.is_empty() {
            rest.clone()
        } else {
            kept.join(" ")
        }
    };
    let mut analyser = analyser();
    let mut stems = stems(&mut analyser, &words);
    stems.retain(|s| !is_stop(s));
    stems.sort_unstable();
    stems.dedup();
    Analysed {
        words,
        meaning: rest,
        stems,
        when,
    }
}

/// Finds a time expression in `text`: returns the text without it and the range it names.
fn take_time(text: &str, now: Timestamp) -> (String, Option<(i64, i64)>) {
    let tokens: Vec<(usize, &str)> = word_spans(text);
    let lower: Vec<String> = tokens.iter().map(|(_, w)| w.to_lowercase()).collect();
    let at = |i: usize| lower.get(i).map_or("", String::as_str);
    for i in 0..lower.len() {
        if let Some((len, range)) = time_at(&lower[i..], now).or_else(|| {
            // "in May 2023", "during 2022", "since March", "before 2020", "after June 2021"
            let lead = at(i);
            if !matches!(lead, "in" | "during" | "since" | "before" | "after") {
                return None;
            }
            let (len, (start, end)) = calendar_at(&lower[i + 1..], now)?;
            let range = match lead {
                "since" => (start, i64::MAX),
                "before" => (i64::MIN, start),
                "after" => (end, i64::MAX),
                _ => (start, end),
            };
            Some((len + 1, range))
        }) {
            let from = tokens[i].0;
            let (last_at, last) = tokens[i + len - 1];
            let to = last_at + last.len();
            let rest = format!("{} {}", &text[..from], &text[to..]);
            return (
                rest.split_whitespace().collect::<Vec<_>>().join(" "),
                Some(range),
            );
        }
    }
    (text.to_owned(), None)
}

/// The words of `text` with their byte offsets.
fn word_spans(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

fn start_of_day(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// Monday 00:00 UTC of the week holding `t` (1970-01-01 was a Thursday).
fn start_of_week(t: i64) -> i64 {
    let day = t.div_euclid(DAY);
    (day - (day + 3).rem_euclid(7)) * DAY
}

fn month_start(year: i64, month: i64) -> i64 {
    let (year, month) = (
        year + (month - 1).div_euclid(12),
        (month - 1).rem_euclid(12) + 1,
    );
    Timestamp::from_date(year, month as u32, 1).as_millis()
}

fn number(word: &str) -> Option<i64> {
    let small = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    match word {
        "a" | "an" => Some(1),
        _ => word
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .or_else(|| small.iter().position(|s| *s == word).map(|i| i as i64 + 1)),
    }
}

/// A relative time at the start of `words`: its length in words and its range.
fn time_at(words: &[String], now: Timestamp) -> Option<(usize, (i64, i64))> {
    let t = now.as_millis();
    let (year, month, _) = now.date();
    let (year, month) = (year, i64::from(month));
    let w = |i: usize| words.get(i).map_or("", String::as_str);
    let today = start_of_day(t);
    let week = start_of_week(t);
    match (w(0), w(1)) {
        ("today", _) => return Some((1, (today, today + DAY))),
        ("yesterday", _) => return Some((1, (today - DAY, today))),
        ("this", "week") => return Some((2, (week, week + 7 * DAY))),
        ("last", "week") => return Some((2, (week - 7 * DAY, week))),
        ("this", "month") => {
            return Some((2, (month_start(year, month), month_start(year, month + 1))));
        }
        ("last", "month") => {
            return Some((2, (month_start(year, month - 1), month_start(year, month))));
        }
        ("this", "year") => return Some((2, (month_start(year, 1), month_start(year + 1, 1)))),
        ("last", "year") => return Some((2, (month_start(year - 1, 1), month_start(year, 1)))),
        _ => {}
    }
    // "3 days ago", "two weeks ago", "a month ago"
    if w(2) == "ago"
        && let Some(n) = number(w(0))
    {
        let range = match w(1).trim_end_matches('s') {
            "day" => (today - n * DAY, today - (n - 1) * DAY),
            "week" => (week - n * 7 * DAY, week - (n - 1) * 7 * DAY),
            "month" => (
                month_start(year, month - n),
                month_start(year, month - n + 1),
            ),
            "year" => (month_start(year - n, 1), month_start(year - n + 1, 1)),
            _ => return None,
        };
        return Some((3, range));
    }
    // "past 3 days", "last two weeks"
    if matches!(w(0), "past" | "last")
        && let Some(n) = number(w(1))
    {
        let since = match w(2).trim_end_matches('s') {
            "day" => today - (n - 1) * DAY,
            "week" => t - n * 7 * DAY,
            "month" => month_start(year, month - n),
            "year" => month_start(year - n, month),
            _ => return None,
        };
        return Some((3, (since, i64::MAX)));
    }
    None
}

/// A month or a year at the start of `words` ("May 2023", "May", "2023").
fn calendar_at(words: &[String], now: Timestamp) -> Option<(usize, (i64, i64))> {
    let w = |i: usize| words.get(i).map_or("", String::as_str);
    let year_of = |word: &str| {
        word.parse::<i64>()
            .ok()
            .filter(|y| word.len() == 4 && (1900..=2200).contains(y))
    };
    if let Some(m) = MONTHS
        .iter()
        .position(|name| w(0) == *name || (w(0).len() == 3 && name.starts_with(w(0))))
    {
        let month = m as i64 + 1;
        let (now_year, now_month, _) = now.date();
        return Some(match year_of(w(1)) {
            Some(year) => (2, (month_start(year, month), month_start(year, month + 1))),
            // A month alone: its latest occurrence not after now.
            None => {
                let year = if month <= i64::from(now_month) {
                    now_year
                } else {
                    now_year - 1
                };
                (1, (month_start(year, month), month_start(year, month + 1)))
            }
        });
    }
    let year = year_of(w(0))?;
    Some((1, (month_start(year, 1), month_start(year + 1, 1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str) -> Timestamp {
        date.parse().expect("date")
    }

    fn ms(date: &str) -> i64 {
        at(date).as_millis()
    }

    #[test]
    fn question_words_are_left_out() {
        let a = analyse("How do I make pizza?", Some(at("2026-11-30")));
        assert_eq!(a.words, "make pizza");
        assert_eq!(a.stems, vec!["make", "pizza"]);
        assert_eq!(a.when, None);
        // Nothing but stop words: searched as given.
        assert_eq!(
            analyse("who are you", Some(at("2026-11-30"))).words,
            "who are you"
        );
        // Query syntax is the user's.
        assert_eq!(
            analyse("\"the who\"", Some(at("2026-11-30"))).words,
            "\"the who\""
        );
        assert_eq!(analyse("pizza -pineapple", None).words, "pizza -pineapple");
        assert_eq!(analyse("tea AND cake", None).words, "tea AND cake");
        // A dash inside a word is not syntax.
        assert_eq!(analyse("the e-mail of Ann", None).words, "e mail Ann");
    }

    #[test]
    fn relative_times_name_ranges() {
        // 2026-11-30 is a Monday.
        let now = at("2026-11-30T15:00Z");
        let a = analyse("what did I cook last week", Some(now));
        assert_eq!(a.when, Some((ms("2026-11-23"), ms("2026-11-30"))));
        assert_eq!(a.words, "cook");
        assert_eq!(a.meaning, "what did I cook");
        assert_eq!(
            analyse("notes from yesterday", Some(now)).when,
            Some((ms("2026-11-29"), ms("2026-11-30")))
        );
        assert_eq!(
            analyse("notes from today", Some(now)).when,
            Some((ms("2026-11-30"), ms("2026-12-01")))
        );
        assert_eq!(
            analyse("dentist 3 days ago", Some(now)).when,
            Some((ms("2026-11-27"), ms("2026-11-28")))
        );
        assert_eq!(
            analyse("trips last month", Some(now)).when,
            Some((ms("2026-10-01"), ms("2026-11-01")))
        );
        assert_eq!(
            analyse("trips this year", Some(now)).when,
            Some((ms("2026-01-01"), ms("2027-01-01")))
        );
        assert_eq!(
            analyse("runs in the past two weeks", Some(now)).when,
            Some((ms("2026-11-16T15:00Z"), i64::MAX))
        );
    }

    #[test]
    fn without_now_no_time_is_read() {
        let a = analyse("what did I cook last week", None);
        assert_eq!(a.when, None);
        assert_eq!(a.words, "cook last week");
    }

    #[test]
    fn calendar_times_name_ranges() {
        let now = at("2026-03-10");
        let a = analyse("Where did we go in May 2023?", Some(now));
        assert_eq!(a.when, Some((ms("2023-05-01"), ms("2023-06-01"))));
        assert_eq!(a.words, "go");
        // A month alone is its latest occurrence.
        assert_eq!(
            analyse("the party in December", Some(now)).when,
            Some((ms("2025-12-01"), ms("2026-01-01")))
        );
        assert_eq!(
            analyse("books read in 2024", Some(now)).when,
            Some((ms("2024-01-01"), ms("2025-01-01")))
        );
        assert_eq!(
            analyse("moves since June 2021", Some(now)).when,
            Some((ms("2021-06-01"), i64::MAX))
        );
        assert_eq!(
            analyse("jobs before 2020", Some(now)).when,
            Some((i64::MIN, ms("2020-01-01")))
        );
        // A year-like number that is not a year, and "may" the verb, name no time.
        assert_eq!(analyse("in 12 steps", Some(now)).when, None);
        assert_eq!(analyse("what may happen", Some(now)).when, None);
        assert_eq!(analyse("room 2023", Some(now)).when, None);
    }
}
