//! Every template in every shipped locale: snapshots, escaping, links, locale matching and
//! fallback, the product name, and `mailer render`. Run with `UPDATE_SNAPSHOTS=1` to rewrite the
//! snapshots after an intended change, and review the diff.

use std::{path::PathBuf, process::Command};

use chrono::{TimeZone, Utc};
use events::{Event, PasswordChanged, UserRegistered};
use mailer::templates::{LOCALES, MailLocale, RenderedMail, Templates, sample_event};
use serde_json::json;
use uuid::Uuid;

fn user_id() -> Uuid {
    Uuid::parse_str("0190f5c2-7a00-7000-8000-000000000001").unwrap()
}

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 13, 0, 0).unwrap()
}

fn locale_codes() -> impl Iterator<Item = &'static str> {
    LOCALES.iter().map(MailLocale::code)
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

/// The sample event of `kind` in `locale`, with `changes` merged into its payload.
fn event_with(kind: &str, locale: &str, changes: serde_json::Value) -> Event {
    let event = sample_event(kind, locale).unwrap();
    let mut value = serde_json::to_value(&event).unwrap();
    for (key, change) in changes.as_object().unwrap() {
        value["data"][key] = change.clone();
    }
    serde_json::from_value(value).unwrap()
}

fn render(kind: &str, locale: &str) -> RenderedMail {
    Templates::embedded()
        .render(&sample_event(kind, locale).unwrap())
        .unwrap()
}

/// Every mail of every shipped locale, from the sample payloads.
fn every_mail(templates: &Templates) -> Vec<(String, RenderedMail)> {
    let mut mails = Vec::new();
    for locale in locale_codes() {
        for kind in Event::TYPES {
            let mail = templates
                .render(&sample_event(kind, locale).unwrap())
                .unwrap();
            mails.push((format!("{locale}/{kind}"), mail));
        }
        for (variant, kind, changes) in variants() {
            let mail = templates
                .render(&event_with(kind, locale, changes))
                .unwrap();
            mails.push((format!("{locale}/{variant}"), mail));
        }
    }
    mails
}

/// The second wording of templates that have two, beside the sample's: its snapshot name, its
/// event type and what changes in the sample payload.
fn variants() -> [(&'static str, &'static str, serde_json::Value); 5] {
    [
        // A social sign-in's welcome: the provider vouched for the address, so there is no link.
        (
            "user-registered-without-link",
            "user-registered",
            json!({"confirmation_url": null, "confirmation_expires_at": null}),
        ),
        (
            "role-changed-revoked",
            "role-changed",
            json!({"granted": false}),
        ),
        (
            "mfa-disabled-by-user",
            "mfa-disabled",
            json!({"by_operator": false, "reset_url": null, "reset_expires_at": null}),
        ),
        (
            "identity-linked-without-provider-address",
            "identity-linked",
            json!({"provider_email": null}),
        ),
        // A passkey whose name is blank is "a passkey".
        (
            "passkey-added-without-name",
            "passkey-added",
            json!({"name": ""}),
        ),
    ]
}

#[test]
fn every_template_renders_in_every_locale_and_matches_its_snapshot() {
    let mails = every_mail(&Templates::embedded());
    assert_eq!(
        mails.len(),
        LOCALES.len() * (Event::TYPES.len() + variants().len())
    );
    for (name, mail) in &mails {
        let locale = name.split('/').next().unwrap();
        assert_eq!(mail.locale, locale, "{name}");
        assert!(!mail.subject.trim().is_empty(), "{name}: empty subject");
        assert!(!mail.subject.contains('\n'), "{name}: {}", mail.subject);
        assert!(mail.text.contains("Hello, ada!") || mail.text.contains("Bonjour ada,"));
        assert!(
            mail.html.contains(&format!("<html lang=\"{locale}\">")),
            "{name}: {}",
            mail.html
        );
        assert!(
            !mail.text.contains("{{") && !mail.html.contains("{{"),
            "{name}"
        );
        snapshot(name, mail);
    }
}

#[test]
fn a_hostile_username_device_role_or_product_never_reaches_html_unescaped() {
    let templates = Templates::load(None, "<script>alert('product')</script>").unwrap();
    let hostile = json!({
        "username": "<script>alert(1)</script>",
        "device": "<img src=x onerror=alert(2)> on \"Linux\"",
        "ip": "<b>203.0.113.7</b>",
        "role": "<script>alert(3)</script>",
        "new_email": "<script>@evil.example",
        "method": "<script>alert(4)</script>",
        "provider": "<img src=x onerror=alert(5)>",
        "provider_email": "<script>alert(6)</script>@evil.example",
        "name": "<script>alert(7)</script> <img src=x onerror=alert(8)>",
    });
    for locale in locale_codes() {
        for kind in Event::TYPES {
            let mail = templates
                .render(&event_with(kind, locale, hostile.clone()))
                .unwrap();
            for tag in ["<script", "<img", "<b>"] {
                assert!(
                    !mail.html.contains(tag),
                    "{locale}/{kind}: {tag} unescaped in {}",
                    mail.html
                );
            }
            assert!(
                mail.html
                    .contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"),
                "{locale}/{kind}: {}",
                mail.html
            );
        }
    }
}

#[test]
fn the_escaped_welcome_mail_is_stable() {
    let mail = Templates::embedded()
        .render(&Event::UserRegistered(UserRegistered {
            user_id: user_id(),
            email: "mallory@example.com".into(),
            username: Some("<script>alert(1)</script>".into()),
            confirmation_url: Some("http://localhost:8080/api/users/confirm?token=abc&x=1".into()),
            confirmation_expires_at: Some(at()),
            locale: "en".into(),
        }))
        .unwrap();
    assert!(
        mail.html
            .contains("href=\"http://localhost:8080/api/users/confirm?token=abc&amp;x=1\""),
        "{}",
        mail.html
    );
    snapshot("user-registered-escaped", &mail);
}

#[test]
fn every_link_in_every_mail_is_http_or_https() {
    for (name, mail) in every_mail(&Templates::embedded()) {
        let hrefs: Vec<&str> = mail.html.split("href=\"").skip(1).collect();
        for href in hrefs {
            assert!(
                href.starts_with("https://") || href.starts_with("http://"),
                "{name}: {href}"
            );
        }
    }
}

#[test]
fn a_javascript_link_in_a_payload_is_refused_not_rendered() {
    for (kind, field) in [
        ("user-registered", "confirmation_url"),
        ("email-confirmation-requested", "confirmation_url"),
        ("password-reset-requested", "reset_url"),
        ("email-changed", "revert_url"),
        ("new-sign-in", "reject_url"),
        ("mfa-enabled", "reject_url"),
        ("mfa-disabled", "reset_url"),
        ("identity-linked", "reject_url"),
        ("passkey-added", "reject_url"),
    ] {
        for bad in ["javascript:alert(1)", "data:text/html,hi", "/relative"] {
            let event = event_with(kind, "fr", json!({ field: bad }));
            let err = Templates::embedded().render(&event).unwrap_err();
            assert!(err.to_string().contains("http(s)"), "{kind}: {err}");
        }
    }
}

#[test]
fn a_french_payload_gets_french_subjects() {
    let expected = [
        ("user-registered", "Bienvenue sur Accounts"),
        (
            "email-confirmation-requested",
            "Confirmez votre adresse e-mail",
        ),
        (
            "password-reset-requested",
            "Réinitialisation de votre mot de passe",
        ),
        ("password-changed", "Votre mot de passe a été modifié"),
        ("email-changed", "Votre adresse e-mail a été modifiée"),
        ("new-sign-in", "Nouvelle connexion à votre compte Accounts"),
        (
            "role-changed",
            "Le rôle support a été ajouté à votre compte Accounts",
        ),
        (
            "mfa-enabled",
            "La vérification en deux étapes est activée sur votre compte Accounts",
        ),
        (
            "mfa-disabled",
            "Choisissez un nouveau mot de passe pour votre compte Accounts",
        ),
        (
            "recovery-code-used",
            "Un code de secours a été utilisé sur votre compte Accounts",
        ),
        (
            "mfa-failures",
            "Quelqu’un connaît le mot de passe de votre compte Accounts",
        ),
        (
            "recovery-codes-replaced",
            "Les codes de secours de votre compte Accounts ont été remplacés",
        ),
        (
            "identity-linked",
            "Un compte GitHub a été associé à votre compte Accounts",
        ),
        (
            "identity-unlinked",
            "Un compte GitHub a été dissocié de votre compte Accounts",
        ),
        (
            "passkey-added",
            "Une clé d’accès a été ajoutée à votre compte Accounts",
        ),
        (
            "passkey-removed",
            "Une clé d’accès a été retirée de votre compte Accounts",
        ),
    ];
    assert_eq!(expected.len(), Event::TYPES.len());
    for (kind, subject) in expected {
        let mail = render(kind, "fr");
        assert_eq!(mail.locale, "fr");
        assert_eq!(mail.subject, subject, "{kind}");
        assert_ne!(mail.subject, render(kind, "en").subject, "{kind}");
    }
}

#[test]
fn regional_tags_like_fr_ca_map_to_their_language() {
    for tag in ["fr-CA", "fr_FR", "FR", "fr-ch"] {
        for kind in Event::TYPES {
            let mail = render(kind, tag);
            assert_eq!(mail.locale, "fr", "{tag}");
            assert_eq!(mail, render(kind, "fr"), "{tag} {kind}");
        }
    }
    assert_eq!(render("new-sign-in", "en-GB").locale, "en");
}

#[test]
fn a_locale_we_do_not_ship_falls_back_to_english() {
    for tag in ["de", "de-DE", "", "zz", "klingon"] {
        for kind in Event::TYPES {
            let mail = render(kind, tag);
            assert_eq!(mail.locale, "en", "{tag}");
            assert_eq!(mail, render(kind, "en"), "{tag} {kind}");
        }
    }
}

#[test]
fn the_product_name_appears_in_every_mail_and_ecoms_in_none() {
    let templates = Templates::load(None, "Acme & Sons").unwrap();
    for (name, mail) in every_mail(&templates) {
        for part in [&mail.subject, &mail.text, &mail.html] {
            assert!(!part.contains("Ecoms"), "{name}: {part}");
        }
        assert!(mail.text.contains("Acme & Sons"), "{name}: {}", mail.text);
        assert!(
            mail.html.contains("Acme &amp; Sons"),
            "{name}: {}",
            mail.html
        );
    }
    let welcome = templates
        .render(&sample_event("user-registered", "en").unwrap())
        .unwrap();
    assert_eq!(welcome.subject, "Acme & Sons Welcome Mail");
}

#[test]
fn french_punctuation_takes_a_non_breaking_space() {
    for (name, mail) in every_mail(&Templates::embedded()) {
        if !name.starts_with("fr/") {
            continue;
        }
        for part in [&mail.subject, &mail.text, &mail.html] {
            for bad in [" :", " ;", " !", " ?", " »", "« "] {
                assert!(!part.contains(bad), "{name} has {bad:?}: {part}");
            }
        }
    }
    assert!(
        render("new-sign-in", "fr")
            .text
            .contains("Appareil\u{a0}: Firefox on Linux")
    );
}

#[test]
fn dates_follow_the_locale() {
    let en = render("password-changed", "en");
    assert!(
        en.text.contains("on November 23, 2026 at 14:05 UTC."),
        "{}",
        en.text
    );
    let fr = render("password-changed", "fr");
    assert!(
        fr.text.contains("le 23 novembre 2026 à 14:05 UTC."),
        "{}",
        fr.text
    );
    assert!(
        fr.html.contains("le 23 novembre 2026 à 14:05 UTC."),
        "{}",
        fr.html
    );
}

#[test]
fn email_changed_tells_the_old_address_where_it_went_and_how_to_undo_it() {
    let mail = render("email-changed", "en");
    let link = "https://accounts.example.com/account/revert-email?token=sample-token";
    assert!(
        mail.text.contains("changed to n***@example.org"),
        "{}",
        mail.text
    );
    assert!(!mail.text.contains("new.address@example.org"));
    assert!(!mail.html.contains("new.address@example.org"));
    assert!(
        mail.text.contains(&format!("Undo this change: {link}")),
        "{}",
        mail.text
    );
    assert!(
        mail.html.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html
    );
    assert!(
        mail.text.contains("until November 30, 2026 at 14:05 UTC"),
        "{}",
        mail.text
    );
    let fr = render("email-changed", "fr");
    assert!(
        fr.text.contains("remplacée par n***@example.org"),
        "{}",
        fr.text
    );
    assert!(
        fr.text.contains("jusqu’au 30 novembre 2026 à 14:05 UTC"),
        "{}",
        fr.text
    );
}

#[test]
fn new_sign_in_names_the_device_the_place_the_time_and_the_way_out() {
    let mail = render("new-sign-in", "en");
    let link = "https://accounts.example.com/account/reject-sign-in?token=sample-token";
    for expected in [
        "Device: Firefox on Linux",
        "IP address 203.0.113.7",
        "Time: November 23, 2026 at 14:05 UTC",
        &format!("This wasn't me: {link}"),
        "until November 30, 2026 at 14:05 UTC",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
    }
    assert!(
        mail.html.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html
    );
    // A user agent is the client's to choose: it cannot add lines to the mail.
    let forged = event_with(
        "new-sign-in",
        "en",
        json!({"device": "Firefox\n\nURGENT: call +1 555 0100"}),
    );
    let mail = Templates::embedded().render(&forged).unwrap();
    assert!(
        mail.text
            .contains("Device: Firefox URGENT: call +1 555 0100\n"),
        "{}",
        mail.text
    );
}

#[test]
fn role_changed_says_whether_the_role_was_granted_or_revoked() {
    let granted = render("role-changed", "en");
    assert_eq!(
        granted.subject,
        "Your Accounts account was given the support role"
    );
    let revoked = Templates::embedded()
        .render(&event_with("role-changed", "en", json!({"granted": false})))
        .unwrap();
    assert_eq!(
        revoked.subject,
        "The support role was removed from your Accounts account"
    );
    assert!(revoked.text.contains("was removed"), "{}", revoked.text);
    let revoked_fr = Templates::embedded()
        .render(&event_with("role-changed", "fr", json!({"granted": false})))
        .unwrap();
    assert_eq!(
        revoked_fr.subject,
        "Le rôle support a été retiré de votre compte Accounts"
    );
}

#[test]
fn mfa_enabled_names_the_method_the_time_and_the_way_out() {
    let link = "https://accounts.example.com/account/reject-sign-in?token=sample-token";
    let mail = render("mfa-enabled", "en");
    assert_eq!(
        mail.subject,
        "Two-step verification is on for your Accounts account"
    );
    for expected in [
        "set up with an authenticator app on November 23, 2026 at 14:05 UTC",
        &format!("This wasn't me: {link}"),
        "until November 30, 2026 at 14:05 UTC",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
    }
    assert!(
        mail.html.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html
    );
    for (method, en, fr) in [
        (
            "passkey",
            "set up with a passkey on",
            "configurée avec une clé d’accès le",
        ),
        (
            "sms",
            "set up with a second factor on",
            "configurée avec un second facteur le",
        ),
    ] {
        let changes = json!({ "method": method });
        let mail = Templates::embedded()
            .render(&event_with("mfa-enabled", "en", changes.clone()))
            .unwrap();
        assert!(mail.text.contains(en), "{method}: {}", mail.text);
        assert!(mail.html.contains(en), "{method}: {}", mail.html);
        let mail = Templates::embedded()
            .render(&event_with("mfa-enabled", "fr", changes))
            .unwrap();
        assert!(mail.text.contains(fr), "{method}: {}", mail.text);
    }
    assert!(
        render("mfa-enabled", "fr")
            .text
            .contains("configurée avec une application d’authentification le 23 novembre 2026")
    );
}

#[test]
fn mfa_disabled_by_an_operator_carries_the_reset_link_and_the_users_own_does_not() {
    let link = "https://accounts.example.com/password/reset?token=sample-token";
    for locale in locale_codes() {
        let by_operator = render("mfa-disabled", locale);
        assert!(
            by_operator.text.contains(link),
            "{locale}: {}",
            by_operator.text
        );
        assert!(
            by_operator.html.contains(&format!("href=\"{link}\"")),
            "{locale}: {}",
            by_operator.html
        );
        // The user's own removal never mails a link, even should the payload carry one.
        for changes in [
            json!({"by_operator": false, "reset_url": null, "reset_expires_at": null}),
            json!({"by_operator": false}),
        ] {
            let by_user = Templates::embedded()
                .render(&event_with("mfa-disabled", locale, changes))
                .unwrap();
            for part in [&by_user.subject, &by_user.text, &by_user.html] {
                assert!(!part.contains("sample-token"), "{locale}: {part}");
                assert!(!part.contains("href"), "{locale}: {part}");
            }
            assert_ne!(by_user.subject, by_operator.subject, "{locale}");
        }
    }
    let by_operator = render("mfa-disabled", "en");
    assert_eq!(
        by_operator.subject,
        "Set a new password for your Accounts account"
    );
    for expected in [
        "At your request, our support team removed",
        "Your password no longer works.",
        &format!("Choose a new password: {link}"),
        "The link works once, until November 23, 2026 at 15:05 UTC.",
    ] {
        assert!(
            by_operator.text.contains(expected),
            "{expected}: {}",
            by_operator.text
        );
    }
    let by_user = Templates::embedded()
        .render(&event_with(
            "mfa-disabled",
            "en",
            json!({"by_operator": false, "reset_url": null, "reset_expires_at": null}),
        ))
        .unwrap();
    assert_eq!(
        by_user.subject,
        "Two-step verification is off for your Accounts account"
    );
    assert!(
        by_user.text.contains(
            "Two-step verification was turned off for your Accounts account on November 23, 2026 at 14:05 UTC"
        ),
        "{}",
        by_user.text
    );
    assert!(by_user.text.contains("change your password at once"));
}

#[test]
fn mfa_disabled_by_an_operator_without_a_link_still_says_how_to_get_back_in() {
    for locale in locale_codes() {
        let mail = Templates::embedded()
            .render(&event_with(
                "mfa-disabled",
                locale,
                json!({"reset_url": null, "reset_expires_at": null}),
            ))
            .unwrap();
        assert!(!mail.html.contains("href"), "{locale}: {}", mail.html);
        let expected = match locale {
            "fr" => "demandez une réinitialisation de votre mot de passe",
            _ => "ask for a password reset",
        };
        assert!(mail.text.contains(expected), "{locale}: {}", mail.text);
        assert!(mail.html.contains(expected), "{locale}: {}", mail.html);
    }
}

#[test]
fn recovery_code_used_says_how_many_codes_are_left_and_when_to_make_more() {
    let advice_en = "Generate a new set";
    let advice_fr = "Générez-en une nouvelle série";
    for (left, en, fr, running_low) in [
        (
            9,
            "You have 9 recovery codes left.",
            "Il vous reste 9 codes de secours.",
            false,
        ),
        (
            4,
            "You have 4 recovery codes left.",
            "Il vous reste 4 codes de secours.",
            false,
        ),
        (
            3,
            "You have 3 recovery codes left.",
            "Il vous reste 3 codes de secours.",
            true,
        ),
        (
            1,
            "You have 1 recovery code left.",
            "Il vous reste 1 code de secours.",
            true,
        ),
        (
            0,
            "you have no recovery codes left.",
            "il ne vous reste plus aucun code de secours.",
            true,
        ),
    ] {
        let changes = json!({ "codes_left": left });
        let mail = Templates::embedded()
            .render(&event_with("recovery-code-used", "en", changes.clone()))
            .unwrap();
        assert!(mail.text.contains(en), "{left}: {}", mail.text);
        assert!(mail.html.contains(en), "{left}: {}", mail.html);
        assert_eq!(mail.text.contains(advice_en), running_low, "{left}");
        let mail = Templates::embedded()
            .render(&event_with("recovery-code-used", "fr", changes))
            .unwrap();
        assert!(mail.text.contains(fr), "{left}: {}", mail.text);
        assert_eq!(mail.text.contains(advice_fr), running_low, "{left}");
    }
    let none_left = Templates::embedded()
        .render(&event_with(
            "recovery-code-used",
            "en",
            json!({"codes_left": 0}),
        ))
        .unwrap();
    assert!(
        none_left
            .text
            .contains("That was your last one: you have no recovery codes left. Generate a new set in your account's security settings: without a code"),
        "{}",
        none_left.text
    );
    let mail = render("recovery-code-used", "en");
    for expected in [
        "used on November 23, 2026 at 14:05 UTC, from IP address 203.0.113.7",
        "change your password at once",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
    }
}

#[test]
fn mfa_failures_says_how_often_from_where_and_that_the_password_is_known() {
    let mail = render("mfa-failures", "en");
    assert_eq!(mail.subject, "Someone knows your Accounts password");
    for expected in [
        "failed the second step of signing in 5 times in the last 24 hours",
        "from IP address 203.0.113.7, on November 23, 2026 at 14:05 UTC",
        "knows your password: change it now",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
        assert!(mail.html.contains(expected), "{expected}: {}", mail.html);
    }
    let once = Templates::embedded()
        .render(&event_with("mfa-failures", "en", json!({"failures": 1})))
        .unwrap();
    assert!(
        once.text.contains("signing in once in the last 24 hours"),
        "{}",
        once.text
    );
    let fr = render("mfa-failures", "fr");
    assert!(
        fr.text.contains("a échoué 5 fois à la seconde étape"),
        "{}",
        fr.text
    );
    // An address is the client's to claim: it cannot add lines to the mail.
    let forged = Templates::embedded()
        .render(&event_with(
            "mfa-failures",
            "en",
            json!({"ip": "203.0.113.7\n\nURGENT: call +1 555 0100"}),
        ))
        .unwrap();
    assert!(
        forged
            .text
            .contains("IP address 203.0.113.7 URGENT: call +1 555 0100, on"),
        "{}",
        forged.text
    );
}

#[test]
fn recovery_codes_replaced_says_when_from_where_and_what_to_do_if_it_was_not_you() {
    let mail = render("recovery-codes-replaced", "en");
    assert_eq!(mail.subject, "Your Accounts recovery codes were replaced");
    for expected in [
        "replaced by a new set on November 23, 2026 at 14:05 UTC, from IP address 203.0.113.7.",
        "The old codes no longer work.",
        "someone has access to your account: sign out every session, change your password, then generate a new set",
        "contact support",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
        assert!(mail.html.contains(expected), "{expected}: {}", mail.html);
    }
    let fr = render("recovery-codes-replaced", "fr");
    for expected in [
        "le 23 novembre 2026 à 14:05 UTC, depuis l’adresse IP 203.0.113.7.",
        "Les anciens codes ne fonctionnent plus.",
        "fermez toutes les sessions, changez votre mot de passe",
    ] {
        assert!(fr.text.contains(expected), "{expected}: {}", fr.text);
        assert!(fr.html.contains(expected), "{expected}: {}", fr.html);
    }
    // An address is the client's to claim: it cannot add lines to the mail.
    for (locale, expected) in [
        (
            "en",
            "from IP address 203.0.113.7 URGENT: call +1 555 0100. The old codes",
        ),
        (
            "fr",
            "depuis l’adresse IP 203.0.113.7 URGENT: call +1 555 0100. Les anciens codes",
        ),
    ] {
        let forged = Templates::embedded()
            .render(&event_with(
                "recovery-codes-replaced",
                locale,
                json!({"ip": "203.0.113.7\r\n\nURGENT: call +1 555 0100"}),
            ))
            .unwrap();
        assert!(forged.text.contains(expected), "{locale}: {}", forged.text);
        assert!(
            !forged.text.contains("\nURGENT"),
            "{locale}: {}",
            forged.text
        );
    }
}

#[test]
fn a_welcome_without_a_confirmation_link_says_the_address_is_already_confirmed() {
    let no_link = json!({"confirmation_url": null, "confirmation_expires_at": null});
    for (locale, confirmed, with_link_only) in [
        (
            "en",
            "Your email address is already confirmed, so your account is ready: there is nothing more to do.",
            "Please follow this link to confirm your mail",
        ),
        (
            "fr",
            "Votre adresse e-mail est déjà confirmée\u{a0}: votre compte est prêt, vous n’avez rien d’autre à faire.",
            "confirmer votre adresse e-mail en suivant ce lien",
        ),
    ] {
        let with_link = render("user-registered", locale);
        let welcome = Templates::embedded()
            .render(&event_with("user-registered", locale, no_link.clone()))
            .unwrap();
        assert_eq!(welcome.subject, with_link.subject, "{locale}");
        for part in [&welcome.text, &welcome.html] {
            assert!(part.contains(confirmed), "{locale}: {part}");
            assert!(!part.contains(with_link_only), "{locale}: {part}");
            assert!(!part.contains("sample-token"), "{locale}: {part}");
        }
        assert!(!welcome.html.contains("href"), "{locale}: {}", welcome.html);
        // The password sign-up's welcome still asks for the confirmation, and says nothing of it
        // being done.
        for part in [&with_link.text, &with_link.html] {
            assert!(part.contains(with_link_only), "{locale}: {part}");
            assert!(!part.contains(confirmed), "{locale}: {part}");
        }
    }
    // An expiry without a link has nothing to qualify: it is not shown.
    let expiry_only = Templates::embedded()
        .render(&event_with(
            "user-registered",
            "en",
            json!({"confirmation_url": null}),
        ))
        .unwrap();
    assert!(
        !expiry_only.text.contains("works until"),
        "{}",
        expiry_only.text
    );
    // A link whose payload gives no expiry is still mailed, without the sentence about it.
    let link_only = Templates::embedded()
        .render(&event_with(
            "user-registered",
            "en",
            json!({"confirmation_expires_at": null}),
        ))
        .unwrap();
    assert!(
        link_only.text.contains(
            "Confirm Account: https://accounts.example.com/api/users/confirm?token=sample-token"
        ),
        "{}",
        link_only.text
    );
    assert!(
        link_only
            .text
            .contains("\n\nIf you did not create this account, ignore this mail."),
        "{}",
        link_only.text
    );
    assert!(
        !link_only.text.contains("works until"),
        "{}",
        link_only.text
    );
}

#[test]
fn identity_linked_names_the_provider_its_address_the_time_the_place_and_the_way_out() {
    let link = "https://accounts.example.com/account/reject-sign-in?token=sample-token";
    let mail = render("identity-linked", "en");
    assert_eq!(mail.subject, "GitHub was linked to your Accounts account");
    for expected in [
        "The GitHub account below was linked to your Accounts account: from now on, it can sign you in.",
        "Provider: GitHub",
        "GitHub account: ada.lovelace@example.org",
        "Time: November 23, 2026 at 14:05 UTC",
        "Location (approximate): IP address 203.0.113.7",
        "removes the GitHub account that was linked",
        "The link works once, until November 30, 2026 at 14:05 UTC.",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
        assert!(mail.html.contains(expected), "{expected}: {}", mail.html);
    }
    assert!(
        mail.text.contains(&format!("This wasn't me: {link}")),
        "{}",
        mail.text
    );
    assert!(
        mail.html
            .contains(&format!("<a href=\"{link}\">This wasn't me</a>")),
        "{}",
        mail.html
    );
    let fr = render("identity-linked", "fr");
    for expected in [
        "Fournisseur\u{a0}: GitHub",
        "Compte GitHub\u{a0}: ada.lovelace@example.org",
        "Date\u{a0}: 23 novembre 2026 à 14:05 UTC",
        "adresse IP 203.0.113.7",
        "retire le compte GitHub associé",
        &format!("Ce n’était pas moi\u{a0}: {link}"),
        "reste valable jusqu’au 30 novembre 2026 à 14:05 UTC.",
    ] {
        assert!(fr.text.contains(expected), "{expected}: {}", fr.text);
    }
    assert!(
        fr.html
            .contains(&format!("<a href=\"{link}\">Ce n’était pas moi</a>")),
        "{}",
        fr.html
    );
}

#[test]
fn identity_linked_without_a_provider_address_leaves_that_line_out() {
    for (locale, line) in [("en", "GitHub account:"), ("fr", "Compte GitHub\u{a0}:")] {
        for provider_email in [json!(null), json!(""), json!(" \r\n ")] {
            let mail = Templates::embedded()
                .render(&event_with(
                    "identity-linked",
                    locale,
                    json!({ "provider_email": provider_email }),
                ))
                .unwrap();
            for part in [&mail.text, &mail.html] {
                assert!(!part.contains(line), "{locale} {provider_email}: {part}");
                assert!(part.contains("GitHub"), "{locale}: {part}");
            }
            assert!(
                mail.text.contains("sample-token"),
                "{locale}: the way out is still there: {}",
                mail.text
            );
        }
    }
}

#[test]
fn identity_linked_text_from_the_provider_or_the_client_cannot_add_lines() {
    // A configured name, a provider account's address and a client address are not ours to trust
    // with the shape of the mail: each stays on its line.
    let forged = Templates::embedded()
        .render(&event_with(
            "identity-linked",
            "en",
            json!({
                "provider": "Acme\nSSO",
                "provider_email": "eve@example.org\r\n\nURGENT: call +1 555 0100",
                "ip": "203.0.113.7\n\nAll is well",
            }),
        ))
        .unwrap();
    for expected in [
        "Provider: Acme SSO\n",
        "Acme SSO account: eve@example.org URGENT: call +1 555 0100\n",
        "IP address 203.0.113.7 All is well\n",
    ] {
        assert!(
            forged.text.contains(expected),
            "{expected}: {}",
            forged.text
        );
    }
    assert_eq!(
        forged.subject,
        "Acme SSO was linked to your Accounts account"
    );
    for line in ["\nURGENT", "\nAll is well", "\nSSO"] {
        assert!(!forged.text.contains(line), "{line}: {}", forged.text);
    }
}

#[test]
fn identity_unlinked_is_a_notice_with_the_provider_the_time_and_the_place_and_no_link() {
    let mail = render("identity-unlinked", "en");
    assert_eq!(
        mail.subject,
        "GitHub was unlinked from your Accounts account"
    );
    for expected in [
        "The GitHub account linked to your Accounts account was unlinked on November 23, 2026 at 14:05 UTC, from IP address 203.0.113.7. It no longer signs you in.",
        "someone has access to your account: sign out every session and change your password",
        "contact support",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
        assert!(mail.html.contains(expected), "{expected}: {}", mail.html);
    }
    let fr = render("identity-unlinked", "fr");
    for expected in [
        "en a été dissocié le 23 novembre 2026 à 14:05 UTC, depuis l’adresse IP 203.0.113.7. Il ne permet plus de vous connecter.",
        "fermez toutes les sessions et changez votre mot de passe",
    ] {
        assert!(fr.text.contains(expected), "{expected}: {}", fr.text);
        assert!(fr.html.contains(expected), "{expected}: {}", fr.html);
    }
    for mail in [&mail, &fr] {
        assert!(!mail.html.contains("href"), "{}", mail.html);
        assert!(!mail.text.contains("://"), "{}", mail.text);
    }
    let forged = Templates::embedded()
        .render(&event_with(
            "identity-unlinked",
            "en",
            json!({"ip": "203.0.113.7\r\n\nURGENT: call +1 555 0100"}),
        ))
        .unwrap();
    assert!(
        forged
            .text
            .contains("from IP address 203.0.113.7 URGENT: call +1 555 0100. It no longer"),
        "{}",
        forged.text
    );
}

#[test]
fn passkey_added_names_the_passkey_the_time_the_place_and_the_way_out() {
    let link = "https://accounts.example.com/account/reject-sign-in?token=sample-token";
    let mail = render("passkey-added", "en");
    assert_eq!(mail.subject, "A passkey was added to your Accounts account");
    for expected in [
        "A passkey named “YubiKey 5C” was added to your Accounts account: from now on, it can sign you in.",
        "Time: November 23, 2026 at 14:05 UTC",
        "Location (approximate): IP address 203.0.113.7",
        "removes this passkey and any added after it",
        "The link works once, until November 30, 2026 at 14:05 UTC.",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
        assert!(mail.html.contains(expected), "{expected}: {}", mail.html);
    }
    assert!(
        mail.text.contains(&format!("This wasn't me: {link}")),
        "{}",
        mail.text
    );
    assert!(
        mail.html
            .contains(&format!("<a href=\"{link}\">This wasn't me</a>")),
        "{}",
        mail.html
    );
    let fr = render("passkey-added", "fr");
    for expected in [
        "Une clé d’accès nommée «\u{a0}YubiKey 5C\u{a0}» a été ajoutée à votre compte Accounts\u{a0}: elle permet désormais de vous connecter.",
        "Date\u{a0}: 23 novembre 2026 à 14:05 UTC",
        "adresse IP 203.0.113.7",
        "retire cette clé d’accès et celles ajoutées depuis",
        "reste valable jusqu’au 30 novembre 2026 à 14:05 UTC.",
    ] {
        assert!(fr.text.contains(expected), "{expected}: {}", fr.text);
        assert!(fr.html.contains(expected), "{expected}: {}", fr.html);
    }
    assert!(
        fr.text
            .contains(&format!("Ce n’était pas moi\u{a0}: {link}")),
        "{}",
        fr.text
    );
    assert!(
        fr.html
            .contains(&format!("<a href=\"{link}\">Ce n’était pas moi</a>")),
        "{}",
        fr.html
    );
}

#[test]
fn a_passkey_without_a_name_is_a_passkey_and_keeps_the_way_out() {
    for (kind, locale, expected) in [
        (
            "passkey-added",
            "en",
            "Hello, ada!\n\nA passkey was added to your Accounts account",
        ),
        (
            "passkey-added",
            "fr",
            "Bonjour ada,\n\nUne clé d’accès a été ajoutée",
        ),
        (
            "passkey-removed",
            "en",
            "Hello, ada!\n\nA passkey was removed from your Accounts account on",
        ),
        (
            "passkey-removed",
            "fr",
            "Bonjour ada,\n\nUne clé d’accès a été retirée de votre compte Accounts le",
        ),
    ] {
        for name in [json!(""), json!(" \r\n\t ")] {
            let mail = Templates::embedded()
                .render(&event_with(kind, locale, json!({ "name": name })))
                .unwrap();
            assert!(
                mail.text.contains(expected),
                "{kind} {locale}: {}",
                mail.text
            );
            for part in [&mail.text, &mail.html] {
                for quote in ["“", "”", "«", "»", "named", "nommée"] {
                    assert!(!part.contains(quote), "{kind} {locale}: {part}");
                }
            }
            if kind == "passkey-added" {
                assert!(
                    mail.text.contains("sample-token") && mail.html.contains("sample-token"),
                    "{locale}: the way out is still there: {}",
                    mail.text
                );
            }
        }
    }
}

#[test]
fn a_passkey_name_or_client_address_cannot_add_lines_or_markup() {
    // Whoever added the passkey named it: the name may be an attacker's message.
    let forged = json!({
        "name": "Phone\n\nURGENT: call +1 555 0100",
        "ip": "203.0.113.7\r\n\nAll is well",
    });
    let added = Templates::embedded()
        .render(&event_with("passkey-added", "en", forged.clone()))
        .unwrap();
    for expected in [
        "A passkey named “Phone URGENT: call +1 555 0100” was added",
        "IP address 203.0.113.7 All is well\n",
    ] {
        assert!(added.text.contains(expected), "{expected}: {}", added.text);
    }
    assert_eq!(
        added.subject,
        "A passkey was added to your Accounts account"
    );
    let removed = Templates::embedded()
        .render(&event_with("passkey-removed", "en", forged))
        .unwrap();
    assert!(
        removed.text.contains(
            "The passkey “Phone URGENT: call +1 555 0100” was removed from your Accounts account on November 23, 2026 at 14:05 UTC, from IP address 203.0.113.7 All is well. It no longer"
        ),
        "{}",
        removed.text
    );
    for mail in [&added, &removed] {
        for line in ["\nURGENT", "\nAll is well"] {
            assert!(!mail.text.contains(line), "{line}: {}", mail.text);
        }
    }

    let hostile = json!({"name": "<img src=x onerror=alert(1)> & \"Phone\""});
    for kind in ["passkey-added", "passkey-removed"] {
        let mail = Templates::embedded()
            .render(&event_with(kind, "en", hostile.clone()))
            .unwrap();
        assert!(
            mail.html
                .contains("“&lt;img src=x onerror=alert(1)&gt; &amp; &quot;Phone&quot;”"),
            "{kind}: {}",
            mail.html
        );
        // The text part is not HTML: the name reads as typed.
        assert!(
            mail.text
                .contains("“<img src=x onerror=alert(1)> & \"Phone\"”"),
            "{kind}: {}",
            mail.text
        );
    }
}

#[test]
fn passkey_removed_is_a_notice_with_the_name_the_time_and_the_place_and_no_link() {
    let mail = render("passkey-removed", "en");
    assert_eq!(
        mail.subject,
        "A passkey was removed from your Accounts account"
    );
    for expected in [
        "The passkey “YubiKey 5C” was removed from your Accounts account on November 23, 2026 at 14:05 UTC, from IP address 203.0.113.7. It no longer signs you in.",
        "someone has access to your account: sign out every session and change your password",
        "contact support",
    ] {
        assert!(mail.text.contains(expected), "{expected}: {}", mail.text);
        assert!(mail.html.contains(expected), "{expected}: {}", mail.html);
    }
    let fr = render("passkey-removed", "fr");
    for expected in [
        "La clé d’accès «\u{a0}YubiKey 5C\u{a0}» a été retirée de votre compte Accounts le 23 novembre 2026 à 14:05 UTC, depuis l’adresse IP 203.0.113.7. Elle ne permet plus de vous connecter.",
        "fermez toutes les sessions et changez votre mot de passe",
    ] {
        assert!(fr.text.contains(expected), "{expected}: {}", fr.text);
        assert!(fr.html.contains(expected), "{expected}: {}", fr.html);
    }
    for mail in [&mail, &fr] {
        assert!(!mail.html.contains("href"), "{}", mail.html);
        assert!(!mail.text.contains("://"), "{}", mail.text);
    }
}

#[test]
fn without_a_username_the_mail_greets_the_local_part() {
    let mail = Templates::embedded()
        .render(&Event::UserRegistered(UserRegistered {
            user_id: user_id(),
            email: "grace.hopper@example.com".into(),
            username: None,
            confirmation_url: Some("http://localhost:8080/api/users/confirm?token=abc".into()),
            confirmation_expires_at: Some(at()),
            locale: "en".into(),
        }))
        .unwrap();
    assert!(mail.text.contains("Hello, grace.hopper!"));
    assert!(mail.html.contains("Hello, grace.hopper!"));
}

fn password_changed(locale: &str) -> Event {
    Event::PasswordChanged(PasswordChanged {
        user_id: user_id(),
        email: "ada@example.com".into(),
        username: Some("ada".into()),
        changed_at: at(),
        locale: locale.into(),
    })
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("mailer-overrides-{}", Uuid::new_v4()))
}

#[test]
fn an_override_in_the_old_layout_still_replaces_the_english_file() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("password-changed")).unwrap();
    std::fs::write(
        dir.join("password-changed/subject.txt"),
        "Security notice for {{ username }}",
    )
    .unwrap();
    let templates = Templates::load(Some(&dir), "Accounts");
    std::fs::remove_dir_all(&dir).unwrap();
    let templates = templates.unwrap();
    let mail = templates.render(&password_changed("en")).unwrap();
    assert_eq!(mail.subject, "Security notice for ada");
    assert!(
        mail.text
            .contains("was changed on November 24, 2026 at 13:00 UTC")
    );
    let fr = templates.render(&password_changed("fr")).unwrap();
    assert_eq!(fr.subject, "Votre mot de passe a été modifié");
}

#[test]
fn a_locale_override_replaces_that_locale_only() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("fr/password-changed")).unwrap();
    std::fs::write(
        dir.join("fr/password-changed/subject.txt"),
        "Alerte de sécurité pour {{ username }} ({{ product }})",
    )
    .unwrap();
    std::fs::write(
        dir.join("fr/base.txt"),
        "{% block content %}{% endblock content %}-- fin",
    )
    .unwrap();
    let templates = Templates::load(Some(&dir), "Acme");
    std::fs::remove_dir_all(&dir).unwrap();
    let templates = templates.unwrap();
    let fr = templates.render(&password_changed("fr-CA")).unwrap();
    assert_eq!(fr.subject, "Alerte de sécurité pour ada (Acme)");
    assert!(fr.text.ends_with("-- fin"), "{}", fr.text);
    let en = templates.render(&password_changed("en")).unwrap();
    assert_eq!(en.subject, "Your password was changed");
    assert!(
        en.text.contains("This is an automated message"),
        "{}",
        en.text
    );
}

/// Runs the built `mailer` binary with a clean template configuration.
fn mailer(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailer"));
    command
        .args(args)
        .env_remove("MAILER_TEMPLATES_DIR")
        .env_remove("MAILER_PRODUCT_NAME")
        .env("RUST_LOG", "error");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn mailer_render_prints_every_part_through_the_configured_overrides() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("fr/new-sign-in")).unwrap();
    let override_file = dir.join("fr/new-sign-in/subject.txt");
    let typo = dir.join("fr/new-signin/body.txt");
    std::fs::create_dir_all(typo.parent().unwrap()).unwrap();
    std::fs::write(&typo, "never used").unwrap();
    std::fs::write(
        &override_file,
        "Connexion depuis {{ device }} — {{ product }}",
    )
    .unwrap();
    let output = mailer(
        &["render", "new-sign-in", "--locale", "fr-CA"],
        &[
            ("MAILER_TEMPLATES_DIR", dir.to_str().unwrap()),
            ("MAILER_PRODUCT_NAME", "Acme"),
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let subject_header = format!(
        "----- subject (fr/new-sign-in/subject.txt: override {}) -----\nConnexion depuis Firefox on Linux — Acme\n",
        override_file.display()
    );
    assert!(stdout.contains(&subject_header), "{stdout}");
    assert!(
        stdout.contains(
            "----- text (fr/new-sign-in/body.txt: embedded; fr/base.txt: embedded) -----"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("Appareil\u{a0}: Firefox on Linux"),
        "{stdout}"
    );
    assert!(
        stdout.contains("----- html (fr/new-sign-in/body.html: embedded"),
        "{stdout}"
    );
    assert!(stdout.contains("<a href=\"https://"), "{stdout}");
    assert!(
        stderr.contains(&format!("warning: {} matches no template", typo.display())),
        "{stderr}"
    );

    let output = mailer(&["render", "user-registered"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("\nAccounts Welcome Mail\n"), "{stdout}");
}

#[test]
fn mailer_render_shows_the_social_account_notices() {
    for (kind, locale, expected) in [
        (
            "identity-linked",
            "en",
            "GitHub was linked to your Accounts account",
        ),
        (
            "identity-linked",
            "fr",
            "Un compte GitHub a été associé à votre compte Accounts",
        ),
        (
            "identity-unlinked",
            "en",
            "GitHub was unlinked from your Accounts account",
        ),
        (
            "identity-unlinked",
            "fr",
            "Un compte GitHub a été dissocié de votre compte Accounts",
        ),
    ] {
        let output = mailer(&["render", kind, "--locale", locale], &[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{kind} {locale}: {stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(&format!(
                "----- subject ({locale}/{kind}/subject.txt: embedded) -----\n{expected}\n"
            )),
            "{kind} {locale}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("----- html ({locale}/{kind}/body.html: embedded")),
            "{kind} {locale}: {stdout}"
        );
    }
}

#[test]
fn mailer_render_shows_the_passkey_notices() {
    for (kind, locale, expected) in [
        (
            "passkey-added",
            "en",
            "A passkey was added to your Accounts account",
        ),
        (
            "passkey-added",
            "fr",
            "Une clé d’accès a été ajoutée à votre compte Accounts",
        ),
        (
            "passkey-removed",
            "en",
            "A passkey was removed from your Accounts account",
        ),
        (
            "passkey-removed",
            "fr",
            "Une clé d’accès a été retirée de votre compte Accounts",
        ),
    ] {
        let output = mailer(&["render", kind, "--locale", locale], &[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{kind} {locale}: {stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(&format!(
                "----- subject ({locale}/{kind}/subject.txt: embedded) -----\n{expected}\n"
            )),
            "{kind} {locale}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("----- html ({locale}/{kind}/body.html: embedded")),
            "{kind} {locale}: {stdout}"
        );
    }
}

#[test]
fn mailer_render_rejects_an_unknown_type_or_locale_and_lists_the_valid_ones() {
    let output = mailer(&["render", "user-exploded"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for kind in Event::TYPES {
        assert!(stderr.contains(kind), "{kind} not listed: {stderr}");
    }

    let output = mailer(&["render", "new-sign-in", "--locale", "de"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'de'"), "{stderr}");
    assert!(stderr.contains("en, fr"), "{stderr}");
}
