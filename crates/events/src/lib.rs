//! The contract between accounts and everything that listens to it.
//!
//! Every message on the `accounts.events` exchange is an [`Envelope`] serialized as JSON. The routing
//! key is the event type. Payloads carry what a consumer needs to act (the mailer: who, and which link),
//! never secrets other than the single-purpose links themselves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The topic exchange accounts publishes to. Durable.
pub const EXCHANGE: &str = "accounts.events";

/// The schema version this crate writes. See the crate README for the versioning rule.
pub const VERSION: u32 = 1;

/// An event as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    #[serde(flatten)]
    pub event: Event,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The id of the request that caused the event (accounts' `x-request-id`), so a mail can be
    /// traced back to its request in the logs. Optional: absent when there was no request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// What happened. Serialized as `"type": "<routing key>", "data": {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "kebab-case")]
pub enum Event {
    UserRegistered(UserRegistered),
    EmailConfirmationRequested(EmailConfirmationRequested),
    PasswordResetRequested(PasswordResetRequested),
    PasswordChanged(PasswordChanged),
    EmailChanged(EmailChanged),
    NewSignIn(NewSignIn),
    RoleChanged(RoleChanged),
    MfaEnabled(MfaEnabled),
    MfaDisabled(MfaDisabled),
    RecoveryCodeUsed(RecoveryCodeUsed),
    MfaFailures(MfaFailures),
    RecoveryCodesReplaced(RecoveryCodesReplaced),
    IdentityLinked(IdentityLinked),
    IdentityUnlinked(IdentityUnlinked),
    PasskeyAdded(PasskeyAdded),
    PasskeyRemoved(PasskeyRemoved),
}

/// The language of the mail when a payload carries none (messages written before `locale` existed).
pub fn default_locale() -> String {
    "en".into()
}

/// A new account exists; the mail welcomes the user and, when the address still needs confirming,
/// carries the confirmation link. An account made by a social sign-in starts with an address the
/// provider vouched for, and its event has no link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_expires_at: Option<DateTime<Utc>>,
    /// The user's language (BCP 47), for the mail.
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// The user asked for a new confirmation link, or changed their email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailConfirmationRequested {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub confirmation_url: String,
    pub confirmation_expires_at: DateTime<Utc>,
    /// The user's language (BCP 47), for the mail.
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// The user asked to reset a forgotten password; the link works once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordResetRequested {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub reset_url: String,
    pub reset_expires_at: DateTime<Utc>,
    /// The user's language (BCP 47), for the mail.
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// The password changed (through a reset or a change); a security notice to the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordChanged {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub changed_at: DateTime<Utc>,
    /// The user's language (BCP 47), for the mail.
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// The account's address changed; sent to the OLD address, with a link that undoes the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailChanged {
    pub user_id: Uuid,
    /// The old address: the recipient.
    pub email: String,
    pub new_email: String,
    pub username: Option<String>,
    pub changed_at: DateTime<Utc>,
    pub revert_url: String,
    pub revert_expires_at: DateTime<Utc>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A sign-in from a device not seen for this user lately; the link ends that session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSignIn {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// A short description of the browser or client ("Firefox on Linux").
    pub device: String,
    /// The client address, as the approximate place.
    pub ip: String,
    pub signed_in_at: DateTime<Utc>,
    pub reject_url: String,
    pub reject_expires_at: DateTime<Utc>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A role was granted to or revoked from the user; a security notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleChanged {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub role: String,
    pub granted: bool,
    pub changed_at: DateTime<Utc>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A second factor turned on (the first one of the account); the link undoes it with the effects of
/// a sign-in reject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaEnabled {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// `totp` or `passkey`.
    pub method: String,
    pub enabled_at: DateTime<Utc>,
    pub reject_url: String,
    pub reject_expires_at: DateTime<Utc>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// The account's last second factor went. When an operator removed them, the password no longer
/// works and the mail carries the reset link that sets a new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaDisabled {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub disabled_at: DateTime<Utc>,
    /// Whether an operator did it (an account recovery), rather than the user.
    pub by_operator: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_expires_at: Option<DateTime<Utc>>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A recovery code was used to sign in or to confirm a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodeUsed {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub used_at: DateTime<Utc>,
    /// Codes still unused.
    pub codes_left: u32,
    /// The client address it was used from.
    pub ip: String,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// Second-factor codes failed after a correct password: someone knows the password. Mailed at most
/// once a day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaFailures {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// Failures in the last 24 hours.
    pub failures: u32,
    /// The client address of the latest failure.
    pub ip: String,
    pub failed_at: DateTime<Utc>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// The account's recovery codes were replaced by a new set: the old ones stopped working. A
/// security notice (someone with a session of the account could have done it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodesReplaced {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub replaced_at: DateTime<Utc>,
    /// The client address it was done from.
    pub ip: String,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A social account (an OpenID Connect or GitHub identity) was linked to the account. The link
/// undoes it with the effects of a sign-in reject (every session ends, the identity goes, a
/// password reset is mailed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityLinked {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// The provider's display name, e.g. "Google", "GitHub", or the configured name.
    pub provider: String,
    /// The provider account's address, when it has one.
    pub provider_email: Option<String>,
    pub linked_at: DateTime<Utc>,
    /// The client address it was done from.
    pub ip: String,
    pub reject_url: String,
    pub reject_expires_at: DateTime<Utc>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A social account was unlinked from the account; a security notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityUnlinked {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// The provider's display name, as in [`IdentityLinked::provider`].
    pub provider: String,
    pub unlinked_at: DateTime<Utc>,
    /// The client address it was done from.
    pub ip: String,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A passkey was added to the account. The link undoes it with the effects of a sign-in reject
/// (every session ends, the passkeys added since go, a password reset is mailed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasskeyAdded {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// The name the user gave it (or a default like "Passkey").
    pub name: String,
    pub added_at: DateTime<Utc>,
    /// The client address it was added from.
    pub ip: String,
    pub reject_url: String,
    pub reject_expires_at: DateTime<Utc>,
    #[serde(default = "default_locale")]
    pub locale: String,
}

/// A passkey was removed from the account; a security notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasskeyRemoved {
    pub user_id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// Its name, as in [`PasskeyAdded::name`].
    pub name: String,
    pub removed_at: DateTime<Utc>,
    /// The client address it was removed from.
    pub ip: String,
    #[serde(default = "default_locale")]
    pub locale: String,
}

impl Event {
    /// Every routing key, for consumers that bind to all of them.
    pub const TYPES: [&'static str; 16] = [
        "user-registered",
        "email-confirmation-requested",
        "password-reset-requested",
        "password-changed",
        "email-changed",
        "new-sign-in",
        "role-changed",
        "mfa-enabled",
        "mfa-disabled",
        "recovery-code-used",
        "mfa-failures",
        "recovery-codes-replaced",
        "identity-linked",
        "identity-unlinked",
        "passkey-added",
        "passkey-removed",
    ];

    /// The event type, which is also the routing key.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::UserRegistered(_) => Self::TYPES[0],
            Event::EmailConfirmationRequested(_) => Self::TYPES[1],
            Event::PasswordResetRequested(_) => Self::TYPES[2],
            Event::PasswordChanged(_) => Self::TYPES[3],
            Event::EmailChanged(_) => Self::TYPES[4],
            Event::NewSignIn(_) => Self::TYPES[5],
            Event::RoleChanged(_) => Self::TYPES[6],
            Event::MfaEnabled(_) => Self::TYPES[7],
            Event::MfaDisabled(_) => Self::TYPES[8],
            Event::RecoveryCodeUsed(_) => Self::TYPES[9],
            Event::MfaFailures(_) => Self::TYPES[10],
            Event::RecoveryCodesReplaced(_) => Self::TYPES[11],
            Event::IdentityLinked(_) => Self::TYPES[12],
            Event::IdentityUnlinked(_) => Self::TYPES[13],
            Event::PasskeyAdded(_) => Self::TYPES[14],
            Event::PasskeyRemoved(_) => Self::TYPES[15],
        }
    }

    /// The address the event concerns.
    pub fn recipient(&self) -> &str {
        match self {
            Event::UserRegistered(e) => &e.email,
            Event::EmailConfirmationRequested(e) => &e.email,
            Event::PasswordResetRequested(e) => &e.email,
            Event::PasswordChanged(e) => &e.email,
            Event::EmailChanged(e) => &e.email,
            Event::NewSignIn(e) => &e.email,
            Event::RoleChanged(e) => &e.email,
            Event::MfaEnabled(e) => &e.email,
            Event::MfaDisabled(e) => &e.email,
            Event::RecoveryCodeUsed(e) => &e.email,
            Event::MfaFailures(e) => &e.email,
            Event::RecoveryCodesReplaced(e) => &e.email,
            Event::IdentityLinked(e) => &e.email,
            Event::IdentityUnlinked(e) => &e.email,
            Event::PasskeyAdded(e) => &e.email,
            Event::PasskeyRemoved(e) => &e.email,
        }
    }

    /// The language the mail should be written in.
    pub fn locale(&self) -> &str {
        match self {
            Event::UserRegistered(e) => &e.locale,
            Event::EmailConfirmationRequested(e) => &e.locale,
            Event::PasswordResetRequested(e) => &e.locale,
            Event::PasswordChanged(e) => &e.locale,
            Event::EmailChanged(e) => &e.locale,
            Event::NewSignIn(e) => &e.locale,
            Event::RoleChanged(e) => &e.locale,
            Event::MfaEnabled(e) => &e.locale,
            Event::MfaDisabled(e) => &e.locale,
            Event::RecoveryCodeUsed(e) => &e.locale,
            Event::MfaFailures(e) => &e.locale,
            Event::RecoveryCodesReplaced(e) => &e.locale,
            Event::IdentityLinked(e) => &e.locale,
            Event::IdentityUnlinked(e) => &e.locale,
            Event::PasskeyAdded(e) => &e.locale,
            Event::PasskeyRemoved(e) => &e.locale,
        }
    }
}

impl Envelope {
    /// Wraps an event with a fresh, time-ordered id.
    pub fn new(event: Event) -> Self {
        Self {
            id: Uuid::now_v7(),
            event,
            version: VERSION,
            occurred_at: Utc::now(),
            correlation_id: None,
        }
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn kind(&self) -> &'static str {
        self.event.kind()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// Parses a message body. Unknown fields are ignored (forward compatibility); an unknown type
    /// or a missing field is an error.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registered() -> Envelope {
        Envelope::new(Event::UserRegistered(UserRegistered {
            user_id: Uuid::new_v4(),
            email: "ada@example.com".into(),
            username: Some("ada".into()),
            confirmation_url: Some("http://localhost:8080/api/users/confirm?token=t".into()),
            confirmation_expires_at: Some(Utc::now()),
            locale: "en".into(),
        }))
    }

    #[test]
    fn envelope_has_the_documented_shape() {
        let envelope = registered();
        let value: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert_eq!(value["type"], "user-registered");
        assert_eq!(value["version"], 1);
        assert_eq!(value["id"], envelope.id.to_string());
        assert!(value["occurred_at"].as_str().unwrap().contains('T'));
        assert_eq!(value["data"]["email"], "ada@example.com");
        assert_eq!(value["data"]["username"], "ada");
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 5, "{keys:?}");

        let traced = envelope.with_correlation_id("req-1");
        let value: serde_json::Value = serde_json::from_slice(&traced.to_json()).unwrap();
        assert_eq!(value["correlation_id"], "req-1");
        assert_eq!(Envelope::from_json(&traced.to_json()).unwrap(), traced);
    }

    #[test]
    fn every_event_round_trips() {
        let now = Utc::now();
        let user_id = Uuid::new_v4();
        let events = [
            registered().event,
            Event::EmailConfirmationRequested(EmailConfirmationRequested {
                user_id,
                email: "b@example.com".into(),
                username: None,
                confirmation_url: "u".into(),
                confirmation_expires_at: now,
                locale: "fr".into(),
            }),
            Event::PasswordResetRequested(PasswordResetRequested {
                user_id,
                email: "c@example.com".into(),
                username: None,
                reset_url: "r".into(),
                reset_expires_at: now,
                locale: "en".into(),
            }),
            Event::PasswordChanged(PasswordChanged {
                user_id,
                email: "d@example.com".into(),
                username: Some("d".into()),
                changed_at: now,
                locale: "en".into(),
            }),
            Event::EmailChanged(EmailChanged {
                user_id,
                email: "old@example.com".into(),
                new_email: "new@example.com".into(),
                username: None,
                changed_at: now,
                revert_url: "v".into(),
                revert_expires_at: now,
                locale: "en".into(),
            }),
            Event::NewSignIn(NewSignIn {
                user_id,
                email: "e@example.com".into(),
                username: None,
                device: "Firefox on Linux".into(),
                ip: "192.0.2.1".into(),
                signed_in_at: now,
                reject_url: "x".into(),
                reject_expires_at: now,
                locale: "fr".into(),
            }),
            Event::RoleChanged(RoleChanged {
                user_id,
                email: "f@example.com".into(),
                username: None,
                role: "support".into(),
                granted: true,
                changed_at: now,
                locale: "en".into(),
            }),
            Event::MfaEnabled(MfaEnabled {
                user_id,
                email: "g@example.com".into(),
                username: None,
                method: "totp".into(),
                enabled_at: now,
                reject_url: "y".into(),
                reject_expires_at: now,
                locale: "fr".into(),
            }),
            Event::MfaDisabled(MfaDisabled {
                user_id,
                email: "h@example.com".into(),
                username: None,
                disabled_at: now,
                by_operator: true,
                reset_url: Some("z".into()),
                reset_expires_at: Some(now),
                locale: "en".into(),
            }),
            Event::RecoveryCodeUsed(RecoveryCodeUsed {
                user_id,
                email: "i@example.com".into(),
                username: None,
                used_at: now,
                codes_left: 9,
                ip: "192.0.2.2".into(),
                locale: "en".into(),
            }),
            Event::MfaFailures(MfaFailures {
                user_id,
                email: "j@example.com".into(),
                username: None,
                failures: 5,
                ip: "192.0.2.3".into(),
                failed_at: now,
                locale: "en".into(),
            }),
            Event::RecoveryCodesReplaced(RecoveryCodesReplaced {
                user_id,
                email: "k@example.com".into(),
                username: None,
                replaced_at: now,
                ip: "192.0.2.4".into(),
                locale: "fr".into(),
            }),
            Event::IdentityLinked(IdentityLinked {
                user_id,
                email: "l@example.com".into(),
                username: None,
                provider: "GitHub".into(),
                provider_email: Some("l@users.noreply.github.com".into()),
                linked_at: now,
                ip: "192.0.2.5".into(),
                reject_url: "w".into(),
                reject_expires_at: now,
                locale: "en".into(),
            }),
            Event::IdentityUnlinked(IdentityUnlinked {
                user_id,
                email: "m@example.com".into(),
                username: Some("m".into()),
                provider: "Google".into(),
                unlinked_at: now,
                ip: "192.0.2.6".into(),
                locale: "fr".into(),
            }),
            Event::PasskeyAdded(PasskeyAdded {
                user_id,
                email: "o@example.com".into(),
                username: Some("o".into()),
                name: "YubiKey 5C".into(),
                added_at: now,
                ip: "192.0.2.8".into(),
                reject_url: "p".into(),
                reject_expires_at: now,
                locale: "en".into(),
            }),
            Event::PasskeyRemoved(PasskeyRemoved {
                user_id,
                email: "q@example.com".into(),
                username: None,
                name: "Passkey".into(),
                removed_at: now,
                ip: "192.0.2.9".into(),
                locale: "fr".into(),
            }),
        ];
        assert_eq!(events.len(), Event::TYPES.len());
        for (event, kind) in events.into_iter().zip(Event::TYPES) {
            let envelope = Envelope::new(event);
            assert_eq!(envelope.kind(), kind);
            let back = Envelope::from_json(&envelope.to_json()).unwrap();
            assert_eq!(back, envelope);
        }
    }

    /// A social sign-in's welcome: the address is already confirmed, so there is no link.
    fn registered_without_a_link() -> Envelope {
        let mut envelope = registered();
        if let Event::UserRegistered(e) = &mut envelope.event {
            e.confirmation_url = None;
            e.confirmation_expires_at = None;
        }
        envelope
    }

    #[test]
    fn a_welcome_without_a_confirmation_link_leaves_the_link_fields_out() {
        let envelope = registered_without_a_link();
        let value: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        let data = value["data"].as_object().unwrap();
        assert!(!data.contains_key("confirmation_url"), "{data:?}");
        assert!(!data.contains_key("confirmation_expires_at"), "{data:?}");
        assert_eq!(Envelope::from_json(&envelope.to_json()).unwrap(), envelope);

        // Written with explicit nulls (another producer's serializer) it reads the same.
        let mut value = value;
        value["data"]["confirmation_url"] = json!(null);
        value["data"]["confirmation_expires_at"] = json!(null);
        let back = Envelope::from_json(value.to_string().as_bytes()).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn a_welcome_written_before_the_link_was_optional_still_parses() {
        let id = Uuid::new_v4();
        let user_id = Uuid::new_v4();
        // The exact shape accounts wrote while `confirmation_url` was required.
        let old = format!(
            r#"{{"id":"{id}","type":"user-registered","data":{{"user_id":"{user_id}","email":"ada@example.com","username":"ada","confirmation_url":"http://localhost:8080/api/users/confirm?token=t","confirmation_expires_at":"2026-11-23T15:05:00Z","locale":"fr"}},"version":1,"occurred_at":"2026-11-23T14:05:00Z"}}"#
        );
        let envelope = Envelope::from_json(old.as_bytes()).unwrap();
        let Event::UserRegistered(e) = &envelope.event else {
            panic!("not a welcome: {envelope:?}");
        };
        assert_eq!(
            e.confirmation_url.as_deref(),
            Some("http://localhost:8080/api/users/confirm?token=t")
        );
        assert_eq!(
            e.confirmation_expires_at,
            Some("2026-11-23T15:05:00Z".parse().unwrap())
        );
        assert_eq!(envelope.event.locale(), "fr");
        // Written again, the link fields keep their old names and shapes.
        let value: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert_eq!(
            value["data"]["confirmation_url"],
            "http://localhost:8080/api/users/confirm?token=t"
        );
        assert_eq!(
            value["data"]["confirmation_expires_at"],
            "2026-11-23T15:05:00Z"
        );
    }

    #[test]
    fn a_linked_identity_without_a_provider_address_round_trips() {
        let envelope = Envelope::new(Event::IdentityLinked(IdentityLinked {
            user_id: Uuid::new_v4(),
            email: "n@example.com".into(),
            username: None,
            provider: "Corporate SSO".into(),
            provider_email: None,
            linked_at: Utc::now(),
            ip: "192.0.2.7".into(),
            reject_url: "http://localhost:8080/account/reject-sign-in?token=t".into(),
            reject_expires_at: Utc::now(),
            locale: "en".into(),
        }));
        let value: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert_eq!(value["type"], "identity-linked");
        assert!(value["data"]["provider_email"].is_null());
        assert_eq!(Envelope::from_json(&envelope.to_json()).unwrap(), envelope);
        assert_eq!(envelope.event.recipient(), "n@example.com");
    }

    #[test]
    fn a_passkey_event_has_its_documented_type_and_fields() {
        let id = Uuid::new_v4();
        let user_id = Uuid::new_v4();
        // The shape DESIGN gives accounts to write, without a locale (it defaults to English).
        let added = format!(
            r#"{{"id":"{id}","type":"passkey-added","data":{{"user_id":"{user_id}","email":"r@example.com","username":null,"name":"Phone","added_at":"2026-11-23T14:05:00Z","ip":"192.0.2.10","reject_url":"http://localhost:8080/account/reject-sign-in?token=t","reject_expires_at":"2026-11-30T14:05:00Z"}},"version":1,"occurred_at":"2026-11-23T14:05:00Z"}}"#
        );
        let envelope = Envelope::from_json(added.as_bytes()).unwrap();
        assert_eq!(envelope.kind(), "passkey-added");
        assert_eq!(envelope.event.recipient(), "r@example.com");
        assert_eq!(envelope.event.locale(), "en");
        let Event::PasskeyAdded(e) = &envelope.event else {
            panic!("not a passkey-added: {envelope:?}");
        };
        assert_eq!(e.name, "Phone");
        assert_eq!(
            e.reject_url,
            "http://localhost:8080/account/reject-sign-in?token=t"
        );

        let removed = format!(
            r#"{{"id":"{id}","type":"passkey-removed","data":{{"user_id":"{user_id}","email":"r@example.com","username":"r","name":"Phone","removed_at":"2026-11-23T14:05:00Z","ip":"192.0.2.10","locale":"fr"}},"version":1,"occurred_at":"2026-11-23T14:05:00Z"}}"#
        );
        let envelope = Envelope::from_json(removed.as_bytes()).unwrap();
        assert_eq!(envelope.kind(), "passkey-removed");
        assert_eq!(envelope.event.locale(), "fr");

        // The link is what the mail is for: an added passkey without one is refused, not mailed bare.
        let mut value: serde_json::Value = serde_json::from_str(&added).unwrap();
        value["data"].as_object_mut().unwrap().remove("reject_url");
        assert!(Envelope::from_json(value.to_string().as_bytes()).is_err());
    }

    #[test]
    fn a_payload_without_locale_reads_as_english() {
        let mut value = serde_json::to_value(registered()).unwrap();
        value["data"].as_object_mut().unwrap().remove("locale");
        let back = Envelope::from_json(value.to_string().as_bytes()).unwrap();
        assert_eq!(back.event.locale(), "en");
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_rejected() {
        let mut value = serde_json::to_value(registered()).unwrap();
        value["data"]["added_later"] = json!(true);
        value["trace"] = json!("x");
        assert!(Envelope::from_json(value.to_string().as_bytes()).is_ok());

        value["type"] = json!("user-exploded");
        assert!(Envelope::from_json(value.to_string().as_bytes()).is_err());
        assert!(Envelope::from_json(b"{not json").is_err());
    }
}
