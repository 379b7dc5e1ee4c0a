//! Embedders turn text into vectors. The built-in [`HashEmbedder`] needs no model files.

use std::fmt;

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The model or service failed.
    #[error("embedding failed: {0}")]
    Failed(String),
}

/// Turns texts into fixed-length vectors, in batches.
pub trait Embedder: Send + Sync + fmt::Debug {
    /// A stable name of the model and its version; vectors of different models never mix.
    fn model_id(&self) -> &str;
    /// The length of every vector.
    fn dimension(&self) -> usize;
    /// One L2-normalised vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// How far its vectors are evidence of meaning: their weight in hybrid search and the
    /// similarity below which they say nothing. A model of meaning unless it says otherwise.
    fn profile(&self) -> Profile {
        Profile::MEANING
    }
}

/// `embedder`'s vectors for `texts`, checked before an index takes them: one per text,
/// each of the embedder's dimension, every value a finite number. A vector of another
/// length would make every later search of the index mis-measure or fail, so a model that
/// answers wrongly fails its batch instead, naming what was wrong.
pub fn embed_checked(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
    let vectors = embedder.embed(texts)?;
    let model = embedder.model_id();
    if vectors.len() != texts.len() {
        return Err(EmbedError::Failed(format!(
            "{model} returned {} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    let dimension = embedder.dimension();
    for vector in &vectors {
        if vector.len() != dimension {
            return Err(EmbedError::Failed(format!(
                "{model} returned a vector of {} dimensions, expected {dimension}",
                vector.len()
            )));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(EmbedError::Failed(format!(
                "{model} returned a vector holding a value that is not a finite number"
            )));
        }
    }
    Ok(vectors)
}

/// How hybrid search weighs an embedder's ranking beside the keyword index's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// The keyword ranking's share of a hybrid score (0 to 1); the vectors have the rest.
    pub keyword_share: f32,
    /// Cosine similarity below which a vector hit is no evidence: when a query's best
    /// vector hit is below it, the vectors say nothing about that query.
    pub floor: f32,
}

impl Profile {
    /// A model of meaning (a sentence-embedding network, an embeddings service): a strong
    /// second opinion. Under all-MiniLM-L6-v2 made-up words and unrelated short queries
    /// score at most about 0.18 against a note, "bread baking" 0.21 against a sourdough
    /// note, and a dialogue turn that answers a question 0.3–0.7.
    pub const MEANING: Profile = Profile {
        keyword_share: 0.7,
        floor: 0.2,
    };
    /// A lexical embedder (hashed words and word pieces): a weak second opinion to BM25,
    /// useful for word pieces and misspellings. Made-up words score up to about 0.2.
    pub const LEXICAL: Profile = Profile {
        keyword_share: 0.85,
        floor: 0.22,
    };
}

/// The built-in embedder: signed feature hashing of words, word pairs and character
/// trigrams, L2-normalised.
///
/// It is lexical, not semantic: texts are close when they share words or word pieces,
/// not when they mean the same thing in other words. Its output is a pure function of the
/// text (FNV-1a hashing, no randomness, no model files), so every node computes the same
/// vectors.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimension: usize,
    model_id: String,
}

/// Words too common to tell texts apart.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on",
    "or", "that", "the", "this", "to", "was", "with",
];

impl Default for HashEmbedder {
    fn default() -> Self {
        HashEmbedder::new(512)
    }
}

impl HashEmbedder {
    /// A hash embedder with vectors of `dimension` entries.
    pub fn new(dimension: usize) -> HashEmbedder {
        HashEmbedder {
            dimension: dimension.max(8),
            model_id: format!("mnemon-hash-v1-{dimension}"),
        }
    }

    fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimension];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
            .collect();
        let mut add = |tag: u8, feature: &[u8], weight: f32| {
            let hash = fnv1a(tag, feature);
            let index = (hash % self.dimension as u64) as usize;
            let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
            vector[index] += sign * weight;
        };
        for word in &words {
            add(b'w', word.as_bytes(), 1.0);
            let padded: Vec<char> = std::iter::once('<')
                .chain(word.chars())
                .chain(std::iter::once('>'))
                .collect();
            if padded.len() > 4 {
                let mut buf = [0u8; 12];
                for gram in padded.windows(3) {
                    let mut len = 0;
                    for c in gram {
                        len += c.encode_utf8(&mut buf[len..]).len();
                    }
                    add(b'c', &buf[..len], 0.25);
                }
            }
        }
        for pair in words.windows(2) {
            let mut feature = Vec::with_capacity(pair[0].len() + pair[1].len() + 1);
            feature.extend_from_slice(pair[0].as_bytes());
            feature.push(b' ');
            feature.extend_from_slice(pair[1].as_bytes());
            add(b'b', &feature, 0.5);
        }
        // Dampen repeated features, then normalise.
        for x in &mut vector {
            *x = x.signum() * x.abs().sqrt();
        }
        normalize(&mut vector);
        vector
    }
}

impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }

    fn profile(&self) -> Profile {
        Profile::LEXICAL
    }
}

/// FNV-1a, 64 bits, over a tag byte and the feature.
fn fnv1a(tag: u8, bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(&tag).chain(bytes) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Scales `vector` to unit length (a zero vector stays zero).
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in vector {
            *x /= norm;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn deterministic_normalised_and_lexical() {
        let e = HashEmbedder::default();
        let v = e
            .embed(&[
                "the quick brown fox",
                "the quick brown fox",
                "quick brown foxes",
                "tax law",
            ])
            .expect("embed");
        assert_eq!(v[0], v[1]);
        assert!((cosine(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        assert!(cosine(&v[0], &v[2]) > cosine(&v[0], &v[3]) + 0.2);
        // A fixed value: the embedding must never change between versions or nodes.
        let known = e.embed(&["mnemon"]).expect("embed");
        let nonzero = known[0].iter().filter(|x| **x != 0.0).count();
        assert_eq!(nonzero, 7, "one word feature and six trigrams");
        assert_eq!(e.embed(&[""]).expect("embed")[0], vec![0.0; 512]);
    }

    /// The built-in embedder, answering wrongly for texts that say how.
    #[derive(Debug, Default)]
    pub(crate) struct Wrong(HashEmbedder);

    impl Embedder for Wrong {
        fn model_id(&self) -> &str {
            "wrong-model"
        }
        fn dimension(&self) -> usize {
            self.0.dimension()
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            let mut out = self.0.embed(texts)?;
            for (text, vector) in texts.iter().zip(&mut out) {
                if text.contains("short") {
                    vector.pop();
                }
                if text.contains("nan") {
                    vector[0] = f32::NAN;
                }
            }
            if texts.iter().any(|t| t.contains("missing")) {
                out.pop();
            }
            Ok(out)
        }
    }

    #[test]
    fn vectors_of_the_wrong_length_count_or_values_are_refused_naming_what_was_wrong() {
        let wrong = Wrong::default();
        let fine = embed_checked(&wrong, &["a kettle", "the garden"]).expect("fine");
        assert_eq!(fine.len(), 2);
        let refused = |texts: &[&str]| {
            embed_checked(&wrong, texts)
                .expect_err("refused")
                .to_string()
        };
        let e = refused(&["a kettle", "a short one"]);
        assert!(
            e.contains("wrong-model") && e.contains("511 dimensions, expected 512"),
            "{e}"
        );
        let e = refused(&["a nan here"]);
        assert!(e.contains("not a finite number"), "{e}");
        let e = refused(&["a kettle", "missing"]);
        assert!(e.contains("1 vectors for 2 texts"), "{e}");
    }
}
