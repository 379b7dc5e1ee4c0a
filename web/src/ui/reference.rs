//! `GET /api`: the API reference, rendered from the OpenAPI document (no external viewer,
//! so it works offline).

use axum::extract::State;
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde_json::Value;
use utoipa::OpenApi;

use crate::openapi::ApiDoc;
use crate::state::AppState;

/// `GET /api`: the reference, rendered from the same document.
pub(crate) async fn reference_page(State(state): State<AppState>) -> impl IntoResponse {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    super::page(&state, super::Nav::Api, "API", "api", reference(&doc))
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn reference(doc: &Value) -> Markup {
    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    let schemas = doc["components"]["schemas"].as_object().unwrap_or(&empty);
    html! {
        h1 { "API reference" }
        p { (doc["info"]["description"].as_str().unwrap_or("")) }
        p { "The machine-readable document: " a href="/api/v1/openapi.json" { code { "/api/v1/openapi.json" } } " (needs the token). Errors are always " code { "{\"error\": {\"code\": …, \"message\": …}}" } "." }
        @for (path, item) in paths {
            @for method in METHODS {
                @if let Some(op) = item.get(method) {
                    section .endpoint id={ (method) (path.replace(['/', '{', '}'], "-")) } {
                        h2 { span .method { (method.to_uppercase()) } " " code { (path) } }
                        @if let Some(text) = op["description"].as_str().or(op["summary"].as_str()) { p { (text) } }
                        @if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                            h3 { "Parameters" }
                            table { tbody {
                                @for p in params {
                                    tr {
                                        td { code { (p["name"].as_str().unwrap_or("?")) } }
                                        td { (p["in"].as_str().unwrap_or("")) @if p["required"].as_bool() == Some(true) { ", required" } }
                                        td { (type_name(&p["schema"])) }
                                        td { (p["description"].as_str().unwrap_or("")) }
                                    }
                                }
                            } }
                        }
                        @if let Some(body) = op["requestBody"]["content"]["application/json"]["schema"].as_object() {
                            h3 { "Body" }
                            p { (type_name(&Value::Object(body.clone()))) }
                        }
                        h3 { "Responses" }
                        table { tbody {
                            @for (code, response) in op["responses"].as_object().unwrap_or(&empty) {
                                tr {
                                    td { code { (code) } }
                                    td { (response["description"].as_str().unwrap_or("")) }
                                    td { @if let Some((_, content)) = response["content"].as_object().and_then(|c| c.iter().next()) { (type_name(&content["schema"])) } }
                                }
                            }
                        } }
                    }
                }
            }
        }
        h2 { "Types" }
        @for (name, schema) in schemas {
            section .schema id={ "schema-" (name) } {
                h3 { (name) }
                @if let Some(text) = schema["description"].as_str() { p { (text) } }
                @if let Some(props) = schema["properties"].as_object() {
                    table { tbody {
                        @for (field, prop) in props {
                            tr {
                                td { code { (field) } }
                                td { (type_name(prop)) }
                                td { (prop["description"].as_str().unwrap_or("")) }
                            }
                        }
                    } }
                }
            }
        }
    }
}

/// A short name for a schema: a referenced type's name, `array of …`, or the JSON type.
fn type_name(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        return reference.rsplit('/').next().unwrap_or(reference).to_owned();
    }
    if let Some(items) = schema.get("items") {
        return format!("array of {}", type_name(items));
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let names: Vec<String> = options.iter().map(type_name).collect();
        return names.join(" or ");
    }
    match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_every_route_and_type() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        let page = reference(&doc).into_string();
        assert!(page.contains("/api/v1/memories/{id}/backlinks"));
        assert!(page.contains("MemoryView"));
        assert!(page.contains("SearchMode"), "the typed mode is documented");
    }
}
