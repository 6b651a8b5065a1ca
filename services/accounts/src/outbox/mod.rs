//! The transactional outbox: events are rows written in the same transaction as the change they
//! describe, and the [`relay::OutboxRelay`] publishes them afterwards.

pub mod relay;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::{Envelope, Event};

use crate::{http::telemetry::RequestId, schema::outbox};

/// Records `event` for publication, tagged with the request that caused it. Call it inside the
/// transaction that makes the change.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    event: Event,
    request_id: &RequestId,
) -> QueryResult<()> {
    let envelope = Envelope::new(event).with_correlation_id(request_id.0.clone());
    let json = serde_json::to_value(&envelope).expect("an envelope always serializes");
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
