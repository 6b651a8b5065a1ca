//! Mail templates, per locale: `templates/<locale>/<event-type>/{subject.txt,body.html,body.txt}`,
//! each body extending its locale's `base.html` / `base.txt`. They are embedded in the binary; a
//! file of the same relative name in the override directory (`<dir>/fr/password-changed/body.txt`)
//! replaces the embedded one. A locale that lacks a file uses the `en` one, and a payload whose
//! locale we don't ship gets `en`. Names ending in `.html` are autoescaped.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Datelike, Utc};
use events::{
    EmailChanged, EmailConfirmationRequested, Event, NewSignIn, PasswordChanged,
    PasswordResetRequested, RoleChanged, UserRegistered,
};
use serde::Serialize;
use tera::Tera;

/// A language the mail is written in: its templates and how its dates read.
#[derive(Debug)]
pub struct MailLocale {
    code: &'static str,
    dates: chrono::Locale,
    /// A point in time, as a sentence of this language puts it ("November 23, 2026 at 14:05 UTC").
    date_time: &'static str,
    /// The same on the first day of a month, for languages that write it apart (French "1er").
    first_of_month: &'static str,
}

/// The locales whose templates ship in the binary. The first is the fallback for everything.
pub const LOCALES: [MailLocale; 2] = [
    MailLocale {
        code: "en",
        dates: chrono::Locale::en_US,
        date_time: "%B %-d, %Y at %H:%M UTC",
        first_of_month: "%B %-d, %Y at %H:%M UTC",
    },
    MailLocale {
        code: "fr",
        dates: chrono::Locale::fr_FR,
        date_time: "%-d %B %Y à %H:%M UTC",
        first_of_month: "1er %B %Y à %H:%M UTC",
    },
];

/// The locale of every missing translation and unknown language.
pub const FALLBACK_LOCALE: &MailLocale = &LOCALES[0];

impl MailLocale {
    /// The shipped locale for a BCP 47 tag or POSIX name (`fr`, `fr-CA`, `fr_FR`, `FR`), matched
    /// on its language; `None` when we ship no templates in that language.
    pub fn matching(tag: &str) -> Option<&'static MailLocale> {
        let language = tag.trim().split(['-', '_']).next()?;
        LOCALES
            .iter()
            .find(|locale| locale.code.eq_ignore_ascii_case(language))
    }

    /// The locale a payload's mail is written in: its match, else the fallback.
    pub fn for_payload(tag: &str) -> &'static MailLocale {
        Self::matching(tag).unwrap_or(FALLBACK_LOCALE)
    }

    /// The folder name under `templates/`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// `at` as this language writes a date and time in a sentence.
    pub fn format_time(&self, at: DateTime<Utc>) -> String {
        let pattern = if at.day() == 1 {
            self.first_of_month
        } else {
            self.date_time
        };
        let mut out = String::new();
        // The patterns are constants covered by tests; should one ever be invalid, a mail with
        // an RFC 3339 date beats no mail.
        if write!(out, "{}", at.format_localized(pattern, self.dates)).is_err() {
            out = at.to_rfc3339();
        }
        out
    }
}

/// The parts of every mail, named as in each event type's folder.
pub const PARTS: [&str; 3] = ["subject.txt", "body.txt", "body.html"];

/// Embeds `templates/<locale>/...` as `(name relative to the locale, content)` pairs.
macro_rules! embed_locale {
    ($locale:literal) => {
        embed_locale!(@files $locale;
            "base.html", "base.txt",
            "user-registered/subject.txt", "user-registered/body.txt", "user-registered/body.html",
            "email-confirmation-requested/subject.txt", "email-confirmation-requested/body.txt",
            "email-confirmation-requested/body.html",
            "password-reset-requested/subject.txt", "password-reset-requested/body.txt",
            "password-reset-requested/body.html",
            "password-changed/subject.txt", "password-changed/body.txt", "password-changed/body.html",
            "email-changed/subject.txt", "email-changed/body.txt", "email-changed/body.html",
            "new-sign-in/subject.txt", "new-sign-in/body.txt", "new-sign-in/body.html",
            "role-changed/subject.txt", "role-changed/body.txt", "role-changed/body.html",
        )
    };
    (@files $locale:literal; $($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../templates/", $locale, "/", $file)))),*]
    };
}

/// Every embedded file, by locale code. A locale may leave files out; `en` has them all.
const EMBEDDED: [(&str, &[(&str, &str)]); 2] =
    [("en", embed_locale!("en")), ("fr", embed_locale!("fr"))];

/// Every template name a locale can have, relative to its folder.
fn template_names() -> impl Iterator<Item = String> {
    ["base.html", "base.txt"]
        .into_iter()
        .map(String::from)
        .chain(
            Event::TYPES
                .into_iter()
                .flat_map(|kind| PARTS.into_iter().map(move |part| format!("{kind}/{part}"))),
        )
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading template override {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("compiling the {locale} templates: {message}")]
    Compile {
        locale: &'static str,
        message: String,
    },
    #[error("template {name}: {message}")]
    Render { name: String, message: String },
}

/// Tera nests the useful part (the file, the line and the cause) in its source chain.
fn tera_message(error: &tera::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl TemplateError {
    fn render(name: &str, error: &tera::Error) -> Self {
        Self::Render {
            name: name.to_string(),
            message: tera_message(error),
        }
    }
}

/// A rendered mail, ready to be wrapped in a MIME message.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedMail {
    /// The template folder, which is also the event type.
    pub template: &'static str,
    /// The locale whose templates wrote it (after fallback).
    pub locale: &'static str,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Where a template's text came from, for operators checking their overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    Embedded,
    Override(PathBuf),
    /// The locale has no such file; the `en` one (embedded or overridden) stands in.
    Fallback(Box<TemplateSource>),
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("embedded"),
            Self::Override(path) => write!(f, "override {}", path.display()),
            Self::Fallback(en) => write!(f, "en fallback, {en}"),
        }
    }
}

/// One locale's compiled templates.
struct LocaleTemplates {
    locale: &'static MailLocale,
    tera: Tera,
    sources: BTreeMap<String, TemplateSource>,
}

/// The compiled templates of every shipped locale. Load once; rendering is read-only.
pub struct Templates {
    locales: Vec<LocaleTemplates>,
    product: String,
}

impl Templates {
    /// The templates embedded in the binary, for the default product name.
    pub fn embedded() -> Self {
        Self::load(None, "Accounts").expect("the embedded templates compile (checked by tests)")
    }

    /// The embedded templates, each replaced by `overrides/<locale>/<name>` where that file
    /// exists. `overrides/<name>` (the layout from before locales) still overrides `en`.
    pub fn load(overrides: Option<&Path>, product: &str) -> Result<Self, TemplateError> {
        Self::compile(&EMBEDDED, overrides, product)
    }

    fn compile(
        embedded: &[(&str, &[(&str, &str)])],
        overrides: Option<&Path>,
        product: &str,
    ) -> Result<Self, TemplateError> {
        let read = |relative: &str| -> Result<Option<(String, PathBuf)>, TemplateError> {
            let Some(path) = overrides.map(|dir| dir.join(relative)) else {
                return Ok(None);
            };
            if !path.is_file() {
                return Ok(None);
            }
            std::fs::read_to_string(&path)
                .map(|content| Some((content, path.clone())))
                .map_err(|source| TemplateError::Read {
                    path: path.display().to_string(),
                    source,
                })
        };

        // The English text of every template: what a locale without its own file gets.
        let mut english: HashMap<String, (String, TemplateSource)> = HashMap::new();
        let mut locales = Vec::with_capacity(LOCALES.len());
        for locale in &LOCALES {
            let embedded = embedded
                .iter()
                .find(|(code, _)| *code == locale.code)
                .map_or(&[][..], |(_, files)| *files);
            let mut files = Vec::new();
            let mut sources = BTreeMap::new();
            for name in template_names() {
                let own = read(&format!("{}/{name}", locale.code))?;
                let legacy = if locale.code == FALLBACK_LOCALE.code {
                    read(&name)?
                } else {
                    None
                };
                let (content, source) = match own.or(legacy) {
                    Some((content, path)) => (content, TemplateSource::Override(path)),
                    None => match embedded.iter().find(|(file, _)| *file == name) {
                        Some((_, content)) => ((*content).to_string(), TemplateSource::Embedded),
                        None => match english.get(&name) {
                            Some((content, source)) => (
                                content.clone(),
                                TemplateSource::Fallback(Box::new(source.clone())),
                            ),
                            None => {
                                return Err(TemplateError::Compile {
                                    locale: locale.code,
                                    message: format!("{name} is missing"),
                                });
                            }
                        },
                    },
                };
                if locale.code == FALLBACK_LOCALE.code {
                    english.insert(name.clone(), (content.clone(), source.clone()));
                }
                sources.insert(name.clone(), source);
                files.push((name, content));
            }
            let mut tera = Tera::default();
            tera.add_raw_templates(files)
                .map_err(|e| TemplateError::Compile {
                    locale: locale.code,
                    message: tera_message(&e),
                })?;
            locales.push(LocaleTemplates {
                locale,
                tera,
                sources,
            });
        }
        Ok(Self {
            locales,
            product: product.to_string(),
        })
    }

    /// Where `<locale>/<name>` came from (`name` as `new-sign-in/body.html`).
    pub fn source(&self, locale: &MailLocale, name: &str) -> Option<&TemplateSource> {
        self.locales
            .iter()
            .find(|l| l.locale.code == locale.code)
            .and_then(|l| l.sources.get(name))
    }

    /// Renders the mail for `event` in its locale, from a typed context.
    pub fn render(&self, event: &Event) -> Result<RenderedMail, TemplateError> {
        let template = event.kind();
        let wanted = MailLocale::for_payload(event.locale());
        let compiled = self
            .locales
            .iter()
            .find(|l| l.locale.code == wanted.code)
            .or_else(|| self.locales.first())
            .ok_or_else(|| TemplateError::Render {
                name: template.to_string(),
                message: "no templates are loaded".to_string(),
            })?;
        let locale = compiled.locale;
        let time = |at| locale.format_time(at);
        let mut context = match event {
            Event::UserRegistered(e) => tera_context(&ConfirmationContext {
                username: display_name(e.username.as_deref(), &e.email),
                confirmation: Link::parse(template, &e.confirmation_url)?,
                expires_at: time(e.confirmation_expires_at),
            }),
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
        }
        .map_err(|e| TemplateError::render(template, &e))?;
        context.insert("product", &self.product);
        let render = |part: &str| {
            let name = format!("{template}/{part}");
            compiled
                .tera
                .render(&name, &context)
                .map_err(|e| TemplateError::render(&format!("{}/{name}", locale.code), &e))
        };
        // A subject is one header line: newlines from a template must not start new headers.
        let subject = render("subject.txt")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(RenderedMail {
            template,
            locale: locale.code,
            subject,
            text: render("body.txt")?,
            html: render("body.html")?,
        })
    }
}

/// Files under the override directory that match no template name (a typo, a locale we don't
/// ship) and are therefore ignored. Dotfiles are left out.
pub fn unused_overrides(dir: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let known: Vec<String> = LOCALES
        .iter()
        .flat_map(|locale| template_names().map(move |name| format!("{}/{name}", locale.code)))
        .chain(template_names())
        .collect();
    let mut unused = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let read_error = |source| TemplateError::Read {
            path: folder.display().to_string(),
            source,
        };
        for entry in std::fs::read_dir(&folder).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .map(|r| {
                    r.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default();
            if !known.contains(&relative) {
                unused.push(path);
            }
        }
    }
    unused.sort();
    Ok(unused)
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

/// Context of `user-registered` and `email-confirmation-requested`.
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
        "user-registered" => Event::UserRegistered(UserRegistered {
            user_id,
            email,
            username,
            confirmation_url: link("/api/users/confirm"),
            confirmation_expires_at: now + chrono::Duration::hours(1),
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
        _ => return None,
    };
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
    fn locales_match_on_the_language_of_a_tag() {
        for tag in ["fr", "fr-CA", "fr_FR", "FR", " fr-ch "] {
            assert_eq!(
                MailLocale::matching(tag).map(MailLocale::code),
                Some("fr"),
                "{tag}"
            );
        }
        for tag in ["en", "en-GB", "en_US"] {
            assert_eq!(
                MailLocale::matching(tag).map(MailLocale::code),
                Some("en"),
                "{tag}"
            );
        }
        for tag in ["de", "", "-", "french", "f"] {
            assert!(MailLocale::matching(tag).is_none(), "{tag}");
            assert_eq!(MailLocale::for_payload(tag).code(), "en", "{tag}");
        }
    }

    #[test]
    fn dates_read_as_each_language_writes_them() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 14, 5, 0).unwrap();
        assert_eq!(sample_time(), at);
        let [en, fr] = &LOCALES;
        assert_eq!(en.format_time(at), "November 23, 2026 at 14:05 UTC");
        assert_eq!(fr.format_time(at), "23 novembre 2026 à 14:05 UTC");
        let first = Utc.with_ymd_and_hms(2027, 2, 1, 9, 0, 0).unwrap();
        assert_eq!(en.format_time(first), "February 1, 2027 at 09:00 UTC");
        assert_eq!(fr.format_time(first), "1er février 2027 à 09:00 UTC");
    }

    #[test]
    fn the_new_address_is_masked() {
        assert_eq!(mask_email("new.address@example.org"), "n***@example.org");
        assert_eq!(mask_email("é@exemple.fr"), "é***@exemple.fr");
        assert_eq!(mask_email("not-an-address"), "***");
    }

    #[test]
    fn client_text_becomes_one_short_line() {
        assert_eq!(one_line("Firefox\r\non\tLinux\u{0}"), "Firefox on Linux");
        let long = one_line(&"a".repeat(500));
        assert_eq!(long.chars().count(), ONE_LINE_MAX_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn every_shipped_locale_embeds_every_template() {
        for (code, files) in EMBEDDED {
            assert!(LOCALES.iter().any(|l| l.code == code), "{code}");
            for name in template_names() {
                assert!(files.iter().any(|(f, _)| *f == name), "{code}/{name}");
            }
        }
        assert_eq!(EMBEDDED.len(), LOCALES.len());
    }

    #[test]
    fn a_broken_override_fails_loading_with_its_name() {
        let dir = std::env::temp_dir().join(format!("mailer-tpl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("fr/password-changed")).unwrap();
        std::fs::write(dir.join("fr/password-changed/body.txt"), "{% if %}").unwrap();
        let err = Templates::load(Some(&dir), "Accounts")
            .err()
            .expect("should fail");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = err.to_string();
        assert!(err.contains("fr templates"), "{err}");
        assert!(err.contains("password-changed/body.txt"), "{err}");
    }

    #[test]
    fn sources_say_which_files_an_override_replaced() {
        let dir = std::env::temp_dir().join(format!("mailer-tpl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("en/role-changed")).unwrap();
        std::fs::write(dir.join("en/role-changed/subject.txt"), "Roles").unwrap();
        let templates = Templates::load(Some(&dir), "Accounts").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let [en, fr] = &LOCALES;
        assert_eq!(
            templates.source(en, "role-changed/subject.txt"),
            Some(&TemplateSource::Override(
                dir.join("en/role-changed/subject.txt")
            ))
        );
        assert_eq!(
            templates.source(fr, "role-changed/subject.txt"),
            Some(&TemplateSource::Embedded)
        );
    }

    #[test]
    fn a_file_missing_from_a_locale_falls_back_to_english() {
        let [(_, en), (_, fr)] = EMBEDDED;
        let partial_fr: Vec<(&str, &str)> = fr
            .iter()
            .copied()
            .filter(|(name, _)| *name != "password-changed/subject.txt")
            .collect();
        let embedded: [(&str, &[(&str, &str)]); 2] = [("en", en), ("fr", &partial_fr)];
        let templates = Templates::compile(&embedded, None, "Accounts").unwrap();
        let [_, fr_locale] = &LOCALES;
        assert_eq!(
            templates.source(fr_locale, "password-changed/subject.txt"),
            Some(&TemplateSource::Fallback(Box::new(
                TemplateSource::Embedded
            )))
        );
        let mail = templates
            .render(&sample_event("password-changed", "fr").unwrap())
            .unwrap();
        assert_eq!(mail.subject, "Your password was changed");
        assert!(mail.text.contains("Le mot de passe"), "{}", mail.text);
    }

    #[test]
    fn files_that_match_no_template_are_reported() {
        let dir = std::env::temp_dir().join(format!("mailer-tpl-{}", uuid::Uuid::new_v4()));
        for file in [
            "fr/new-sign-in/subject.txt",
            "password-changed/body.txt",
            "fr/new-signin/subject.txt",
            "de/base.txt",
            "fr/.gitkeep",
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "x").unwrap();
        }
        let unused = unused_overrides(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            unused.unwrap(),
            vec![
                dir.join("de/base.txt"),
                dir.join("fr/new-signin/subject.txt")
            ]
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
