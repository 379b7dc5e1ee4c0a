//! A tiny cross-encoder with random weights, written as the sentence-transformers
//! `CrossEncoder` layout (`config.json` naming `BertForSequenceClassification`, a
//! WordPiece `tokenizer.json`, `model.safetensors` with the `bert.` prefix, a pooler and a
//! one-output classifier), and a plain reference of its forward pass.
//!
//! The reference shares nothing with the node's BERT but the weights: naive loops in f64
//! over the tensors as generated, and its own tokenizer (the vocabulary is whole
//! lower-case words, so a text's tokens are its words).

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};

const HIDDEN: usize = 32;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const INTERMEDIATE: usize = 64;
const POSITIONS: usize = 128;
const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A generated model: its vocabulary and tensors (name → shape, values; row-major).
#[derive(Debug)]
pub struct TinyBert {
    vocab: Vec<String>,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TinyBert {
    /// A model knowing `words` (lower-case, no punctuation), its weights drawn from `seed`.
    pub fn generate(seed: u64, words: &[&str]) -> TinyBert {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut vocab: Vec<String> = SPECIAL.iter().map(|s| (*s).to_owned()).collect();
        for word in words {
            if !vocab.iter().any(|v| v == word) {
                vocab.push((*word).to_owned());
            }
        }
        let mut tensors = BTreeMap::new();
        let mut random = |name: &str, shape: &[usize], scale: f32, around: f32| {
            let n = shape.iter().product();
            let values = (0..n)
                .map(|_| around + scale * (rng.r#gen::<f32>() * 2.0 - 1.0))
                .collect();
            tensors.insert(format!("bert.{name}"), (shape.to_vec(), values));
        };
        let h = HIDDEN;
        random(
            "embeddings.word_embeddings.weight",
            &[vocab.len(), h],
            1.0,
            0.0,
        );
        random(
            "embeddings.position_embeddings.weight",
            &[POSITIONS, h],
            0.3,
            0.0,
        );
        random("embeddings.token_type_embeddings.weight", &[2, h], 0.5, 0.0);
        random("embeddings.LayerNorm.weight", &[h], 0.1, 1.0);
        random("embeddings.LayerNorm.bias", &[h], 0.1, 0.0);
        for l in 0..LAYERS {
            let p = format!("encoder.layer.{l}");
            for (name, out, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", INTERMEDIATE, h),
                ("output.dense", h, INTERMEDIATE),
            ] {
                random(&format!("{p}.{name}.weight"), &[out, inp], 0.4, 0.0);
                random(&format!("{p}.{name}.bias"), &[out], 0.1, 0.0);
            }
            for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
                random(&format!("{p}.{norm}.weight"), &[h], 0.1, 1.0);
                random(&format!("{p}.{norm}.bias"), &[h], 0.1, 0.0);
            }
        }
        random("pooler.dense.weight", &[h, h], 0.4, 0.0);
        random("pooler.dense.bias", &[h], 0.1, 0.0);
        // The classifier sits outside the encoder (no `bert.` prefix).
        let classifier: Vec<f32> = (0..h).map(|_| rng.r#gen::<f32>() * 2.0 - 1.0).collect();
        tensors.insert("classifier.weight".into(), (vec![1, h], classifier));
        tensors.insert("classifier.bias".into(), (vec![1], vec![0.1]));
        TinyBert { vocab, tensors }
    }

    /// Writes `config.json`, `tokenizer.json` and `model.safetensors` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("model folder");
        let config = serde_json::json!({
            "_name_or_path": "tiny-random-cross-encoder",
            "architectures": ["BertForSequenceClassification"],
            "model_type": "bert",
            "vocab_size": self.vocab.len(),
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE,
            "hidden_act": "gelu",
            "max_position_embeddings": POSITIONS,
            "type_vocab_size": 2,
            "layer_norm_eps": 1e-12,
            "id2label": {"0": "LABEL_0"},
            "label2id": {"LABEL_0": 0},
        });
        std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
        std::fs::write(
            dir.join("tokenizer.json"),
            self.tokenizer_json().to_string(),
        )
        .expect("tokenizer");
        std::fs::write(dir.join("model.safetensors"), self.safetensors()).expect("weights");
    }

    fn tokenizer_json(&self) -> serde_json::Value {
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .vocab
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i.into()))
            .collect();
        let special = |token: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": token, "type_id": type_id}});
        let sequence = |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
        let added: Vec<serde_json::Value> = SPECIAL
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)],
                "pair": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0),
                    sequence("B", 1), special("[SEP]", 1)],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]},
                },
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                "vocab": vocab},
        })
    }

    /// The safetensors file: a little-endian u64 header length, the JSON header, the data.
    fn safetensors(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, (shape, values)) in &self.tensors {
            let start = data.len();
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let mut header = serde_json::Value::Object(header).to_string().into_bytes();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    }

    fn id(&self, word: &str) -> usize {
        self.vocab.iter().position(|v| v == word).unwrap_or(1)
    }

    fn tensor(&self, name: &str) -> &[f32] {
        &self.tensors[name].1
    }

    /// The reference score of `query` and `passage` (whole vocabulary words, separated by
    /// white space): the sigmoid of the classifier over the pooled `[CLS]` vector.
    pub fn score(&self, query: &str, passage: &str) -> f64 {
        let mut ids = vec![self.id("[CLS]")];
        let mut types = vec![0];
        for word in query.split_whitespace() {
            ids.push(self.id(&word.to_lowercase()));
            types.push(0);
        }
        ids.push(self.id("[SEP]"));
        types.push(0);
        for word in passage.split_whitespace() {
            ids.push(self.id(&word.to_lowercase()));
            types.push(1);
        }
        ids.push(self.id("[SEP]"));
        types.push(1);
        let h = HIDDEN;
        let w = |name: &str| self.tensor(&format!("bert.{name}"));
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(t, (&id, &ty))| {
                (0..h)
                    .map(|j| {
                        f64::from(w("embeddings.word_embeddings.weight")[id * h + j])
                            + f64::from(w("embeddings.position_embeddings.weight")[t * h + j])
                            + f64::from(w("embeddings.token_type_embeddings.weight")[ty * h + j])
                    })
                    .collect()
            })
            .collect();
        let norm = |x: &mut Vec<Vec<f64>>, name: &str| {
            let (gain, bias) = (w(&format!("{name}.weight")), w(&format!("{name}.bias")));
            for row in x.iter_mut() {
                let mean = row.iter().sum::<f64>() / h as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
                let inv = 1.0 / (var + 1e-12).sqrt();
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (*v - mean) * inv * f64::from(gain[j]) + f64::from(bias[j]);
                }
            }
        };
        let linear = |x: &[Vec<f64>], name: &str, out: usize| -> Vec<Vec<f64>> {
            let (weight, bias) = (w(&format!("{name}.weight")), w(&format!("{name}.bias")));
            let inp = weight.len() / out;
            x.iter()
                .map(|row| {
                    (0..out)
                        .map(|o| {
                            f64::from(bias[o])
                                + (0..inp)
                                    .map(|i| f64::from(weight[o * inp + i]) * row[i])
                                    .sum::<f64>()
                        })
                        .collect()
                })
                .collect()
        };
        norm(&mut x, "embeddings.LayerNorm");
        let d = h / HEADS;
        for l in 0..LAYERS {
            let p = format!("encoder.layer.{l}");
            let q = linear(&x, &format!("{p}.attention.self.query"), h);
            let k = linear(&x, &format!("{p}.attention.self.key"), h);
            let v = linear(&x, &format!("{p}.attention.self.value"), h);
            let mut context = vec![vec![0.0; h]; x.len()];
            for head in 0..HEADS {
                let cols = head * d..(head + 1) * d;
                for (t, out) in context.iter_mut().enumerate() {
                    let logits: Vec<f64> = k
                        .iter()
                        .map(|key| {
                            cols.clone().map(|c| q[t][c] * key[c]).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let top = logits.iter().copied().fold(f64::MIN, f64::max);
                    let weights: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for c in cols.clone() {
                        out[c] = weights
                            .iter()
                            .zip(&v)
                            .map(|(p, val)| p * val[c])
                            .sum::<f64>()
                            / total;
                    }
                }
            }
            let attended = linear(&context, &format!("{p}.attention.output.dense"), h);
            for (row, a) in x.iter_mut().zip(attended) {
                row.iter_mut().zip(a).for_each(|(v, a)| *v += a);
            }
            norm(&mut x, &format!("{p}.attention.output.LayerNorm"));
            let mut up = linear(&x, &format!("{p}.intermediate.dense"), INTERMEDIATE);
            for v in up.iter_mut().flatten() {
                *v = 0.5 * *v * (1.0 + erf(*v / std::f64::consts::SQRT_2));
            }
            let down = linear(&up, &format!("{p}.output.dense"), h);
            for (row, dn) in x.iter_mut().zip(down) {
                row.iter_mut().zip(dn).for_each(|(v, d)| *v += d);
            }
            norm(&mut x, &format!("{p}.output.LayerNorm"));
        }
        let pooled: Vec<f64> = linear(&x[..1], "pooler.dense", h)[0]
            .iter()
            .map(|v| v.tanh())
            .collect();
        let classifier = self.tensor("classifier.weight");
        let logit = f64::from(self.tensor("classifier.bias")[0])
            + pooled
                .iter()
                .zip(classifier)
                .map(|(p, c)| p * f64::from(*c))
                .sum::<f64>();
        1.0 / (1.0 + (-logit).exp())
    }
}

/// The error function, by its Maclaurin series (|x| < 3) or its continued fraction.
fn erf(x: f64) -> f64 {
    if x.abs() >= 3.0 {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))), to 60 terms.
        let a = x.abs();
        let mut fraction = 0.0;
        for n in (1..60).rev() {
            fraction = (n as f64 / 2.0) / (a + fraction);
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction);
        return (1.0 - erfc).copysign(x);
    }
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        let next = term / (2 * n + 1) as f64;
        sum += next;
        if next.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-2.0, -0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
        ] {
            assert!((super::erf(x) - want).abs() < 1e-12, "erf({x})");
        }
    }
}
