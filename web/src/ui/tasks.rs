//! The task view: open tasks by due date and priority, a form to add one, a button to
//! finish one, and the experience points earned.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;

use super::{
    Nav, Refused, UiResult, csrf_ok, form_error, layout, non_empty, refused_page, short_time,
};
use mnemon_api::{CreateMemory, ListQuery, PatchMemory, TaskBoard, TaskFields, TaskStatus};

use crate::state::{AppState, blocking};

pub(super) async fn tasks_page(State(state): State<AppState>) -> UiResult {
    tasks_view(&state, None).await
}

async fn tasks_view(state: &AppState, refused: Option<Refused<TaskForm>>) -> UiResult {
    let backend = state.backend();
    let tasks = blocking(move || {
        backend.list_all(&ListQuery {
            kind: Some("task".into()),
            ..ListQuery::default()
        })
    })
    .await?;
    let board = TaskBoard::new(tasks);
    let earned = board.xp_earned();
    let TaskBoard { open, done } = board;
    let csrf = state.security.csrf().to_owned();
    let now = mnemon_crdt::Timestamp::now().to_string();
    let content = html! {
        h1 { "Tasks" }
        p .meta #xp { (open.len()) " open · " (done.len()) " done · " strong { (earned) " xp" } " earned" }
        @let typed = refused.as_ref().map(|r| &r.form);
        @if let Some(r) = &refused {
            p #task-error .error .form-error role="alert" { (r.error) }
        }
        form #task-form .capture method="post" action="/tasks" {
            input type="hidden" name="csrf" value=(csrf);
            input #task-text name="text" required placeholder="What needs doing?" aria-label="Task" value=[typed.map(|t| t.text.as_str())];
            div .row {
                label { "Priority " input name="priority" type="number" value=(typed.map_or("0", |t| t.priority.as_str())) size="3" aria-label="Priority"; }
                label { "Due " input name="due" type="date" aria-label="Due" value=[typed.map(|t| t.due.as_str())]; }
                label { "Difficulty "
                    select name="difficulty" aria-label="Difficulty" {
                        @for d in 1..=5u8 { option value=(d) selected[typed.is_some_and(|t| t.difficulty == d.to_string())] { (d) } }
                    }
                }
                button type="submit" { "Add task" }
            }
        }
        @if open.is_empty() { p .empty { "Nothing open." } }
        ul #open-tasks .tasks {
            @for m in &open {
                @let t = m.task.as_ref().expect("tasks only");
                @let overdue = t.is_overdue(&now);
                li .task .overdue[overdue] data-id=(m.id) {
                    form .inline method="post" action={ "/tasks/" (m.id) "/done" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button .done type="submit" aria-label={ "Mark " (m.title) " done" } { "Done" }
                    }
                    " " a href={ "/m/" (m.id) } { (m.title) }
                    span .meta {
                        @if overdue { " · " strong .overdue-label { "overdue" } }
                        " · priority " (t.priority) " · difficulty " (t.difficulty) " · " (t.xp) " xp"
                        @if let Some(due) = &t.due { " · due " time datetime=(due) { (due.get(..10).unwrap_or(due)) } }
                    }
                    details .task-edit {
                        summary aria-label={ "Change " (m.title) } { "change" }
                        form .row method="post" action={ "/tasks/" (m.id) "/edit" } {
                            input type="hidden" name="csrf" value=(csrf);
                            label { "Priority " input name="priority" type="number" value=(t.priority) size="3"; }
                            label { "Due " input name="due" type="date" value=(t.due.as_deref().and_then(|d| d.get(..10)).unwrap_or("")); }
                            label { "Difficulty "
                                select name="difficulty" {
                                    @for d in 1..=5u8 { option value=(d) selected[d == t.difficulty] { (d) } }
                                }
                            }
                            button type="submit" { "Save" }
                        }
                    }
                }
            }
        }
        @if !done.is_empty() {
            h2 { "Done" }
            ul #done-tasks .tasks {
                @for m in &done {
                    li .task .finished data-id=(m.id) {
                        form .inline method="post" action={ "/tasks/" (m.id) "/reopen" } {
                            input type="hidden" name="csrf" value=(csrf);
                            button .reopen type="submit" aria-label={ "Reopen " (m.title) } { "Reopen" }
                        }
                        " " a href={ "/m/" (m.id) } { (m.title) }
                        span .meta { " · " (m.task.as_ref().map_or(0, |t| t.xp)) " xp · " time datetime=(m.updated_at) { (short_time(&m.updated_at)) } }
                    }
                }
            }
        }
    };
    Ok(layout(state, Nav::Tasks, "Tasks", "tasks", content).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct TaskForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    due: String,
    #[serde(default)]
    difficulty: String,
}

impl TaskForm {
    /// The task fields the form gives: priority, due (as typed, trimmed) and difficulty.
    fn fields(&self) -> Result<TaskFields, mnemon_api::Error> {
        let difficulty = whole("difficulty", &self.difficulty)?
            .map(|d| {
                u8::try_from(d).map_err(|_| {
                    mnemon_api::Error::invalid(format!("difficulty {d} is not from 1 to 5"))
                })
            })
            .transpose()?;
        Ok(TaskFields {
            priority: whole("priority", &self.priority)?,
            due: Some(self.due.trim().to_owned()),
            difficulty,
            ..TaskFields::default()
        })
    }
}

pub(super) async fn add_task(
    State(state): State<AppState>,
    Form(form): Form<TaskForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let added = match form.fields() {
        Ok(mut fields) => {
            fields.status = Some(TaskStatus::Open);
            fields.due = non_empty(fields.due);
            let new = CreateMemory {
                content: form.text.clone(),
                task: Some(fields),
                ..CreateMemory::default()
            };
            state.backend().create_async(new).await
        }
        Err(e) => Err(e),
    };
    match added {
        Ok(_) => Ok(Redirect::to("/tasks").into_response()),
        Err(e) if form_error(&e) => {
            let refused = Refused {
                error: e.message.clone(),
                form,
            };
            Ok(refused_page(&e, tasks_view(&state, Some(refused)).await?))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct DoneForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn finish_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<DoneForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    blocking(move || backend.complete_task(&id)).await?;
    Ok(Redirect::to("/tasks").into_response())
}

pub(super) async fn reopen_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<DoneForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    blocking(move || backend.reopen_task(&id)).await?;
    Ok(Redirect::to("/tasks").into_response())
}

/// Changes a task's priority, due date (empty: none) and difficulty.
pub(super) async fn edit_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<TaskForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    // An empty due date clears it.
    let fields = form.fields()?;
    let backend = state.backend();
    blocking(move || {
        if backend.get(&id)?.task.is_none() {
            return Err(mnemon_api::Error::invalid(format!("{id} is not a task")));
        }
        backend.update(
            &id,
            PatchMemory {
                task: Some(fields),
                ..PatchMemory::default()
            },
        )
    })
    .await?;
    Ok(Redirect::to("/tasks").into_response())
}

/// A whole number a form field holds, if it holds one.
fn whole(field: &str, value: &str) -> Result<Option<i64>, mnemon_api::Error> {
    non_empty(Some(value.to_owned()))
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                mnemon_api::Error::invalid(format!("{field} {v:?} is not a whole number"))
            })
        })
        .transpose()
}
