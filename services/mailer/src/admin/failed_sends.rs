//! `/admin/failed-sends`: what `mailer failed list|show|retry` does, over HTTP.
//!
//! No answer carries a secret meant for a user: a support agent (`mail.read`) who could read a
//! bounced reset link could take over any account, the superuser's first. `show` returns the
//! payload and the history with every link's token redacted (see [`crate::redact`]); the list
//! leaves out the payload (a listing is for finding a row), and every error text has its links
//! redacted too. Every admin answer is `Cache-Control: no-store`. The raw bytes of a message that
//! was not a readable event are never returned.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{
    AdminState,
    auth::{Authorized, MailRead, MailRetry},
    error::AdminError,
};
use crate::{
    failed_sends,
    operator::{self, Selection},
    redact,
    schema::failed_sends as table,
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// A failed send as the list shows it: everything but the payload.
#[derive(Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = table)]
pub struct FailedSendSummary {
    pub id: i64,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub recipient: Option<String>,
    pub template: Option<String>,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl FailedSendSummary {
    /// As an operator may see it: the error text may quote a link (a filter naming the URL it blocked).
    fn for_operator(mut self) -> Self {
        self.error = redact::links(&self.error);
        self
    }
}

/// Up to `limit` failed sends after `after`, oldest first (ids only grow, so a page boundary
/// never moves under concurrent inserts).
async fn page(
    conn: &mut AsyncPgConnection,
    after: Option<i64>,
    limit: i64,
    include_resolved: bool,
) -> QueryResult<Vec<FailedSendSummary>> {
    let mut query = table::table
        .select(FailedSendSummary::as_select())
        .order(table::id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(table::id.gt(after));
    }
    if !include_resolved {
        query = query.filter(table::resolved_at.is_null());
    }
    let rows: Vec<FailedSendSummary> = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(FailedSendSummary::for_operator)
        .collect())
}

async fn summary(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<FailedSendSummary>> {
    let row: Option<FailedSendSummary> = table::table
        .find(id)
        .select(FailedSendSummary::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(FailedSendSummary::for_operator))
}

/// The query string as sent; [`ListQuery::parse`] turns it into a [`ListQuery`].
#[derive(Deserialize)]
pub struct ListParams {
    cursor: Option<String>,
    limit: Option<String>,
    all: Option<String>,
}

struct ListQuery {
    after: Option<i64>,
    limit: i64,
    include_resolved: bool,
}

impl ListQuery {
    fn parse(params: &ListParams) -> Result<Self, AdminError> {
        let after = match params.cursor.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(cursor) => Some(
                cursor
                    .parse::<i64>()
                    .map_err(|_| AdminError::invalid("cursor", "Invalid cursor."))?,
            ),
        };
        let limit = match params.limit.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_LIMIT,
            Some(limit) => limit
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    AdminError::invalid(
                        "limit",
                        format!("Ensure this value is a whole number from 1 to {MAX_LIMIT}."),
                    )
                })?,
        };
        let include_resolved = match params.all.as_deref().map(str::trim) {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => return Err(AdminError::invalid("all", "Must be true or false.")),
        };
        Ok(Self {
            after,
            limit,
            include_resolved,
        })
    }
}

/// `GET /admin/failed-sends?cursor=&limit=&all=`: unresolved failed sends (all with `all=true`),
/// oldest first, `{"failed_sends": [...], "next_cursor"}`; `next_cursor` is null on the last page.
pub async fn list(
    _caller: Authorized<MailRead>,
    state: web::Data<AdminState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    // Read after the caller is authorized, so no one learns anything from a 400 without a token.
    let params = web::Query::<ListParams>::from_query(request.query_string())
        .map_err(|e| AdminError::invalid("query", format!("Invalid query string: {e}")))?;
    let query = ListQuery::parse(&params)?;
    let mut conn = state.pool.get().await?;
    // One row more than asked tells whether another page exists.
    let mut rows = page(
        &mut conn,
        query.after,
        query.limit + 1,
        query.include_resolved,
    )
    .await?;
    let more = rows.len() as i64 > query.limit;
    rows.truncate(query.limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|row| row.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({ "failed_sends": rows, "next_cursor": next_cursor })))
}

/// `GET /admin/failed-sends/{id}`: the whole row, with the payload when it is a readable event and
/// the history, secrets redacted.
pub async fn show(
    _caller: Authorized<MailRead>,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = parse_id(&id)?;
    let mut conn = state.pool.get().await?;
    let row = failed_sends::find(&mut conn, id)
        .await?
        .ok_or(AdminError::NotFound("failed_send"))?;
    let readable = row
        .payload
        .as_ref()
        .is_some_and(|payload| Envelope::from_json(payload.to_string().as_bytes()).is_ok());
    let mut shown = row.for_operator();
    if !readable {
        // Not a readable event: what is stored is the raw message, which may hold anything.
        shown.payload = None;
    }
    Ok(HttpResponse::Ok().json(json!({ "failed_send": shown })))
}

/// `POST /admin/failed-sends/{id}/retry`: runs the operator's retry (the one `mailer failed retry`
/// runs) on this row. 202 with the row afterwards; 409 when it is resolved or cannot be retried.
pub async fn retry(
    caller: Authorized<MailRetry>,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = parse_id(&id)?;
    let before = summary(&mut *state.pool.get().await?, id)
        .await?
        .ok_or(AdminError::NotFound("failed_send"))?;
    if before.resolved_at.is_some() {
        return Err(already_resolved());
    }
    // No pooled connection is held while the retry runs: it opens its own.
    let by = format!("admin API, user {}", caller.token.sub);
    let outcomes = operator::retry(&state.settings, Selection::One(id), &by)
        .await
        .map_err(|e| {
            // Between our read and the retry, another operator may have resolved it.
            if e.to_string().contains("already resolved") {
                already_resolved()
            } else {
                AdminError::Unexpected(e)
            }
        })?;
    let outcome = outcomes
        .into_iter()
        .find(|o| o.id == id)
        .ok_or_else(|| anyhow::anyhow!("the retry of failed send {id} reported no outcome"))?;
    tracing::info!(failed_send = id, actor = %caller.token.sub, ok = outcome.result.is_ok(), "failed send retried through the admin API");
    if let Err(why) = outcome.result {
        return Err(AdminError::Conflict {
            field: "failed_send",
            message: why,
        });
    }
    let after = summary(&mut *state.pool.get().await?, id)
        .await?
        .ok_or(AdminError::NotFound("failed_send"))?;
    Ok(HttpResponse::Accepted().json(json!({ "failed_send": after })))
}

/// Ids are positive integers; anything else names no failed send.
fn parse_id(raw: &str) -> Result<i64, AdminError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(AdminError::NotFound("failed_send"))
}

fn already_resolved() -> AdminError {
    AdminError::Conflict {
        field: "failed_send",
        message: "This failed send is already resolved; there is nothing to retry.".to_string(),
    }
}
