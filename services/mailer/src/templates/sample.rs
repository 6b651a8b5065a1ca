//! Made-up events for `mailer render`, so an operator sees every template with every field set.

use chrono::{DateTime, Utc};
use events::{
    EmailChanged, EmailConfirmationRequested, Event, IdentityLinked, IdentityUnlinked, MfaDisabled,
    MfaEnabled, MfaFailures, NewSignIn, PasskeyAdded, PasskeyRemoved, PasswordChanged,
    PasswordResetRequested, RecoveryCodeUsed, RecoveryCodesReplaced, RoleChanged, UserRegistered,
};

/// The instant every sample mail uses, so that two renders of one template compare equal.
fn sample_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_442_700, 0).unwrap_or_default() // 2026-11-23 14:05 UTC
}

/// A made-up event of type `kind`, for `mailer render`: every field the templates use is set.
pub fn sample_event(kind: &str, locale: &str) -> Option<Event> {
    let now = sample_time();
    let user_id = uuid::Uuid::nil();
    let email = "ada@example.com".to_string();
    let username = Some("ada".to_string());
    let locale = locale.to_string();
    let link = |path: &str| format!("https://accounts.example.com{path}?token=sample-token");
    let event = match kind {
        // A password sign-up's welcome, with the link; a social sign-in's has none.
        "user-registered" => Event::UserRegistered(UserRegistered {
            user_id,
            email,
            username,
            confirmation_url: Some(link("/api/users/confirm")),
            confirmation_expires_at: Some(now + chrono::Duration::hours(1)),
            locale,
        }),
        "email-confirmation-requested" => {
            Event::EmailConfirmationRequested(EmailConfirmationRequested {
                user_id,
                email,
                username,
                confirmation_url: link("/api/users/confirm"),
                confirmation_expires_at: now + chrono::Duration::hours(1),
                locale,
            })
        }
        "password-reset-requested" => Event::PasswordResetRequested(PasswordResetRequested {
            user_id,
            email,
            username,
            reset_url: link("/password/reset"),
            reset_expires_at: now + chrono::Duration::hours(1),
            locale,
        }),
        "password-changed" => Event::PasswordChanged(PasswordChanged {
            user_id,
            email,
            username,
            changed_at: now,
            locale,
        }),
        "email-changed" => Event::EmailChanged(EmailChanged {
            user_id,
            email,
            new_email: "new.address@example.org".to_string(),
            username,
            changed_at: now,
            revert_url: link("/account/revert-email"),
            revert_expires_at: now + chrono::Duration::days(7),
            locale,
        }),
        "new-sign-in" => Event::NewSignIn(NewSignIn {
            user_id,
            email,
            username,
            device: "Firefox on Linux".to_string(),
            ip: "203.0.113.7".to_string(),
            signed_in_at: now,
            reject_url: link("/account/reject-sign-in"),
            reject_expires_at: now + chrono::Duration::days(7),
            locale,
        }),
        "role-changed" => Event::RoleChanged(RoleChanged {
            user_id,
            email,
            username,
            role: "support".to_string(),
            granted: true,
            changed_at: now,
            locale,
        }),
        "mfa-enabled" => Event::MfaEnabled(MfaEnabled {
            user_id,
            email,
            username,
            method: "totp".to_string(),
            enabled_at: now,
            reject_url: link("/account/reject-sign-in"),
            reject_expires_at: now + chrono::Duration::days(7),
            locale,
        }),
        // The operator's removal: the variant with a link, so every field is set.
        "mfa-disabled" => Event::MfaDisabled(MfaDisabled {
            user_id,
            email,
            username,
            disabled_at: now,
            by_operator: true,
            reset_url: Some(link("/password/reset")),
            reset_expires_at: Some(now + chrono::Duration::hours(1)),
            locale,
        }),
        // Few enough left that the mail suggests a new set.
        "recovery-code-used" => Event::RecoveryCodeUsed(RecoveryCodeUsed {
            user_id,
            email,
            username,
            used_at: now,
            codes_left: 2,
            ip: "203.0.113.7".to_string(),
            locale,
        }),
        "mfa-failures" => Event::MfaFailures(MfaFailures {
            user_id,
            email,
            username,
            failures: 5,
            ip: "203.0.113.7".to_string(),
            failed_at: now,
            locale,
        }),
        "recovery-codes-replaced" => Event::RecoveryCodesReplaced(RecoveryCodesReplaced {
            user_id,
            email,
            username,
            replaced_at: now,
            ip: "203.0.113.7".to_string(),
            locale,
        }),
        "identity-linked" => Event::IdentityLinked(IdentityLinked {
            user_id,
            email,
            username,
            provider: "GitHub".to_string(),
            provider_email: Some("ada.lovelace@example.org".to_string()),
            linked_at: now,
            ip: "203.0.113.7".to_string(),
            reject_url: link("/account/reject-sign-in"),
            reject_expires_at: now + chrono::Duration::days(7),
            locale,
        }),
        "identity-unlinked" => Event::IdentityUnlinked(IdentityUnlinked {
            user_id,
            email,
            username,
            provider: "GitHub".to_string(),
            unlinked_at: now,
            ip: "203.0.113.7".to_string(),
            locale,
        }),
        "passkey-added" => Event::PasskeyAdded(PasskeyAdded {
            user_id,
            email,
            username,
            name: "YubiKey 5C".to_string(),
            added_at: now,
            ip: "203.0.113.7".to_string(),
            reject_url: link("/account/reject-sign-in"),
            reject_expires_at: now + chrono::Duration::days(7),
            locale,
        }),
        "passkey-removed" => Event::PasskeyRemoved(PasskeyRemoved {
            user_id,
            email,
            username,
            name: "YubiKey 5C".to_string(),
            removed_at: now,
            ip: "203.0.113.7".to_string(),
            locale,
        }),
        _ => return None,
    };
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn samples_happen_at_a_fixed_instant() {
        assert_eq!(
            sample_time(),
            Utc.with_ymd_and_hms(2026, 11, 23, 14, 5, 0).unwrap()
        );
    }

    #[test]
    fn sample_events_exist_for_every_type() {
        for kind in Event::TYPES {
            let event = sample_event(kind, "fr").unwrap();
            assert_eq!(event.kind(), kind);
            assert_eq!(event.locale(), "fr");
        }
        assert!(sample_event("user-exploded", "en").is_none());
    }
}
