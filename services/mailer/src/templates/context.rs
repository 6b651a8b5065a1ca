//! What each mail's templates see: a typed context per event type, built from the payload, with its
//! links checked and the text a client chose (a user agent) kept to one short line.

use chrono::{DateTime, Utc};
use events::Event;
use serde::Serialize;

use super::{MailLocale, TemplateError};

/// The Tera context of `event`'s mail in `locale`; the caller adds what every mail sees (`product`).
pub(super) fn for_event(
    event: &Event,
    locale: &MailLocale,
) -> Result<tera::Context, TemplateError> {
    let template = event.kind();
    let time = |at: DateTime<Utc>| locale.format_time(at);
    match event {
        Event::UserRegistered(e) => {
            let confirmation = e
                .confirmation_url
                .as_deref()
                .map(|url| Link::parse(template, url))
                .transpose()?;
            tera_context(&WelcomeContext {
                username: display_name(e.username.as_deref(), &e.email),
                expires_at: confirmation
                    .as_ref()
                    .and(e.confirmation_expires_at)
                    .map(time),
                confirmation,
            })
        }
        Event::EmailConfirmationRequested(e) => tera_context(&ConfirmationContext {
            username: display_name(e.username.as_deref(), &e.email),
            confirmation: Link::parse(template, &e.confirmation_url)?,
            expires_at: time(e.confirmation_expires_at),
        }),
        Event::PasswordResetRequested(e) => tera_context(&PasswordResetContext {
            username: display_name(e.username.as_deref(), &e.email),
            reset: Link::parse(template, &e.reset_url)?,
            expires_at: time(e.reset_expires_at),
        }),
        Event::PasswordChanged(e) => tera_context(&PasswordChangedContext {
            username: display_name(e.username.as_deref(), &e.email),
            changed_at: time(e.changed_at),
        }),
        Event::EmailChanged(e) => tera_context(&EmailChangedContext {
            username: display_name(e.username.as_deref(), &e.email),
            new_email: mask_email(&e.new_email),
            changed_at: time(e.changed_at),
            revert: Link::parse(template, &e.revert_url)?,
            expires_at: time(e.revert_expires_at),
        }),
        Event::NewSignIn(e) => tera_context(&NewSignInContext {
            username: display_name(e.username.as_deref(), &e.email),
            device: one_line(&e.device),
            ip: one_line(&e.ip),
            signed_in_at: time(e.signed_in_at),
            reject: Link::parse(template, &e.reject_url)?,
            expires_at: time(e.reject_expires_at),
        }),
        Event::RoleChanged(e) => tera_context(&RoleChangedContext {
            username: display_name(e.username.as_deref(), &e.email),
            role: one_line(&e.role),
            granted: e.granted,
            changed_at: time(e.changed_at),
        }),
        Event::MfaEnabled(e) => tera_context(&MfaEnabledContext {
            username: display_name(e.username.as_deref(), &e.email),
            method: SecondFactor::named(&e.method),
            enabled_at: time(e.enabled_at),
            reject: Link::parse(template, &e.reject_url)?,
            expires_at: time(e.reject_expires_at),
        }),
        Event::MfaDisabled(e) => {
            // Only an operator's removal mails a link: the user's own never carries one, whatever
            // the payload holds.
            let reset = match (&e.reset_url, e.by_operator) {
                (Some(url), true) => Some(Link::parse(template, url)?),
                _ => None,
            };
            tera_context(&MfaDisabledContext {
                username: display_name(e.username.as_deref(), &e.email),
                disabled_at: time(e.disabled_at),
                by_operator: e.by_operator,
                expires_at: reset.as_ref().and(e.reset_expires_at).map(time),
                reset,
            })
        }
        Event::RecoveryCodeUsed(e) => tera_context(&RecoveryCodeUsedContext {
            username: display_name(e.username.as_deref(), &e.email),
            used_at: time(e.used_at),
            ip: one_line(&e.ip),
            codes_left: e.codes_left,
            running_low: e.codes_left <= FEW_RECOVERY_CODES_LEFT,
        }),
        Event::MfaFailures(e) => tera_context(&MfaFailuresContext {
            username: display_name(e.username.as_deref(), &e.email),
            failures: e.failures,
            ip: one_line(&e.ip),
            failed_at: time(e.failed_at),
        }),
        Event::RecoveryCodesReplaced(e) => tera_context(&RecoveryCodesReplacedContext {
            username: display_name(e.username.as_deref(), &e.email),
            replaced_at: time(e.replaced_at),
            ip: one_line(&e.ip),
        }),
        Event::IdentityLinked(e) => tera_context(&IdentityLinkedContext {
            username: display_name(e.username.as_deref(), &e.email),
            provider: one_line(&e.provider),
            provider_email: e
                .provider_email
                .as_deref()
                .map(one_line)
                .filter(|address| !address.is_empty()),
            linked_at: time(e.linked_at),
            ip: one_line(&e.ip),
            reject: Link::parse(template, &e.reject_url)?,
            expires_at: time(e.reject_expires_at),
        }),
        Event::IdentityUnlinked(e) => tera_context(&IdentityUnlinkedContext {
            username: display_name(e.username.as_deref(), &e.email),
            provider: one_line(&e.provider),
            unlinked_at: time(e.unlinked_at),
            ip: one_line(&e.ip),
        }),
        Event::PasskeyAdded(e) => tera_context(&PasskeyAddedContext {
            username: display_name(e.username.as_deref(), &e.email),
            name: passkey_name(&e.name),
            added_at: time(e.added_at),
            ip: one_line(&e.ip),
            reject: Link::parse(template, &e.reject_url)?,
            expires_at: time(e.reject_expires_at),
        }),
        Event::PasskeyRemoved(e) => tera_context(&PasskeyRemovedContext {
            username: display_name(e.username.as_deref(), &e.email),
            name: passkey_name(&e.name),
            removed_at: time(e.removed_at),
            ip: one_line(&e.ip),
        }),
    }
    .map_err(|e| TemplateError::render(template, &e))
}

/// A link for a mail: `url` for text bodies, `href` already escaped for an HTML attribute (use it
/// with `| safe`; Tera's own escaping would also turn every `/` into `&#x2F;`).
#[derive(Serialize)]
struct Link {
    url: String,
    href: String,
}

impl Link {
    /// Only absolute http(s) URLs become links, so a bad producer cannot plant `javascript:`.
    fn parse(template: &str, raw: &str) -> Result<Self, TemplateError> {
        let url = url::Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| TemplateError::Render {
                name: template.to_string(),
                message: "the event's link is not an absolute http(s) URL".to_string(),
            })?;
        let url = url.to_string();
        let mut href = String::with_capacity(url.len());
        for c in url.chars() {
            match c {
                '&' => href.push_str("&amp;"),
                '"' => href.push_str("&quot;"),
                '\'' => href.push_str("&#39;"),
                '<' => href.push_str("&lt;"),
                '>' => href.push_str("&gt;"),
                c => href.push(c),
            }
        }
        Ok(Self { url, href })
    }
}

/// Context of `user-registered`. `confirmation` is absent when the address needs no confirming (an
/// account made by a social sign-in); `expires_at` is the link's, and absent with it or when the
/// payload gives none.
#[derive(Serialize)]
struct WelcomeContext<'a> {
    username: &'a str,
    confirmation: Option<Link>,
    expires_at: Option<String>,
}

/// Context of `email-confirmation-requested`.
#[derive(Serialize)]
struct ConfirmationContext<'a> {
    username: &'a str,
    confirmation: Link,
    expires_at: String,
}

#[derive(Serialize)]
struct PasswordResetContext<'a> {
    username: &'a str,
    reset: Link,
    expires_at: String,
}

#[derive(Serialize)]
struct PasswordChangedContext<'a> {
    username: &'a str,
    changed_at: String,
}

/// Sent to the old address; `expires_at` is the revert link's.
#[derive(Serialize)]
struct EmailChangedContext<'a> {
    username: &'a str,
    new_email: String,
    changed_at: String,
    revert: Link,
    expires_at: String,
}

/// `expires_at` is the reject link's.
#[derive(Serialize)]
struct NewSignInContext<'a> {
    username: &'a str,
    device: String,
    ip: String,
    signed_in_at: String,
    reject: Link,
    expires_at: String,
}

#[derive(Serialize)]
struct RoleChangedContext<'a> {
    username: &'a str,
    role: String,
    granted: bool,
    changed_at: String,
}

/// `expires_at` is the reject link's, which undoes the new second factor with the effects of a
/// sign-in reject.
#[derive(Serialize)]
struct MfaEnabledContext<'a> {
    username: &'a str,
    method: SecondFactor,
    enabled_at: String,
    reject: Link,
    expires_at: String,
}

/// The second factor a mail names, from the payload's `method`. The templates word each in their
/// language; a method they do not know yet reads as "a second factor" rather than stopping the
/// mail.
#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum SecondFactor {
    Totp,
    Passkey,
    Other,
}

impl SecondFactor {
    fn named(method: &str) -> Self {
        match method {
            "totp" => Self::Totp,
            "passkey" => Self::Passkey,
            _ => Self::Other,
        }
    }
}

/// `reset` and its `expires_at` are set only when an operator removed the factors (the password
/// then no longer works) and the payload carries the link.
#[derive(Serialize)]
struct MfaDisabledContext<'a> {
    username: &'a str,
    disabled_at: String,
    by_operator: bool,
    reset: Option<Link>,
    expires_at: Option<String>,
}

/// At or below this many unused recovery codes, the mail suggests generating a new set.
const FEW_RECOVERY_CODES_LEFT: u32 = 3;

#[derive(Serialize)]
struct RecoveryCodeUsedContext<'a> {
    username: &'a str,
    used_at: String,
    ip: String,
    codes_left: u32,
    running_low: bool,
}

/// `failures` counts the last 24 hours; `ip` and `failed_at` are the latest one's.
#[derive(Serialize)]
struct MfaFailuresContext<'a> {
    username: &'a str,
    failures: u32,
    ip: String,
    failed_at: String,
}

/// `ip` is the address the new set was generated from; the old codes stopped working then.
#[derive(Serialize)]
struct RecoveryCodesReplacedContext<'a> {
    username: &'a str,
    replaced_at: String,
    ip: String,
}

/// `provider` is its display name ("Google", "GitHub", a configured name); `provider_email`, the
/// provider account's address when it has one, is shown whole: the mail goes to the account's own
/// address, and its owner must recognise (or not) the account that now signs in as them. `reject`
/// undoes the link with the effects of a sign-in reject.
#[derive(Serialize)]
struct IdentityLinkedContext<'a> {
    username: &'a str,
    provider: String,
    provider_email: Option<String>,
    linked_at: String,
    ip: String,
    reject: Link,
    expires_at: String,
}

#[derive(Serialize)]
struct IdentityUnlinkedContext<'a> {
    username: &'a str,
    provider: String,
    unlinked_at: String,
    ip: String,
}

/// `name` is the one the user gave the passkey (whoever added it chose it: it stays on one line),
/// absent when it is blank, and the mail then says "a passkey". `reject` undoes the addition with
/// the effects of a sign-in reject.
#[derive(Serialize)]
struct PasskeyAddedContext<'a> {
    username: &'a str,
    name: Option<String>,
    added_at: String,
    ip: String,
    reject: Link,
    expires_at: String,
}

#[derive(Serialize)]
struct PasskeyRemovedContext<'a> {
    username: &'a str,
    name: Option<String>,
    removed_at: String,
    ip: String,
}

/// A passkey's name as the mail shows it: one short line, or none when it is blank.
fn passkey_name(raw: &str) -> Option<String> {
    Some(one_line(raw)).filter(|name| !name.is_empty())
}

fn tera_context(value: &impl Serialize) -> tera::Result<tera::Context> {
    tera::Context::from_serialize(value)
}

/// The username, or the local part of the address when the user chose none.
fn display_name<'a>(username: Option<&'a str>, email: &'a str) -> &'a str {
    match username.map(str::trim) {
        Some(name) if !name.is_empty() => name,
        _ => email.split('@').next().unwrap_or(email),
    }
}

/// The new address, recognisable to its owner but not readable in full by whoever holds the old
/// mailbox now: `n***@example.com`.
fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{}", one_line(domain))
        }
        None => "***".to_string(),
    }
}

/// The longest client-supplied text (a user agent) we put in a mail.
const ONE_LINE_MAX_CHARS: usize = 120;

/// Text that came from a client (a user agent), as one short line: no line breaks to fake a
/// paragraph with, no control characters, and no essay.
fn one_line(raw: &str) -> String {
    let words: Vec<&str> = raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let line = words.join(" ");
    if line.chars().count() <= ONE_LINE_MAX_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(ONE_LINE_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_falls_back_to_the_local_part() {
        assert_eq!(display_name(Some("ada"), "x@example.com"), "ada");
        assert_eq!(display_name(None, "grace@example.com"), "grace");
        assert_eq!(display_name(Some("  "), "grace@example.com"), "grace");
    }

    #[test]
    fn links_must_be_http_and_are_escaped_for_attributes() {
        let link = Link::parse("t", "https://example.com/c?token=a&b=\"x\"").unwrap();
        assert_eq!(link.href, "https://example.com/c?token=a&amp;b=%22x%22");
        assert_eq!(link.url, "https://example.com/c?token=a&b=%22x%22");
        assert!(Link::parse("t", "javascript:alert(1)").is_err());
        assert!(Link::parse("t", "/relative").is_err());
    }

    #[test]
    fn the_new_address_is_masked() {
        assert_eq!(mask_email("new.address@example.org"), "n***@example.org");
        assert_eq!(mask_email("é@exemple.fr"), "é***@exemple.fr");
        assert_eq!(mask_email("not-an-address"), "***");
    }

    #[test]
    fn a_second_factor_is_named_from_a_closed_list() {
        assert_eq!(SecondFactor::named("totp"), SecondFactor::Totp);
        assert_eq!(SecondFactor::named("passkey"), SecondFactor::Passkey);
        for unknown in ["sms", "TOTP", "", "<script>"] {
            assert_eq!(
                SecondFactor::named(unknown),
                SecondFactor::Other,
                "{unknown}"
            );
        }
    }

    #[test]
    fn client_text_becomes_one_short_line() {
        assert_eq!(one_line("Firefox\r\non\tLinux\u{0}"), "Firefox on Linux");
        let long = one_line(&"a".repeat(500));
        assert_eq!(long.chars().count(), ONE_LINE_MAX_CHARS);
        assert!(long.ends_with('…'));
    }
}
