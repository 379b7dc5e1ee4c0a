//! Re-ranking by the chat model (`[search] rerank = "llm"`): the best 20 hits, numbered,
//! go to the `[chat]` endpoint with the query, and the model answers with their numbers,
//! most relevant first.
//!
//! The answer is read as data, never followed: numbers outside the list, repeats and
//! anything around the list are ignored, and hits it leaves out keep their order after
//! the ones it named. A memory that tries to talk the model into ranking it first can at
//! most move within these 20. An endpoint that fails leaves the search's own order.

use crate::ask::{ChatClient, Message};
use crate::search::embed::EmbedError;
use crate::search::rerank::Reranker;

/// How many of the best hits the model orders.
pub const LLM_DEPTH: usize = 20;
/// The longest a re-ranking request may take, answer included; then the search answers
/// in its own order.
const LLM_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);
/// Characters of each passage put into the prompt.
const PASSAGE_CHARS: usize = 600;

/// What the model is told.
const SYSTEM_PROMPT: &str = "You order search results. Given a query and numbered \
passages, answer with the numbers of the passages that help answer the query, most \
relevant first, as a JSON array such as [3, 1, 2]. Answer with the array only.";

/// A re-ranker that asks the configured chat model.
#[derive(Debug)]
pub struct LlmReranker {
    chat: ChatClient,
    name: String,
}

impl LlmReranker {
    /// Re-ranks with the model `chat` talks to.
    pub fn new(chat: ChatClient) -> LlmReranker {
        let name = format!("llm:{}", chat.model());
        LlmReranker {
            chat: chat.for_ranking(LLM_LIMIT),
            name,
        }
    }
}

/// The prompt for `query` over `passages`.
pub fn prompt(query: &str, passages: &[&str]) -> Vec<Message> {
    let mut user = format!("Query: {query}\n\nPassages:\n");
    for (i, passage) in passages.iter().enumerate() {
        let text: String = passage
            .chars()
            .take(PASSAGE_CHARS)
            .map(|c| {
                if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        user.push_str(&format!("[{}] {text}\n", i + 1));
    }
    vec![Message::system(SYSTEM_PROMPT), Message::user(user)]
}

/// The passages (0-based) an answer names, in its order: the numbers of its first
/// bracketed list outside a reasoning model's `<think>…</think>`, each from 1 to `count`
/// and once. None when it names none.
pub fn ranking(answer: &str, count: usize) -> Option<Vec<usize>> {
    let answer = match answer.rfind("</think>") {
        Some(end) => &answer[end + "</think>".len()..],
        None => answer,
    };
    let start = answer.find('[')?;
    let end = start + answer[start..].find(']')?;
    let mut order = Vec::new();
    for part in answer[start + 1..end].split(',') {
        let Ok(n) = part.trim().trim_matches('"').parse::<usize>() else {
            continue;
        };
        if (1..=count).contains(&n) && !order.contains(&(n - 1)) {
            order.push(n - 1);
        }
    }
    (!order.is_empty()).then_some(order)
}

impl Reranker for LlmReranker {
    fn name(&self) -> &str {
        &self.name
    }

    fn depth(&self) -> usize {
        LLM_DEPTH
    }

    /// The first named scores 1, the next a little less, down to above 0; those left out
    /// score 0.
    fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, EmbedError> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self
            .chat
            .complete(&prompt(query, passages), &mut |_| {})
            .map_err(|e| {
                tracing::warn!(error = %e.message, "re-ranking with the chat model failed; the search keeps its own order");
                EmbedError::Failed(e.message)
            })?;
        let Some(order) = ranking(&answer, passages.len()) else {
            tracing::warn!(
                "the chat model's re-ranking named no passage; the search keeps its own order"
            );
            return Err(EmbedError::Failed("no ranking in the answer".into()));
        };
        let mut scores = vec![0.0; passages.len()];
        let named = order.len() as f32;
        for (place, i) in order.into_iter().enumerate() {
            scores[i] = 1.0 - place as f32 / (named + 1.0);
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ranking_is_read_as_data() {
        assert_eq!(ranking("[3, 1, 2]", 3), Some(vec![2, 0, 1]));
        // Around the list, repeats, out of range, not numbers: ignored.
        assert_eq!(
            ranking(
                "Sure! The order is [2, \"4\", 2, 9, 0, x, 1] hope it helps [5]",
                4
            ),
            Some(vec![1, 3, 0])
        );
        assert_eq!(ranking("none of them", 4), None);
        assert_eq!(ranking("[]", 4), None);
        assert_eq!(ranking("[7]", 4), None);
        assert_eq!(
            ranking("<think>passage [4] looks off-topic</think>\n[2, 1]", 4),
            Some(vec![1, 0])
        );
    }

    #[test]
    fn the_prompt_numbers_each_passage_on_one_line() {
        let long = "x".repeat(5000);
        let messages = prompt("pizza", &["Pizza dough\nflour, water", &long]);
        let user = &messages[1].content;
        assert!(user.contains("Query: pizza"));
        assert!(user.contains("[1] Pizza dough flour, water\n"));
        assert!(user.contains(&format!("[2] {}\n", "x".repeat(PASSAGE_CHARS))));
        assert!(!user.contains(&"x".repeat(PASSAGE_CHARS + 1)));
    }
}
