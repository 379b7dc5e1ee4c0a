//! Capability tokens a node's owner made for agents and people: their names, scopes,
//! times, and a hash of each secret, in one private file (`tokens.json`).
//!
//! The secret is shown once, when the token is made; the file keeps its SHA-256 only, so
//! reading the file gives no token. Revoking a token, or its expiry, ends it at once: the
//! server asks [`Tokens::stands`] on every request and before every call a stream or an
//! MCP session makes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mnemon_api::{
    Api, Caller, Error, Grant, IssuedToken, NewToken, Scope, TokenView, check_token_name,
    parse_duration,
};
use serde::{Deserialize, Serialize};

/// The prefix of a capability token's secret (the owner's full token starts `mnm_`).
pub const TOKEN_PREFIX: &str = "mnt_";
/// The most tokens a node keeps.
pub const MAX_TOKENS: usize = 256;
/// How often a token's last use is written down (it is kept to the minute).
const LAST_USED_STEP_MS: i64 = 60_000;
/// The file format's version.
const VERSION: u32 = 1;

/// One token as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// Random, never reused: what a web UI session signed in with this token remembers.
    id: String,
    name: String,
    /// Hex SHA-256 of the secret ([`hash`]).
    hash: String,
    scope: Scope,
    /// Unix milliseconds.
    created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used: Option<i64>,
}

impl Entry {
    fn stands(&self, now: i64) -> bool {
        self.expires.is_none_or(|end| now < end)
    }

    fn view(&self, now: i64) -> TokenView {
        TokenView {
            name: self.name.clone(),
            scope: self.scope.clone(),
            collection_names: Vec::new(),
            created_at: rfc3339(self.created),
            last_used_at: self.last_used.map(rfc3339),
            expires_at: self.expires.map(rfc3339),
            expired: !self.stands(now),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    tokens: Vec<Entry>,
}

/// The node's capability tokens, shared by the server's requests (internally locked).
/// Another process's change to the file (`mnemon token revoke` while `mnemon mcp` runs
/// offline) is read at the next look.
#[derive(Debug)]
pub struct Tokens {
    file: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    entries: Vec<Entry>,
    /// The file's modification time and length when last read or written.
    seen: Option<(std::time::SystemTime, u64)>,
}

fn stamp(file: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(file: &Path) -> Result<Vec<Entry>, Error> {
    match std::fs::read(file) {
        Ok(bytes) => {
            let parsed: File = serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("{} is damaged: {e}", file.display())))?;
            if parsed.version != VERSION {
                return Err(Error::internal(format!(
                    "{} has format version {}; this mnemon reads {VERSION}",
                    file.display(),
                    parsed.version
                )));
            }
            Ok(parsed.tokens)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::internal(format!(
            "cannot read {}: {e}",
            file.display()
        ))),
    }
}

impl Tokens {
    /// The tokens kept in `file` (none if it does not exist yet). A file that cannot be
    /// read is an error naming it: starting without it would let its tokens be lost.
    pub fn open(file: &Path) -> Result<Arc<Tokens>, Error> {
        let seen = stamp(file);
        let entries = read(file)?;
        Ok(Arc::new(Tokens {
            file: Some(file.to_owned()),
            loaded: Mutex::new(Loaded { entries, seen }),
        }))
    }

    /// Tokens kept in memory only (tests, a server without a data folder).
    pub fn in_memory() -> Arc<Tokens> {
        Arc::new(Tokens {
            file: None,
            loaded: Mutex::new(Loaded {
                entries: Vec::new(),
                seen: None,
            }),
        })
    }

    /// The tokens, read again first if another process changed the file. A file that
    /// became unreadable keeps what was read before (and says so in the log).
    fn lock(&self) -> MutexGuard<'_, Loaded> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = &self.file {
            let now = stamp(file);
            if now != loaded.seen {
                match read(file) {
                    Ok(entries) => loaded.entries = entries,
                    Err(e) => tracing::warn!(error = %e.message, "keeping the tokens read before"),
                }
                loaded.seen = now;
            }
        }
        loaded
    }

    fn save(&self, loaded: &mut Loaded) -> Result<(), Error> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let file = File {
            version: VERSION,
            tokens: loaded.entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::internal(format!("cannot encode the tokens: {e}")))?;
        mnemon_identity::private::write_private(path, &bytes)
            .map_err(|e| Error::internal(format!("cannot write {}: {e}", path.display())))?;
        loaded.seen = stamp(path);
        Ok(())
    }

    /// Makes a token named `name` with `scope`, working until `expires` (Unix ms) if
    /// given; answers its secret (shown this once) and its view.
    pub fn issue(
        &self,
        name: &str,
        scope: Scope,
        expires: Option<i64>,
        now: i64,
    ) -> Result<(String, TokenView), Error> {
        check_token_name(name)?;
        if expires.is_some_and(|end| end <= now) {
            return Err(Error::invalid("expires_in: a token must work for a while"));
        }
        let mut loaded = self.lock();
        if loaded
            .entries
            .iter()
            .any(|e| e.name.eq_ignore_ascii_case(name))
        {
            return Err(Error::conflict(format!(
                "a token named {name:?} exists already; revoke it first or pick another name"
            )));
        }
        if loaded.entries.len() >= MAX_TOKENS {
            return Err(Error::conflict(format!(
                "this node has {MAX_TOKENS} tokens already; revoke some first"
            )));
        }
        let secret = format!("{TOKEN_PREFIX}{}", random_hex());
        let entry = Entry {
            id: random_hex()[..32].to_owned(),
            name: name.to_owned(),
            hash: hash(&secret),
            scope,
            created: now,
            expires,
            last_used: None,
        };
        let view = entry.view(now);
        loaded.entries.push(entry);
        if let Err(e) = self.save(&mut loaded) {
            loaded.entries.pop();
            return Err(e);
        }
        Ok((secret, view))
    }

    /// Ends the token named `name`, at once.
    pub fn revoke(&self, name: &str) -> Result<(), Error> {
        let mut loaded = self.lock();
        let Some(at) = loaded.entries.iter().position(|e| e.name == name) else {
            return Err(Error::not_found(format!("no token named {name:?}")));
        };
        let gone = loaded.entries.remove(at);
        if let Err(e) = self.save(&mut loaded) {
            loaded.entries.insert(at, gone);
            return Err(e);
        }
        Ok(())
    }

    /// Every token, oldest first (collection names not filled in).
    pub fn list(&self, now: i64) -> Vec<TokenView> {
        self.lock().entries.iter().map(|e| e.view(now)).collect()
    }

    /// The caller `presented` makes, if it is a token that stands at `now`; its last use
    /// is noted. The caller's grant keeps asking this registry whether it still stands.
    pub fn caller(self: &Arc<Tokens>, presented: &str, now: i64) -> Option<Caller> {
        if !presented.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let wanted = hash(presented);
        let mut loaded = self.lock();
        let entry = loaded
            .entries
            .iter_mut()
            .find(|e| constant_time_eq(e.hash.as_bytes(), wanted.as_bytes()))?;
        if !entry.stands(now) {
            return None;
        }
        let changed = entry
            .last_used
            .is_none_or(|last| now - last >= LAST_USED_STEP_MS);
        if changed {
            entry.last_used = Some(now);
        }
        let (id, name, scope) = (entry.id.clone(), entry.name.clone(), entry.scope.clone());
        // Best effort: a last use that cannot be written down refuses no one.
        if changed && let Err(e) = self.save(&mut loaded) {
            tracing::warn!(error = %e.message, "cannot note a token's last use");
        }
        drop(loaded);
        Some(self.grant(id, name, scope))
    }

    /// The caller a web UI session signed in with the token `id` ([`Grant::id`]) makes,
    /// if that very token still stands (revoked and made again under its name is another
    /// token).
    pub fn session_caller(self: &Arc<Tokens>, id: &str, now: i64) -> Option<Caller> {
        let (name, scope) = {
            let loaded = self.lock();
            let entry = loaded
                .entries
                .iter()
                .find(|e| e.id == id && e.stands(now))?;
            (entry.name.clone(), entry.scope.clone())
        };
        Some(self.grant(id.to_owned(), name, scope))
    }

    fn grant(self: &Arc<Tokens>, id: String, name: String, scope: Scope) -> Caller {
        let tokens = Arc::downgrade(self);
        let stands = id.clone();
        Caller::Token(Arc::new(Grant {
            id,
            name,
            scope,
            live: Box::new(move || {
                tokens
                    .upgrade()
                    .is_some_and(|tokens| tokens.stands(&stands, unix_ms()))
            }),
        }))
    }

    /// Whether the token `id` exists and has not expired.
    fn stands(&self, id: &str, now: i64) -> bool {
        self.lock()
            .entries
            .iter()
            .any(|e| e.id == id && e.stands(now))
    }
}

/// Makes the token `request` asks for, its collections (ids or names) resolved through
/// `node` as the owner sees it: `mnemon token new`, offline or through `POST
/// /api/v1/tokens`.
pub fn issue(node: &dyn Api, tokens: &Tokens, request: &NewToken) -> Result<IssuedToken, Error> {
    let now = unix_ms();
    let collections = match &request.collections {
        None => None,
        Some(wanted) if wanted.is_empty() => {
            return Err(Error::invalid(
                "collections: name at least one, or leave it out for every collection",
            ));
        }
        Some(wanted) => Some(wanted),
    };
    let collections = if let Some(wanted) = collections {
        let known = node.collections()?;
        let mut ids = Vec::new();
        for wanted in wanted {
            let found: Vec<_> = known
                .iter()
                .filter(|c| c.id == *wanted || c.name == *wanted)
                .collect();
            let id = match found.as_slice() {
                [one] => one.id.clone(),
                [] => {
                    return Err(Error::not_found(format!(
                        "no collection named or with id {wanted:?}"
                    )));
                }
                _ => {
                    return Err(Error::conflict(format!(
                        "several collections are named {wanted:?}; name it by its id"
                    )));
                }
            };
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Some(ids)
    } else {
        None
    };
    let expires = match &request.expires_in {
        None => None,
        Some(text) => {
            let secs =
                parse_duration(text).map_err(|e| Error::invalid(format!("expires_in: {e}")))?;
            let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            Some(now.saturating_add(ms))
        }
    };
    let scope = Scope {
        collections,
        write: !request.read_only,
    };
    let (token, view) = tokens.issue(&request.name, scope, expires, now)?;
    Ok(IssuedToken {
        token,
        view: named(node, vec![view])?.remove(0),
    })
}

/// Every token, with the names of its collections as `node` knows them.
pub fn list(node: &dyn Api, tokens: &Tokens) -> Result<Vec<TokenView>, Error> {
    named(node, tokens.list(unix_ms()))
}

fn named(node: &dyn Api, mut views: Vec<TokenView>) -> Result<Vec<TokenView>, Error> {
    if views.iter().all(|v| v.scope.collections.is_none()) {
        return Ok(views);
    }
    let known = node.collections()?;
    for view in &mut views {
        view.collection_names = view
            .scope
            .collections
            .iter()
            .flatten()
            .map(|id| {
                known
                    .iter()
                    .find(|c| c.id == *id)
                    .map_or_else(|| id.clone(), |c| c.name.clone())
            })
            .collect();
    }
    Ok(views)
}

/// The SHA-256 of a token's secret, in hex, as the file keeps it.
fn hash(secret: &str) -> String {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    digest.update(b"mnemon-capability-token-1\0");
    digest.update(secret.as_bytes());
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 32 random bytes in hex.
fn random_hex() -> String {
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn rfc3339(ms: i64) -> String {
    mnemon_crdt::Timestamp::from_millis(ms).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_only(collection: &str) -> Scope {
        Scope {
            collections: Some(vec![collection.to_owned()]),
            write: false,
        }
    }

    #[test]
    fn a_token_works_until_revoked_or_expired_and_its_secret_is_never_kept() {
        let dir = std::env::temp_dir().join(format!("mnemon-tokens-{}", random_suffix()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("tokens.json");
        let tokens = Tokens::open(&file).expect("no file yet");
        let now = unix_ms();
        let (secret, view) = tokens
            .issue("claude", read_only("c1"), Some(now + 10_000), now)
            .expect("issued");
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_eq!(view.scope, read_only("c1"));
        let kept = std::fs::read_to_string(&file).expect("saved");
        assert!(!kept.contains(&secret[TOKEN_PREFIX.len()..]), "{kept}");
        assert!(
            tokens.issue("claude", read_only("c2"), None, now).is_err(),
            "names are unique"
        );
        assert!(
            tokens
                .issue("bad name", read_only("c1"), None, now)
                .is_err()
        );

        let caller = tokens.caller(&secret, now + 1).expect("stands");
        let Caller::Token(grant) = &caller else {
            panic!("a token is not the owner");
        };
        assert_eq!(grant.name, "claude");
        assert!(tokens.caller(&format!("{secret}x"), now).is_none());
        assert!(tokens.caller("mnm_owner", now).is_none());
        assert!(
            tokens.caller(&secret, now + 10_000).is_none(),
            "expired at its end"
        );
        // A restart reads the same tokens, with the last use noted.
        let again = Tokens::open(&file).expect("reopened");
        assert!(again.caller(&secret, now + 2).is_some());
        assert!(again.list(now)[0].last_used_at.is_some());
        // Revoked: the grant made before no longer stands either.
        assert!((grant.live)(), "stands before the revoke");
        tokens.revoke("claude").expect("revoked");
        assert!(!(grant.live)());
        assert!(tokens.caller(&secret, now + 1).is_none());
        assert!(tokens.revoke("claude").is_err(), "gone");
        // A token made again under the same name is another token: a new secret, a new
        // id, and what the old one signed in stays signed out.
        let (second, _) = tokens
            .issue("claude", read_only("c1"), None, now)
            .expect("again");
        assert_ne!(second, secret);
        assert!(tokens.caller(&secret, now).is_none());
        assert!(tokens.session_caller(&grant.id, now).is_none());
        assert!(!(grant.live)());
        let Some(Caller::Token(again)) = tokens.caller(&second, now) else {
            panic!("the new token stands");
        };
        assert_ne!(again.id, grant.id);
        assert!(tokens.session_caller(&again.id, now).is_some());
        std::fs::write(&file, b"{not json").expect("damage");
        let err = Tokens::open(&file).expect_err("a damaged file is an error");
        assert!(err.message.contains("tokens.json"), "{}", err.message);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    fn random_suffix() -> String {
        random_hex()[..12].to_owned()
    }
}
