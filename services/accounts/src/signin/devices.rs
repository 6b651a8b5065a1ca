//! Devices a user signs in from, for the new sign-in notice. A device is the user agent's family
//! (browser and operating system, not their versions, which change with every update) and the
//! client's network (/24 for IPv4, /64 for IPv6), so a browser update or a new DHCP lease is not a
//! new device, but another browser or another network is.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use diesel::{
    ExpressionMethods, QueryDsl, QueryResult, QueryableByName,
    sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::known_devices;

/// A device not seen for this long is new again.
pub const FORGOTTEN_AFTER: Duration = Duration::days(90);

/// "Firefox on Linux", for a person reading the notice.
pub fn describe(user_agent: &str) -> String {
    match woothee::parser::Parser::new().parse(user_agent) {
        Some(ua) if ua.name != woothee::woothee::VALUE_UNKNOWN => {
            if ua.os == woothee::woothee::VALUE_UNKNOWN {
                ua.name.to_string()
            } else {
                format!("{} on {}", ua.name, ua.os)
            }
        }
        _ => "An unknown browser or app".to_string(),
    }
}

/// The key a device is remembered by: its description and the client's network.
pub fn key(user_agent: &str, ip: &str) -> String {
    format!("{}|{}", describe(user_agent), network(ip))
}

/// The network of a client address: its /24, or its /64 for IPv6 (what one household, office or
/// provider allocation holds).
pub fn network(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => ip.to_string(),
    }
}

#[derive(QueryableByName)]
struct Previous {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    previous: Option<DateTime<Utc>>,
}

/// Records that `user_id` signed in from `device` now, in one statement; `true` when the device was
/// not seen in the last [`FORGOTTEN_AFTER`].
pub async fn remember(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    device: &str,
) -> QueryResult<bool> {
    let row: Previous = diesel::sql_query(
        "WITH previous AS (SELECT last_seen_at FROM known_devices WHERE user_id = $1 AND device = $2) \
         INSERT INTO known_devices (user_id, device) VALUES ($1, $2) \
         ON CONFLICT (user_id, device) DO UPDATE SET last_seen_at = now() \
         RETURNING (SELECT last_seen_at FROM previous) AS previous",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Text, _>(device)
    .get_result(conn)
    .await?;
    Ok(row
        .previous
        .is_none_or(|seen| seen < Utc::now() - FORGOTTEN_AFTER))
}

/// Whether `user_id` signed in from `device` within the last [`FORGOTTEN_AFTER`], and not before
/// `since` when given.
pub async fn known(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    device: &str,
    since: Option<DateTime<Utc>>,
) -> QueryResult<bool> {
    let window = Utc::now() - FORGOTTEN_AFTER;
    let since = since.map_or(window, |since| since.max(window));
    diesel::select(diesel::dsl::exists(
        known_devices::table
            .find((user_id, device))
            .filter(known_devices::last_seen_at.ge(since)),
    ))
    .get_result(conn)
    .await
}

/// Forgets the devices `user_id` signed in from at or after `since` (all of them for `None`):
/// after a takeover, the intruder's devices must not pass as known ones (they would sign in again
/// without a notice).
pub async fn forget_since(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    since: Option<DateTime<Utc>>,
) -> QueryResult<usize> {
    let devices = known_devices::table.filter(known_devices::user_id.eq(user_id));
    match since {
        Some(since) => {
            diesel::delete(devices.filter(known_devices::last_seen_at.ge(since)))
                .execute(conn)
                .await
        }
        None => diesel::delete(devices).execute(conn).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const FIREFOX_NEXT: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

    #[test]
    fn a_browser_update_or_a_new_address_in_the_same_network_is_the_same_device() {
        assert_eq!(
            key(FIREFOX, "203.0.113.7"),
            key(FIREFOX_NEXT, "203.0.113.200")
        );
        assert_eq!(
            key(FIREFOX, "2001:db8:1:2:aaaa::1"),
            key(FIREFOX, "2001:db8:1:2:bbbb::9")
        );
    }

    #[test]
    fn another_network_or_browser_is_another_device() {
        assert_ne!(key(FIREFOX, "203.0.113.7"), key(FIREFOX, "203.0.114.7"));
        assert_ne!(
            key(FIREFOX, "203.0.113.7"),
            key("curl/8.5.0", "203.0.113.7")
        );
        assert_eq!(describe(FIREFOX), "Firefox on Linux");
        assert_eq!(describe(""), "An unknown browser or app");
    }
}
