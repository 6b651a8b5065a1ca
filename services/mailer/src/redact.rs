//! What an operator may see of a failed send. A mailed link is a credential meant for one user (a
//! reset link read by a support agent is a takeover), so every link's query values and fragment,
//! and every field named like a secret, read `[redacted]` wherever they appear: the payload, the
//! error text (a content filter quotes the URL it blocked), the history, the raw body.
//!
//! Applied at the boundary (the admin API and the CLI), never to what is stored: a retry sends the
//! stored payload.

use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

/// `text` with the query values and the fragment of every link in it redacted:
/// `https://host/reset-password?token=abc#x` reads `https://host/reset-password?token=[redacted]#[redacted]`.
/// A link is `scheme://` followed by anything but whitespace, quotes, angle brackets and
/// backslashes (which end it in prose, JSON and escaped bytes alike).
pub fn links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let link_end = rest[at..]
            .find(|c: char| c.is_whitespace() || c.is_control() || "\"'<>\\`".contains(c))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        if rest[scheme_start..at].starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(&link(&rest[scheme_start..link_end]));
        } else {
            out.push_str(&rest[scheme_start..link_end]);
        }
        rest = &rest[link_end..];
    }
    out.push_str(rest);
    out
}

/// One link, its query values and fragment redacted.
fn link(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (url, None),
    };
    let mut out = match before_fragment.split_once('?') {
        Some((base, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) => format!("{key}={REDACTED}"),
                    None if pair.is_empty() => String::new(),
                    None => REDACTED.to_string(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        None => before_fragment.to_string(),
    };
    if let Some(fragment) = fragment {
        out.push('#');
        if !fragment.is_empty() {
            out.push_str(REDACTED);
        }
    }
    out
}

/// Whether a field's name says its value is a secret (a token, a one-time code, a password).
fn secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "password", "code", "codes"]
        .iter()
        .any(|suffix| name == *suffix || name.ends_with(&format!("_{suffix}")))
}

/// `value` with every string's links redacted, and the whole value of every field named like a
/// secret.
pub fn json(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(links(text)),
        Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| {
                    let shown = if secret_field(name) && !value.is_null() {
                        Value::String(REDACTED.to_string())
                    } else {
                        json(value)
                    };
                    (name.clone(), shown)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_query_value_and_fragment_of_every_link_is_redacted() {
        assert_eq!(
            links("reset at https://a.example/account/reset-password?token=abc.def&x=1#frag now"),
            "reset at https://a.example/account/reset-password?token=[redacted]&x=[redacted]#[redacted] now"
        );
        assert_eq!(
            links("554 blocked URL HTTP://A.EXAMPLE/c?t0k3n, and myapp://open?abc"),
            "554 blocked URL HTTP://A.EXAMPLE/c?[redacted] and myapp://open?[redacted]"
        );
        assert_eq!(
            links(r#"{\"u\":\"http://x/confirm?token=s3cret\"}"#),
            r#"{\"u\":\"http://x/confirm?token=[redacted]\"}"#
        );
        assert_eq!(links("no links: a://, ://x?y"), "no links: a://, ://x?y");
        assert_eq!(links("http://x/plain/path"), "http://x/plain/path");
        assert_eq!(links("é://x?y ñhttp://x?y"), "é://x?y ñhttp://x?[redacted]");
    }

    #[test]
    fn payloads_keep_their_shape_and_lose_their_secrets() {
        let payload = json!({
            "id": "e1",
            "data": {
                "email": "root@example.com",
                "reset_url": "http://x/account/reset-password?token=abc",
                "revert_url": "http://x/account/revert-email?token=def",
                "token": "ghi",
                "recovery_codes": ["a", "b"],
                "attempts": 3,
            }
        });
        assert_eq!(
            json(&payload),
            json!({
                "id": "e1",
                "data": {
                    "email": "root@example.com",
                    "reset_url": "http://x/account/reset-password?token=[redacted]",
                    "revert_url": "http://x/account/revert-email?token=[redacted]",
                    "token": "[redacted]",
                    "recovery_codes": "[redacted]",
                    "attempts": 3,
                }
            })
        );
    }

    #[test]
    fn no_sample_payload_shows_an_operator_its_link_token() {
        for kind in events::Event::TYPES {
            let event = crate::templates::sample_event(kind, "en").expect("a sample of every type");
            let envelope = serde_json::to_value(events::Envelope::new(event)).unwrap();
            let shown = json(&envelope);
            assert!(
                !shown.to_string().contains("sample-token"),
                "{kind}: {shown}"
            );
            for field in ["reset_url", "reject_url"] {
                if let Some(url) = envelope["data"][field].as_str() {
                    let (base, _) = url.split_once('?').unwrap();
                    assert_eq!(
                        shown["data"][field],
                        format!("{base}?token={REDACTED}"),
                        "{kind}"
                    );
                }
            }
        }
        // What the operator needs to follow the case stays readable: a count is not a code.
        let used = crate::templates::sample_event("recovery-code-used", "en").unwrap();
        let shown = json(&serde_json::to_value(events::Envelope::new(used)).unwrap());
        assert_eq!(shown["data"]["codes_left"], 2);
        assert_eq!(shown["data"]["ip"], "203.0.113.7");
    }
}
