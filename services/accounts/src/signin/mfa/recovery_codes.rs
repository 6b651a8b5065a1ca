//! Recovery codes: 10 per set, 60 bits each (`xxxx-xxxx-xxxx` in Crockford's base32, which has no
//! I, L, O or U to misread), shown once. Only their HMAC-SHA-256 over user id and code is stored,
//! keyed from the encryption key. Each works once, in one conditional UPDATE.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::Rng;
use uuid::Uuid;

use crate::{schema::recovery_codes, tokens::SealingKey};

pub const SET_SIZE: usize = 10;
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const LEN: usize = 12;

/// One new code, grouped by four.
fn generate() -> String {
    let mut rng = rand::rng();
    let chars: Vec<char> = (0..LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The code as typed, in its canonical form: case, spaces and dashes do not matter, and the
/// letters Crockford's alphabet reads as digits (O as 0, I and L as 1) are read so.
pub fn normalize(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        })
        .collect();
    (code.len() == LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

fn digest(key: &SealingKey, user_id: Uuid, code: &str) -> Vec<u8> {
    key.digest(&[user_id.as_bytes(), code.as_bytes()])
}

/// Replaces the user's codes with a new set and returns it, to show once.
pub async fn replace(
    conn: &mut AsyncPgConnection,
    key: &SealingKey,
    user_id: Uuid,
) -> QueryResult<Vec<String>> {
    remove_all(conn, user_id).await?;
    let codes: Vec<String> = (0..SET_SIZE).map(|_| generate()).collect();
    let rows: Vec<_> = codes
        .iter()
        .map(|code| {
            let canonical = normalize(code).expect("a generated code is canonical");
            (
                recovery_codes::user_id.eq(user_id),
                recovery_codes::digest.eq(digest(key, user_id, &canonical)),
            )
        })
        .collect();
    diesel::insert_into(recovery_codes::table)
        .values(rows)
        .execute(conn)
        .await?;
    Ok(codes)
}

/// Spends `typed` if it is one of the user's unused codes: `Some(codes left)`, or `None`.
pub async fn spend(
    conn: &mut AsyncPgConnection,
    key: &SealingKey,
    user_id: Uuid,
    typed: &str,
) -> QueryResult<Option<i64>> {
    let Some(code) = normalize(typed) else {
        return Ok(None);
    };
    let spent = diesel::update(
        recovery_codes::table
            .find((user_id, digest(key, user_id, &code)))
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(Utc::now()))
    .execute(conn)
    .await?;
    if spent == 0 {
        return Ok(None);
    }
    left(conn, user_id).await.map(Some)
}

/// How many unused codes the user has.
pub async fn left(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<i64> {
    recovery_codes::table
        .filter(recovery_codes::user_id.eq(user_id))
        .filter(recovery_codes::used_at.is_null())
        .count()
        .get_result(conn)
        .await
}

pub async fn remove_all(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<()> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id)))
        .execute(conn)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_canonical_and_distinct() {
        let codes: std::collections::HashSet<String> = (0..1000).map(|_| generate()).collect();
        assert_eq!(codes.len(), 1000);
        for code in &codes {
            assert_eq!(code.len(), 14, "{code}");
            assert_eq!(normalize(code).unwrap(), code.replace('-', ""));
        }
    }

    #[test]
    fn typing_variants_read_the_same_and_junk_reads_as_nothing() {
        assert_eq!(normalize("AB0C-1DEF-GH23").as_deref(), Some("ab0c1defgh23"));
        assert_eq!(normalize("abOc IdeL gh23").as_deref(), Some("ab0c1de1gh23"));
        for junk in [
            "",
            "abc",
            "ab0c-1def-gh2",
            "ab0c-1def-gh234",
            "ab0c-1def-ghu3",
            "ab0c\u{0}1defgh23",
        ] {
            assert_eq!(normalize(junk), None, "{junk:?}");
        }
    }
}
