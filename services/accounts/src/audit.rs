//! The audit trail: who did what to whom, from where. Append-only (a trigger refuses updates);
//! each entry is written in the transaction of the action it records, so neither exists without the
//! other. Entries older than `ACCOUNTS_AUDIT_RETENTION_DAYS` are pruned by the service itself.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{http::telemetry::RequestId, schema::audit_log};

/// Where an action came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub actor: Option<Uuid>,
    pub client_ip: String,
    pub request_id: String,
}

impl Origin {
    pub fn new(actor: Option<Uuid>, client_ip: &str, request_id: &RequestId) -> Self {
        Self {
            actor,
            client_ip: client_ip.to_string(),
            request_id: request_id.0.clone(),
        }
    }

    /// The same origin, acting as `actor`.
    pub fn by(mut self, actor: Uuid) -> Self {
        self.actor = Some(actor);
        self
    }

    /// An operator at the command line.
    pub fn cli() -> Self {
        Self {
            actor: None,
            client_ip: "cli".into(),
            request_id: String::new(),
        }
    }
}

/// The request's client address and id; handlers add the actor.
impl actix_web::FromRequest for Origin {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        std::future::ready(Ok(Self {
            actor: None,
            client_ip: crate::http::client::ClientAddr::of(req).to_string(),
            request_id,
        }))
    }
}

/// Appends an entry, in the caller's transaction.
pub async fn record(
    conn: &mut AsyncPgConnection,
    origin: &Origin,
    action: &str,
    target: Option<Uuid>,
    details: Value,
) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::actor_id.eq(origin.actor),
            audit_log::action.eq(action),
            audit_log::target_id.eq(target),
            audit_log::client_ip.eq(&origin.client_ip),
            audit_log::request_id.eq(&origin.request_id),
            audit_log::details.eq(details),
        ))
        .execute(conn)
        .await
        .map(drop)
}

#[derive(Debug, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = audit_log)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target_id: Option<Uuid>,
    pub client_ip: String,
    pub request_id: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Filters of a trail query; `before` is the cursor (entries come newest first).
#[derive(Debug, Default)]
pub struct Filter {
    pub actor: Option<Uuid>,
    pub target: Option<Uuid>,
    pub action: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

pub async fn list(conn: &mut AsyncPgConnection, filter: &Filter) -> QueryResult<Vec<Entry>> {
    let mut query = audit_log::table
        .select(Entry::as_select())
        .order(audit_log::id.desc())
        .limit(filter.limit)
        .into_boxed();
    if let Some(actor) = filter.actor {
        query = query.filter(audit_log::actor_id.eq(actor));
    }
    if let Some(target) = filter.target {
        query = query.filter(audit_log::target_id.eq(target));
    }
    if let Some(action) = &filter.action {
        query = query.filter(audit_log::action.eq(action));
    }
    if let Some(before) = filter.before {
        query = query.filter(audit_log::id.lt(before));
    }
    query.load(conn).await
}

/// Entries one prune statement deletes: a backlog of millions goes in statements that each end
/// well within the pool's statement timeout, instead of one that the timeout cancels every hour.
const PRUNE_BATCH: i64 = 10_000;

/// Deletes entries older than `retention`, a batch at a time; returns how many.
pub async fn prune(conn: &mut AsyncPgConnection, retention: Duration) -> QueryResult<usize> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut pruned = 0;
    loop {
        let deleted = diesel::sql_query(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 LIMIT $2)",
        )
        .bind::<diesel::sql_types::Timestamptz, _>(cutoff)
        .bind::<diesel::sql_types::BigInt, _>(PRUNE_BATCH)
        .execute(conn)
        .await?;
        pruned += deleted;
        if deleted < PRUNE_BATCH as usize {
            return Ok(pruned);
        }
    }
}
