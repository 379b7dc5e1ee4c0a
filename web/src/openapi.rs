//! The OpenAPI document, generated from the handlers' annotations (utoipa); the UI renders
//! its reference page from it (`ui/reference.rs`).

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Mnemon's HTTP API, as OpenAPI 3.1.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Mnemon API", description = "A personal memory node's HTTP API. Every route needs `Authorization: Bearer <token>`: the owner's token (`mnemon token` prints it) or a capability token (`mnemon token new --name NAME [--collection C]... [--read-only] [--expires 30d]`).\n\nA capability token sees only its collections: any other collection, and every memory in it, answers 404 exactly as an unknown id would, and is left out of lists, search, the graph, links and events. Each operation's `x-mnemon-access` says what it needs: `read` (any token, within its collections), `write` (a token that may write, within its collections; a read-only token gets 403 naming its scope) or `owner` (the owner's token only; 403 for any capability token). A revoked or expired token gets 401."),
    paths(
        crate::router::list_memories,
        crate::router::create_memory,
        crate::router::get_memory,
        crate::router::update_memory,
        crate::router::delete_memory,
        crate::router::forget_history,
        crate::router::move_memory,
        crate::router::resolve_conflict,
        crate::router::backlinks,
        crate::router::search,
        crate::router::graph,
        crate::router::ask,
        crate::router::collections,
        crate::router::create_collection,
        crate::router::rename_collection,
        crate::router::delete_collection,
        crate::router::members,
        crate::router::share_collection,
        crate::router::unshare_collection,
        crate::router::invite_collection,
        crate::router::join,
        crate::router::peers,
        crate::router::name_node,
        crate::router::dial,
        crate::router::status,
        crate::router::backup,
        crate::router::events,
        crate::router::session,
        crate::router::sign_in_link,
        crate::router::rotate_token,
        crate::router::create_token,
        crate::router::list_tokens,
        crate::router::revoke_token,
    ),
    modifiers(&BearerAuth, &Access),
    security(("bearer" = [])),
    tags(
        (name = "memories", description = "Notes, facts, conversations and tasks"),
        (name = "search", description = "By meaning and by words"),
        (name = "collections", description = "What memories are grouped (and later shared) by"),
        (name = "sharing", description = "Who a collection is shared with, and the peers that sync"),
        (name = "node", description = "The node itself"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// States on every operation what a capability token needs for it (`x-mnemon-access`).
struct Access;

/// What an operation needs: `owner`, `write` or `read`. Documentation of the rules that
/// `mnemon_api::Caller::api` enforces (a test checks every operation has one).
fn access(method: &str, path: &str) -> &'static str {
    let owners = [
        "/api/v1/status",
        "/api/v1/peers",
        "/api/v1/backups",
        "/api/v1/join",
        "/api/v1/token",
        "/api/v1/tokens",
        "/api/v1/tokens/{name}",
        "/api/v1/signin-links",
        "/api/v1/names/{did}",
    ];
    if owners.contains(&path)
        || path.starts_with("/api/v1/collections/")
        || (path == "/api/v1/collections" && method == "post")
    {
        "owner"
    } else if path.starts_with("/api/v1/memories") && matches!(method, "post" | "patch" | "delete")
    {
        "write"
    } else {
        "read"
    }
}

impl utoipa::Modify for Access {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
                ("put", &mut item.put),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    operation
                        .extensions
                        .get_or_insert_with(Default::default)
                        .insert("x-mnemon-access".to_owned(), access(method, path).into());
                }
            }
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_type() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/api/v1/memories",
            "/api/v1/memories/{id}",
            "/api/v1/memories/{id}/backlinks",
            "/api/v1/search",
            "/api/v1/graph",
            "/api/v1/collections",
            "/api/v1/status",
            "/api/v1/events",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        for method in ["get", "patch", "delete"] {
            assert!(
                doc["paths"]["/api/v1/memories/{id}"].get(method).is_some(),
                "{method}"
            );
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in [
            "MemoryView",
            "CreateMemory",
            "PatchMemory",
            "HitView",
            "ErrorBody",
        ] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
        // What the application layer sets from a token's scope is no request field.
        assert!(!doc.to_string().contains("\"within\""));
        // Every operation says what a capability token needs for it.
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("operations") {
                assert!(
                    ["read", "write", "owner"]
                        .contains(&operation["x-mnemon-access"].as_str().unwrap_or("")),
                    "{method} {path} states no access"
                );
            }
        }
        assert_eq!(
            doc["paths"]["/api/v1/tokens"]["post"]["x-mnemon-access"],
            "owner"
        );
        assert_eq!(
            doc["paths"]["/api/v1/memories"]["post"]["x-mnemon-access"],
            "write"
        );
        assert_eq!(
            doc["paths"]["/api/v1/search"]["get"]["x-mnemon-access"],
            "read"
        );
        let params: Vec<&str> = doc["paths"]["/api/v1/search"]["get"]["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            params.contains(&"q")
                && params.contains(&"min_importance")
                && !params.contains(&"within"),
            "{params:?}"
        );
    }
}
