//! The transactional outbox: events are rows written in the same transaction as the change they
//! describe, and the [`relay::OutboxRelay`] publishes them afterwards.

pub mod relay;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::Envelope;

use crate::schema::outbox;

/// Records `envelope` for publication. Call it inside the transaction that makes the change.
pub async fn enqueue(conn: &mut AsyncPgConnection, envelope: &Envelope) -> QueryResult<()> {
    let json = serde_json::to_value(envelope).expect("an envelope always serializes");
    diesel::insert_into(outbox::table)
        .values((
            outbox::event_id.eq(envelope.id),
            outbox::event_type.eq(envelope.kind()),
            outbox::envelope.eq(json),
        ))
        .execute(conn)
        .await
        .map(drop)
}
