//! An [`Embedder`] that calls an OpenAI-compatible `/v1/embeddings` endpoint: Ollama,
//! llama.cpp's server, vLLM, OpenAI.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::embed::{EmbedError, Embedder, normalize};

/// Texts sent per request.
const BATCH: usize = 64;
/// Longest a request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A client of an OpenAI-compatible embeddings endpoint.
pub struct OpenAiEmbedder {
    endpoint: String,
    model: String,
    key: Option<String>,
    model_id: String,
    dimension: usize,
    agent: ureq::Agent,
}

impl std::fmt::Debug for OpenAiEmbedder {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: usize,
}

impl OpenAiEmbedder {
    /// Connects to the endpoint at `url` (a base such as `http://127.0.0.1:11434/v1`, or the
    /// full `…/embeddings` address) for `model`, with an optional bearer `key`. Embeds one
    /// probe text to learn the dimension, so a wrong address fails here, clearly.
    pub fn connect(
        url: &str,
        model: &str,
        key: Option<String>,
    ) -> Result<OpenAiEmbedder, EmbedError> {
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(EmbedError::Failed(format!(
                "embedding endpoint {url:?} must start with http:// or https://"
            )));
        }
        if model.trim().is_empty() {
            return Err(EmbedError::Failed(
                "the embedding model name is empty".into(),
            ));
        }
        let endpoint = if url.ends_with("/embeddings") {
            url.to_owned()
        } else {
            format!("{url}/embeddings")
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut embedder = OpenAiEmbedder {
            model_id: format!("openai:{model}@{endpoint}"),
            endpoint,
            model: model.to_owned(),
            key,
            dimension: 0,
            agent,
        };
        let probe = embedder.request(&["dimension probe"])?;
        embedder.dimension = probe.first().map_or(0, Vec::len);
        if embedder.dimension == 0 {
            return Err(EmbedError::Failed(format!(
                "{} returned an empty embedding",
                embedder.endpoint
            )));
        }
        Ok(embedder)
    }

    fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let fail = |what: String| EmbedError::Failed(format!("{}: {what}", self.endpoint));
        let mut request = self.agent.post(&self.endpoint);
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request
            .send_json(Request {
                model: &self.model,
                input: texts,
            })
            .map_err(|e| fail(format!("unreachable or failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(fail(format!("HTTP {status}: {body}")));
        }
        let parsed: Response = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_json()
            .map_err(|e| fail(format!("not an embeddings response: {e}")))?;
        if parsed.data.len() != texts.len() {
            return Err(fail(format!(
                "asked for {} embeddings, got {}",
                texts.len(),
                parsed.data.len()
            )));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for item in parsed.data {
            let slot = out
                .get_mut(item.index)
                .ok_or_else(|| fail(format!("embedding index {} out of range", item.index)))?;
            *slot = item.embedding;
        }
        // Lengths and values are checked where every embedder's are (`embed_checked`).
        for vector in &mut out {
            normalize(vector);
        }
        Ok(out)
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            out.extend(self.request(batch)?);
        }
        Ok(out)
    }
}
