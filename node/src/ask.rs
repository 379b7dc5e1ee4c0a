//! Questions answered from the memories: hybrid retrieval, a prompt that numbers the
//! memories so the answer can cite them (`[1]`), and the answer streamed from an
//! OpenAI-compatible `chat/completions` endpoint (Ollama, llama.cpp's server, vLLM,
//! OpenAI) as server-sent events.
//!
//! Nothing leaves the node unless the owner configured an endpoint elsewhere: the default
//! is a local Ollama on 127.0.0.1.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use mnemon_api::{AnswerView, AskEvent, AskRequest, CitationView, SearchQuery};
use mnemon_api::{Api, Error as ApiError, ErrorKind};
use serde::{Deserialize, Serialize};

/// The endpoint used when `config.toml` names none: a local Ollama.
pub const DEFAULT_CHAT_URL: &str = "http://127.0.0.1:11434/v1";
/// The model used when `config.toml` names none.
pub const DEFAULT_CHAT_MODEL: &str = "llama3.2";
/// Memories given to the model unless asked otherwise.
pub const DEFAULT_K: usize = 6;
/// Most memories given to the model.
pub const MAX_K: usize = 20;
/// Longest question accepted, in bytes.
pub const MAX_QUESTION: usize = 4096;
/// Characters of each memory put into the prompt.
const MEMORY_CHARS: usize = 2000;
/// Longest answer read, in bytes.
const MAX_ANSWER: usize = 1024 * 1024;
/// Longest line of an event stream read, in bytes.
const MAX_LINE: u64 = 1024 * 1024;

/// The instructions the model gets.
const SYSTEM_PROMPT: &str = "You answer questions using only the user's own memories, \
given below as numbered entries. Cite the entries you use with their numbers in square \
brackets, like [1] or [2][3], right after the statement they support. If the memories do \
not contain the answer, say so plainly instead of guessing. Be brief.";

/// A client of an OpenAI-compatible chat-completions endpoint.
pub struct ChatClient {
    endpoint: String,
    model: String,
    key: Option<String>,
    agent: ureq::Agent,
    /// Sent when set (0 for answers that must not vary from call to call).
    temperature: Option<f32>,
}

impl std::fmt::Debug for ChatClient {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// A chat message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

impl Message {
    /// A system message: instructions.
    pub fn system(content: impl Into<String>) -> Message {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

/// One streamed chunk (`chat.completion.chunk`) or a whole answer (`chat.completion`).
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Content>,
    #[serde(default)]
    message: Option<Content>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    content: Option<String>,
}

impl ChatClient {
    /// A client of the endpoint at `url` (an API base such as `http://127.0.0.1:11434/v1`,
    /// or the full `…/chat/completions` address) for `model`, with an optional bearer
    /// `key`. Nothing is sent until a question is asked.
    pub fn new(url: &str, model: &str, key: Option<String>) -> anyhow::Result<ChatClient> {
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("chat endpoint {url:?} must start with http:// or https://");
        }
        if model.trim().is_empty() {
            anyhow::bail!("the chat model name is empty");
        }
        let endpoint = if url.ends_with("/chat/completions") {
            url.to_owned()
        } else {
            format!("{url}/chat/completions")
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            // A local model may take a while to load before its first word.
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(ChatClient {
            endpoint,
            model: model.to_owned(),
            key,
            agent,
            temperature: None,
        })
    }

    /// The same client for ordering search results: each request bounded by `limit` as a
    /// whole (a search cannot wait as long as an answer streamed to a person), and
    /// temperature 0, so the same query gets the same order (pages stay consistent).
    pub fn for_ranking(mut self, limit: Duration) -> ChatClient {
        self.agent = ureq::Agent::config_builder()
            .timeout_global(Some(limit))
            .http_status_as_error(false)
            .build()
            .into();
        self.temperature = Some(0.0);
        self
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The endpoint's address.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `messages` and streams the answer: `on_delta(None)` once the endpoint accepted
    /// the request, then `on_delta(Some(text))` per piece of text. Returns the whole answer.
    pub fn complete(
        &self,
        messages: &[Message],
        on_delta: &mut dyn FnMut(Option<&str>),
    ) -> Result<String, ApiError> {
        let fail = |kind: ErrorKind, what: String| {
            ApiError::new(kind, format!("the chat endpoint {}: {what}", self.endpoint))
        };
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Accept", "text/event-stream");
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request
            .send_json(ChatRequest {
                model: &self.model,
                messages,
                stream: true,
                temperature: self.temperature,
            })
            .map_err(|e| {
                fail(
                    ErrorKind::Upstream,
                    format!(
                        "unreachable ({e}); is the model server running? Set [chat] url and model in the data folder's config.toml"
                    ),
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(300).collect());
            return Err(fail(
                ErrorKind::Upstream,
                format!("HTTP {status}: {message}"),
            ));
        }
        let streaming = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        on_delta(None);
        let mut answer = String::new();
        let reader = BufReader::new(response.into_body().into_reader());
        if !streaming {
            // An endpoint that ignores `stream`: one `chat.completion`.
            let mut text = String::new();
            reader
                .take(MAX_ANSWER as u64 * 4)
                .read_to_string(&mut text)
                .map_err(|e| fail(ErrorKind::Upstream, format!("reading the answer: {e}")))?;
            let chunk: Chunk = serde_json::from_str(&text)
                .map_err(|e| fail(ErrorKind::Upstream, format!("not a chat completion: {e}")))?;
            let content = chunk
                .choices
                .into_iter()
                .find_map(|c| c.message.and_then(|m| m.content))
                .unwrap_or_default();
            on_delta(Some(&content));
            return Ok(content);
        }
        let mut done = false;
        read_events(reader, &mut |_event, data| {
            if data.trim() == "[DONE]" {
                done = true;
                return Ok(false);
            }
            let chunk: Chunk = serde_json::from_str(data)
                .map_err(|e| format!("a streamed chunk is not JSON: {e}"))?;
            for choice in chunk.choices {
                if let Some(text) = choice.delta.and_then(|d| d.content)
                    && !text.is_empty()
                {
                    if answer.len() + text.len() > MAX_ANSWER {
                        return Err(format!("the answer passed {MAX_ANSWER} bytes"));
                    }
                    answer.push_str(&text);
                    on_delta(Some(&text));
                }
            }
            Ok(true)
        })
        .map_err(|e| fail(ErrorKind::Upstream, e))?;
        if !done && answer.is_empty() {
            return Err(fail(
                ErrorKind::Upstream,
                "the stream ended without an answer".into(),
            ));
        }
        Ok(answer)
    }
}

/// Reads server-sent events from `reader`, calling `on(event, data)` per event (`event`
/// is `message` when unnamed; multi-line data is joined with `\n`) until it returns
/// `Ok(false)` or the stream ends. Lines are capped, so an endless line cannot exhaust
/// memory.
pub fn read_events(
    mut reader: impl BufRead,
    on: &mut dyn FnMut(&str, &str) -> Result<bool, String>,
) -> Result<(), String> {
    let mut event = String::new();
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|e| format!("reading the event stream: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 == MAX_LINE {
            return Err(format!(
                "an event-stream line is longer than {MAX_LINE} bytes"
            ));
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            if !data.is_empty() || !event.is_empty() {
                let name = if event.is_empty() { "message" } else { &event };
                if !on(name, &data)? {
                    return Ok(());
                }
            }
            event.clear();
            data.clear();
            continue;
        }
        if text.starts_with(':') {
            continue; // a comment (keep-alive)
        }
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut event),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
}

/// The messages for `question` with `memories` (title, text) numbered from 1.
pub fn prompt(question: &str, memories: &[(String, String)]) -> Vec<Message> {
    let mut context = String::new();
    for (i, (title, text)) in memories.iter().enumerate() {
        let text: String = text.chars().take(MEMORY_CHARS).collect();
        context.push_str(&format!("[{}] {title}\n{text}\n\n", i + 1));
    }
    if memories.is_empty() {
        context.push_str("(no memories matched)\n\n");
    }
    vec![
        Message::system(SYSTEM_PROMPT),
        Message::user(format!("Memories:\n\n{context}Question: {question}")),
    ]
}

/// The source numbers `[n]` an answer cites, in order of first use, among `1..=count`.
pub fn cited(answer: &str, count: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find('[') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find(']') else { break };
        // `[1]`, and `[1, 2]` as some models write it.
        for part in rest[..end].split(',') {
            if let Ok(n) = part.trim().parse::<usize>()
                && (1..=count).contains(&n)
                && !out.contains(&n)
            {
                out.push(n);
            }
        }
        rest = &rest[end..];
    }
    out
}

/// Answers `request` from the memories `api` holds with `chat`.
pub fn answer(
    api: &dyn Api,
    chat: &ChatClient,
    request: &AskRequest,
    on_event: &mut dyn FnMut(AskEvent),
) -> Result<AnswerView, ApiError> {
    let question = request.question.trim();
    if question.is_empty() {
        return Err(ApiError::invalid("the question is empty"));
    }
    if question.len() > MAX_QUESTION {
        return Err(ApiError::invalid(format!(
            "the question is {} bytes; the limit is {MAX_QUESTION}",
            question.len()
        )));
    }
    let k = request.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::invalid(format!(
            "k must be from 1 to {MAX_K}, not {k}"
        )));
    }
    let hits = api.search(&SearchQuery {
        q: question.to_owned(),
        k: Some(k),
        mode: Some(mnemon_api::SearchMode::Hybrid),
        collection: request.collection.clone(),
        within: request.within.clone(),
        ..SearchQuery::default()
    })?;
    let mut sources = Vec::new();
    let mut memories = Vec::new();
    for hit in hits {
        // A hit deleted meanwhile is left out.
        let Ok(memory) = api.get(&hit.id) else {
            continue;
        };
        sources.push(CitationView {
            n: sources.len() + 1,
            id: memory.id,
            title: memory.title.clone(),
        });
        memories.push((memory.title, memory.content));
    }
    let messages = prompt(question, &memories);
    let text = chat.complete(&messages, &mut |delta| match delta {
        None => on_event(AskEvent::Sources(sources.clone())),
        Some(text) => on_event(AskEvent::Delta(text.to_owned())),
    })?;
    Ok(AnswerView {
        cited: cited(&text, sources.len()),
        answer: text,
        sources,
        model: chat.model().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citations_are_found_once_in_range() {
        assert_eq!(cited("A [2], b [1][2] and [1, 3]. [9] [x]", 3), [2, 1, 3]);
        assert_eq!(cited("none", 3), Vec::<usize>::new());
        assert_eq!(cited("[unclosed 1", 3), Vec::<usize>::new());
    }

    #[test]
    fn events_are_split_joined_and_capped() {
        let stream = ": keep-alive\n\ndata: one\n\nevent: delta\ndata: a\ndata: b\n\ndata: [DONE]\n\ndata: after\n\n";
        let mut seen = Vec::new();
        read_events(stream.as_bytes(), &mut |e, d| {
            seen.push((e.to_owned(), d.to_owned()));
            Ok(d != "[DONE]")
        })
        .expect("events");
        assert_eq!(
            seen,
            [
                ("message".into(), "one".into()),
                ("delta".into(), "a\nb".into()),
                ("message".into(), "[DONE]".into())
            ]
        );
        let endless = vec![b'x'; MAX_LINE as usize + 10];
        let err = read_events(&endless[..], &mut |_, _| Ok(true)).expect_err("too long");
        assert!(err.contains("longer than"), "{err}");
    }

    #[test]
    fn the_prompt_numbers_the_memories() {
        let messages = prompt(
            "where is the key?",
            &[
                ("Key".into(), "under the mat".into()),
                ("Car".into(), "blue".into()),
            ],
        );
        assert_eq!(messages[0].role, "system");
        assert!(messages[1].content.contains("[1] Key\nunder the mat"));
        assert!(messages[1].content.contains("[2] Car\nblue"));
        assert!(messages[1].content.ends_with("Question: where is the key?"));
    }
}
