//! Snapshots of every rendered template. Run with `UPDATE_SNAPSHOTS=1` to rewrite them after an
//! intended change, and review the diff.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use events::{
    EmailConfirmationRequested, Event, PasswordChanged, PasswordResetRequested, UserRegistered,
};
use mailer::templates::{RenderedMail, Templates};
use uuid::Uuid;

fn user_id() -> Uuid {
    Uuid::parse_str("0190f5c2-7a00-7000-8000-000000000001").unwrap()
}

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 13, 0, 0).unwrap()
}

fn snapshot(name: &str, mail: &RenderedMail) {
    let rendered = format!(
        "subject: {}\n----- text -----\n{}\n----- html -----\n{}",
        mail.subject, mail.text, mail.html
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.snap"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        rendered, expected,
        "{name} changed; if intended, run with UPDATE_SNAPSHOTS=1 and review the diff"
    );
}

/// The welcome mail for `email`, as the templates render it.
fn registered(email: &str, username: Option<&str>, confirmation_url: &str) -> RenderedMail {
    Templates::embedded()
        .render(&Event::UserRegistered(UserRegistered {
            user_id: user_id(),
            email: email.into(),
            username: username.map(Into::into),
            confirmation_url: confirmation_url.into(),
            confirmation_expires_at: at(),
        }))
        .unwrap()
}

#[test]
fn user_registered() {
    let mail = registered(
        "ada@example.com",
        Some("ada"),
        "http://localhost:8080/api/users/confirm?token=abc&x=1",
    );
    snapshot("user-registered", &mail);
}

#[test]
fn user_registered_without_a_username_greets_the_local_part() {
    let mail = registered(
        "grace.hopper@example.com",
        None,
        "http://localhost:8080/api/users/confirm?token=abc",
    );
    assert!(mail.text.contains("Hello, grace.hopper!"));
    assert!(mail.html.contains("Hello, grace.hopper!"));
}

#[test]
fn html_in_a_username_is_escaped() {
    let mail = registered(
        "mallory@example.com",
        Some("<script>alert(1)</script>"),
        "http://localhost:8080/api/users/confirm?token=abc",
    );
    assert!(!mail.html.contains("<script>"), "{}", mail.html);
    assert!(
        mail.html
            .contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"),
        "{}",
        mail.html
    );
    snapshot("user-registered-escaped", &mail);
}

#[test]
fn email_confirmation_requested() {
    let mail = Templates::embedded()
        .render(&Event::EmailConfirmationRequested(
            EmailConfirmationRequested {
                user_id: user_id(),
                email: "ada@example.com".into(),
                username: Some("ada".into()),
                confirmation_url: "http://localhost:8080/api/users/confirm?token=def".into(),
                confirmation_expires_at: at(),
            },
        ))
        .unwrap();
    snapshot("email-confirmation-requested", &mail);
}

#[test]
fn password_reset_requested() {
    let mail = Templates::embedded()
        .render(&Event::PasswordResetRequested(PasswordResetRequested {
            user_id: user_id(),
            email: "ada@example.com".into(),
            username: None,
            reset_url: "http://localhost:8080/password/reset?token=ghi".into(),
            reset_expires_at: at(),
        }))
        .unwrap();
    snapshot("password-reset-requested", &mail);
}

#[test]
fn password_changed() {
    let mail = Templates::embedded()
        .render(&Event::PasswordChanged(PasswordChanged {
            user_id: user_id(),
            email: "ada@example.com".into(),
            username: Some("ada".into()),
            changed_at: at(),
        }))
        .unwrap();
    snapshot("password-changed", &mail);
}

#[test]
fn an_override_directory_replaces_single_files() {
    let dir = std::env::temp_dir().join(format!("mailer-overrides-{}", Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("password-changed")).unwrap();
    std::fs::write(
        dir.join("password-changed/subject.txt"),
        "Security notice for {{ username }}",
    )
    .unwrap();
    let templates = Templates::load(Some(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    let mail = templates
        .unwrap()
        .render(&Event::PasswordChanged(PasswordChanged {
            user_id: user_id(),
            email: "ada@example.com".into(),
            username: Some("ada".into()),
            changed_at: at(),
        }))
        .unwrap();
    assert_eq!(mail.subject, "Security notice for ada");
    assert!(mail.text.contains("was changed on 2026-11-24 13:00 UTC"));
}
