//! The API of a running `mnemon serve`, as a [`Api`]: what the CLI uses when a service
//! holds the data folder.

use std::time::Duration;

use mnemon_api::{
    AnswerView, AskEvent, AskRequest, BackupFile, BackupRequest, BackupView, CollectionView,
    CreateCollection, CreateMemory, Created, DialRequest, Events, GraphQuery, GraphView, HitView,
    InviteRequest, InviteView, JoinRequest, JoinView, ListQuery, MemberView, MemoryView, Page,
    PatchMemory, PeerView, SearchQuery, ShareRequest,
};
use mnemon_api::{Api, Error as ApiError, ErrorKind, Gauge};
use serde::de::DeserializeOwned;

/// The kind of an error the running `serve` answered with: the code in its body when it
/// is one of the application's, else what its HTTP status means.
fn kind_of(status: u16, body: &serde_json::Value) -> ErrorKind {
    if let Some(kind) = body["error"]["code"]
        .as_str()
        .and_then(ErrorKind::from_code)
    {
        return kind;
    }
    match status {
        400 | 413 | 415 => ErrorKind::BadRequest,
        401 | 403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        422 => ErrorKind::Invalid,
        429 | 503 => ErrorKind::Unavailable,
        502 | 504 => ErrorKind::Upstream,
        _ => ErrorKind::Internal,
    }
}

/// The error an answer with status `status` and body `body` carries.
fn failure(status: u16, body: &str) -> ApiError {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let message = value["error"]["message"]
        .as_str()
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    ApiError::new(kind_of(status, &value), message)
}

/// A client of a node's HTTP API.
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Remote {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:7777`) with `token`.
    pub fn new(base: &str, token: String) -> Remote {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Remote {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    fn answer<T: DeserializeOwned>(
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ApiError> {
        let mut response =
            result.map_err(|e| ApiError::unavailable(format!("the running mnemon serve: {e}")))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| ApiError::unavailable(format!("reading the service's answer: {e}")))?;
        if status >= 400 {
            return Err(failure(status, &body));
        }
        let body = if body.is_empty() { "null" } else { &body };
        serde_json::from_str(body)
            .map_err(|e| ApiError::internal(format!("the service answered unexpectedly: {e}")))
    }

    /// Has the service replace its token (the old one, this client's, stops working).
    pub fn rotate_token(&self) -> Result<String, ApiError> {
        let answer: serde_json::Value = self.send_json("POST", "/token", &serde_json::json!({}))?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::internal("the service's answer has no token"))
    }

    /// Has the service make a capability token.
    pub fn create_token(
        &self,
        request: &mnemon_api::NewToken,
    ) -> Result<mnemon_api::IssuedToken, ApiError> {
        self.send_json("POST", "/tokens", request)
    }

    /// The service's capability tokens.
    pub fn list_tokens(&self) -> Result<Vec<mnemon_api::TokenView>, ApiError> {
        self.get_json("/tokens")
    }

    /// Has the service revoke the capability token `name`, at once.
    pub fn revoke_token(&self, name: &str) -> Result<(), ApiError> {
        let _: serde_json::Value = Self::answer(
            self.agent
                .delete(&format!(
                    "{}/api/v1/tokens/{}",
                    self.base,
                    mnemon_web::encode_component(name)
                ))
                .header("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )?;
        Ok(())
    }

    /// A link that signs a browser in to the service's web UI, once.
    pub fn sign_in_link(&self) -> Result<String, ApiError> {
        let answer: serde_json::Value =
            self.send_json("POST", "/signin-links", &serde_json::json!({}))?;
        answer["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::internal("the service's answer has no url"))
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.get_query(path, &[])
    }

    /// GET with query parameters (those given as `None` are left out; ureq encodes them).
    fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<T, ApiError> {
        Self::answer(
            self.agent
                .get(&format!("{}/api/v1{path}", self.base))
                .query_pairs(query.iter().filter_map(|(k, v)| Some((*k, v.as_deref()?))))
                .header("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )
    }

    fn send_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ApiError> {
        let url = format!("{}/api/v1{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let request = match method {
            "POST" => self.agent.post(&url),
            "PATCH" => self.agent.patch(&url),
            _ => self.agent.put(&url),
        };
        Self::answer(request.header("Authorization", &auth).send_json(body))
    }
}

impl Api for Remote {
    fn create(&self, new: CreateMemory) -> Result<MemoryView, ApiError> {
        let created: Created = self.send_json("POST", "/memories", &new)?;
        let mut view = self.get(&created.id)?;
        // The read does not carry the write's change-log position; the creation did.
        view.seq = view.seq.max(created.seq);
        view.created = created.created;
        Ok(view)
    }

    fn get(&self, id: &str) -> Result<MemoryView, ApiError> {
        self.get_json(&format!("/memories/{}", mnemon_web::encode_component(id)))
    }

    fn backlinks(&self, id: &str) -> Result<Vec<MemoryView>, ApiError> {
        self.get_json(&format!(
            "/memories/{}/backlinks",
            mnemon_web::encode_component(id)
        ))
    }

    fn graph(&self, query: &GraphQuery) -> Result<GraphView, ApiError> {
        self.get_query(
            "/graph",
            &[
                ("center", query.center.clone()),
                ("depth", query.depth.map(|d| d.to_string())),
                ("collection", query.collection.clone()),
                ("limit", query.limit.map(|l| l.to_string())),
            ],
        )
    }

    fn ask(
        &self,
        request: &AskRequest,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Result<AnswerView, ApiError> {
        // Answers take as long as the model needs: no overall time limit here.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .post(&format!("{}/api/v1/ask", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Accept", "text/event-stream")
            .send_json(request);
        let response = match response {
            Ok(r) if r.status().as_u16() >= 400 => return Remote::answer(Ok(r)),
            other => other
                .map_err(|e| ApiError::unavailable(format!("the running mnemon serve: {e}")))?,
        };
        let mut answer = None;
        let mut failure = None;
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        crate::ask::read_events(reader, &mut |event, data| {
            let bad = |e: serde_json::Error| format!("the service sent a bad {event} event: {e}");
            match event {
                "sources" => on_event(AskEvent::Sources(serde_json::from_str(data).map_err(bad)?)),
                "delta" => on_event(AskEvent::Delta(serde_json::from_str(data).map_err(bad)?)),
                "answer" => {
                    answer = Some(serde_json::from_str::<AnswerView>(data).map_err(bad)?);
                    return Ok(false);
                }
                "error" => {
                    let value: serde_json::Value = serde_json::from_str(data).map_err(bad)?;
                    failure = Some(ApiError::new(
                        kind_of(502, &value),
                        value["error"]["message"]
                            .as_str()
                            .unwrap_or(data)
                            .to_owned(),
                    ));
                    return Ok(false);
                }
                _ => {}
            }
            Ok(true)
        })
        .map_err(ApiError::unavailable)?;
        if let Some(e) = failure {
            return Err(e);
        }
        answer.ok_or_else(|| ApiError::unavailable("the service's answer stopped early"))
    }

    fn list(&self, query: &ListQuery) -> Result<Page<MemoryView>, ApiError> {
        self.get_query(
            "/memories",
            &[
                ("collection", query.collection.clone()),
                ("tag", query.tag.clone()),
                ("kind", query.kind.clone()),
                ("title", query.title.clone()),
                ("offset", query.offset.map(|o| o.to_string())),
                ("limit", query.limit.map(|l| l.to_string())),
            ],
        )
    }

    fn update(&self, id: &str, patch: PatchMemory) -> Result<MemoryView, ApiError> {
        self.send_json(
            "PATCH",
            &format!("/memories/{}", mnemon_web::encode_component(id)),
            &patch,
        )
    }

    fn delete(&self, id: &str) -> Result<(), ApiError> {
        let _: serde_json::Value = Self::answer(
            self.agent
                .delete(&format!(
                    "{}/api/v1/memories/{}",
                    self.base,
                    mnemon_web::encode_component(id)
                ))
                .header("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )?;
        Ok(())
    }

    fn resolve_conflict(&self, id: &str, theirs: bool) -> Result<MemoryView, ApiError> {
        self.send_json(
            "POST",
            &format!("/memories/{}/resolve", mnemon_web::encode_component(id)),
            &mnemon_api::ResolveConflict {
                keep: if theirs {
                    mnemon_api::Keep::Theirs
                } else {
                    mnemon_api::Keep::Ours
                },
            },
        )
    }

    fn forget_history(&self, id: &str) -> Result<MemoryView, ApiError> {
        self.send_json(
            "POST",
            &format!(
                "/memories/{}/forget-history",
                mnemon_web::encode_component(id)
            ),
            &serde_json::json!({}),
        )
    }

    fn move_memory(&self, id: &str, collection: &str) -> Result<MemoryView, ApiError> {
        self.send_json(
            "POST",
            &format!("/memories/{}/move", mnemon_web::encode_component(id)),
            &mnemon_api::MoveMemory {
                collection: collection.to_owned(),
            },
        )
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<HitView>, ApiError> {
        self.get_query(
            "/search",
            &[
                ("q", Some(query.q.clone())),
                ("k", query.k.map(|k| k.to_string())),
                ("mode", query.mode.map(|m| m.as_str().to_owned())),
                ("collection", query.collection.clone()),
                ("tag", query.tag.clone()),
                ("kind", query.kind.clone()),
                ("since", query.since.map(|m| m.to_string())),
                ("until", query.until.map(|m| m.to_string())),
                (
                    "min_importance",
                    query.min_importance.map(|m| m.to_string()),
                ),
                ("after", query.after.map(|s| s.to_string())),
                ("rerank", query.rerank.map(|r| r.to_string())),
            ],
        )
    }

    fn collections(&self) -> Result<Vec<CollectionView>, ApiError> {
        self.get_json("/collections")
    }

    fn create_collection(&self, name: &str) -> Result<CollectionView, ApiError> {
        self.send_json(
            "POST",
            "/collections",
            &CreateCollection {
                name: name.to_owned(),
            },
        )
    }

    fn name_node(&self, did: &str, name: &str) -> Result<(), ApiError> {
        let _: serde_json::Value = self.send_json(
            "PUT",
            &format!("/names/{}", mnemon_web::encode_component(did)),
            &mnemon_api::NameNode {
                name: name.to_owned(),
            },
        )?;
        Ok(())
    }

    fn rename_collection(&self, collection: &str, name: &str) -> Result<CollectionView, ApiError> {
        self.send_json(
            "PATCH",
            &format!("/collections/{}", mnemon_web::encode_component(collection)),
            &mnemon_api::RenameCollection {
                name: name.to_owned(),
            },
        )
    }

    fn delete_collection(
        &self,
        collection: &str,
    ) -> Result<mnemon_api::CollectionDeleted, ApiError> {
        Self::answer(
            self.agent
                .delete(&format!(
                    "{}/api/v1/collections/{}",
                    self.base,
                    mnemon_web::encode_component(collection)
                ))
                .header("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )
    }

    fn members(&self, collection: &str) -> Result<Vec<MemberView>, ApiError> {
        self.get_json(&format!(
            "/collections/{}/members",
            mnemon_web::encode_component(collection)
        ))
    }

    fn share(&self, collection: &str, request: ShareRequest) -> Result<MemberView, ApiError> {
        self.send_json(
            "POST",
            &format!(
                "/collections/{}/members",
                mnemon_web::encode_component(collection)
            ),
            &request,
        )
    }

    fn unshare(&self, collection: &str, did: &str) -> Result<(), ApiError> {
        let _: serde_json::Value = Self::answer(
            self.agent
                .delete(&format!(
                    "{}/api/v1/collections/{}/members/{}",
                    self.base,
                    mnemon_web::encode_component(collection),
                    mnemon_web::encode_component(did)
                ))
                .header("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )?;
        Ok(())
    }

    fn invite(&self, collection: &str, request: InviteRequest) -> Result<InviteView, ApiError> {
        self.send_json(
            "POST",
            &format!(
                "/collections/{}/invites",
                mnemon_web::encode_component(collection)
            ),
            &request,
        )
    }

    fn join(&self, request: JoinRequest) -> Result<JoinView, ApiError> {
        self.send_json("POST", "/join", &request)
    }

    fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        self.get_json("/peers")
    }

    fn dial(&self, request: DialRequest) -> Result<(), ApiError> {
        self.send_json("POST", "/peers", &request)
    }

    fn backup(&self, request: BackupRequest) -> Result<BackupFile, ApiError> {
        // A large store takes a while: no limit on the whole exchange, only on silence.
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let result = agent
            .post(&format!("{}/api/v1/backups", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(&request);
        let mut response =
            result.map_err(|e| ApiError::unavailable(format!("the running mnemon serve: {e}")))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(failure(status, &body));
        }
        let view: BackupView = response
            .headers()
            .get("x-mnemon-backup")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(|| {
                ApiError::internal("the service's backup has no X-Mnemon-Backup header")
            })?;
        let body = std::mem::replace(response.body_mut(), ureq::Body::builder().data(Vec::new()));
        Ok(BackupFile {
            view,
            body: Box::new(body.into_reader()),
        })
    }

    fn status(&self) -> Result<serde_json::Value, ApiError> {
        self.get_json("/status")
    }

    fn searches_meaning(&self) -> Result<bool, ApiError> {
        Ok(self.status()?["index"]["models"][0]["meaning"]
            .as_bool()
            .unwrap_or(true))
    }

    fn events(&self) -> Events {
        // The CLI never subscribes through a remote; an empty, closed feed.
        Events::closed()
    }

    fn ready(&self) -> bool {
        true
    }

    fn gauges(&self) -> Result<Vec<Gauge>, ApiError> {
        Ok(Vec::new())
    }
}
