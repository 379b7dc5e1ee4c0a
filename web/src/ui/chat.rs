//! The chat page: a question answered from the memories. The script streams the answer
//! from `POST /api/v1/ask`; without the script the form posts here and the page shows the
//! whole answer once it is finished.

use axum::Form;
use axum::extract::State;
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Nav, UiResult, csrf_ok, layout};
use crate::state::{AppState, blocking};
use mnemon_api::{AnswerView, AskRequest};

fn chat_form(csrf: &str, question: &str) -> Markup {
    html! {
        form #ask-form .capture method="post" action="/chat" {
            input type="hidden" name="csrf" value=(csrf);
            textarea #question name="question" required rows="2" placeholder="Ask your memories…" aria-label="Question" { (question) }
            div .row { button #ask type="submit" { "Ask" } span #ask-state .meta role="status" aria-live="polite" {} }
        }
    }
}

/// The answer with its citations as links to the memories.
fn answer_view(answer: Option<&AnswerView>) -> Markup {
    html! {
        section #answer-box {
            div #answer .answer { @if let Some(a) = answer { (a.answer) } }
            ol #sources .sources {
                @if let Some(a) = answer {
                    @for s in &a.sources {
                        li value=(s.n) .cited[a.cited.contains(&s.n)] { a href={ "/m/" (s.id) } { (s.title) } }
                    }
                }
            }
        }
    }
}

pub(super) async fn chat_page(State(state): State<AppState>) -> UiResult {
    let content = html! {
        h1 { "Ask your memories" }
        p .meta { "The best-matching memories go to the chat model set in " code { "[chat]" } " of config.toml; the answer cites them." }
        (chat_form(&state.security.csrf(), ""))
        (answer_view(None))
    };
    Ok(layout(&state, Nav::Chat, "Chat", "chat", content).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct AskForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    question: String,
}

pub(super) async fn ask(State(state): State<AppState>, Form(form): Form<AskForm>) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let request = AskRequest {
        question: form.question.clone(),
        ..AskRequest::default()
    };
    let answer = blocking(move || backend.ask(&request, &mut |_| {})).await?;
    let content = html! {
        h1 { "Ask your memories" }
        (chat_form(&state.security.csrf(), &form.question))
        (answer_view(Some(&answer)))
    };
    Ok(layout(&state, Nav::Chat, "Chat", "chat", content).into_response())
}
