//! The OpenAPI document, generated from the handlers' annotations (utoipa); the UI renders
//! its reference page from it (`ui/reference.rs`).

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Mnemon's HTTP API, as OpenAPI 3.1.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Mnemon API", description = "A personal memory node's HTTP API. Every route needs `Authorization: Bearer <token>` (`mnemon token` prints it)."),
    paths(
        crate::router::list_memories,
        crate::router::create_memory,
        crate::router::get_memory,
        crate::router::update_memory,
        crate::router::delete_memory,
        crate::router::backlinks,
        crate::router::search,
        crate::router::graph,
        crate::router::ask,
        crate::router::collections,
        crate::router::create_collection,
        crate::router::members,
        crate::router::share_collection,
        crate::router::unshare_collection,
        crate::router::invite_collection,
        crate::router::join,
        crate::router::peers,
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
    modifiers(&BearerAuth),
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
        let params: Vec<&str> = doc["paths"]["/api/v1/search"]["get"]["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            params.contains(&"q") && params.contains(&"min_importance"),
            "{params:?}"
        );
    }
}
