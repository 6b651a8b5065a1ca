//! Mail templates: one folder per event type (`subject.txt`, `body.html`, `body.txt`) extending
//! `base.html` / `base.txt`. They are embedded in the binary; a file of the same relative name in
//! the override directory replaces the embedded one. Names ending in `.html` are autoescaped.

use std::path::Path;

use chrono::{DateTime, Utc};
use events::Event;
use serde::Serialize;
use tera::Tera;

/// Every template file, by the name templates use to refer to each other.
const EMBEDDED: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("base.txt", include_str!("../templates/base.txt")),
    (
        "user-registered/subject.txt",
        include_str!("../templates/user-registered/subject.txt"),
    ),
    (
        "user-registered/body.html",
        include_str!("../templates/user-registered/body.html"),
    ),
    (
        "user-registered/body.txt",
        include_str!("../templates/user-registered/body.txt"),
    ),
    (
        "email-confirmation-requested/subject.txt",
        include_str!("../templates/email-confirmation-requested/subject.txt"),
    ),
    (
        "email-confirmation-requested/body.html",
        include_str!("../templates/email-confirmation-requested/body.html"),
    ),
    (
        "email-confirmation-requested/body.txt",
        include_str!("../templates/email-confirmation-requested/body.txt"),
    ),
    (
        "password-reset-requested/subject.txt",
        include_str!("../templates/password-reset-requested/subject.txt"),
    ),
    (
        "password-reset-requested/body.html",
        include_str!("../templates/password-reset-requested/body.html"),
    ),
    (
        "password-reset-requested/body.txt",
        include_str!("../templates/password-reset-requested/body.txt"),
    ),
    (
        "password-changed/subject.txt",
        include_str!("../templates/password-changed/subject.txt"),
    ),
    (
        "password-changed/body.html",
        include_str!("../templates/password-changed/body.html"),
    ),
    (
        "password-changed/body.txt",
        include_str!("../templates/password-changed/body.txt"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading template override {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Render { name: String, message: String },
}

impl TemplateError {
    fn render(name: &str, error: &tera::Error) -> Self {
        // Tera nests the useful part (the line and the cause) in its source chain.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Render {
            name: name.to_string(),
            message,
        }
    }
}

/// A rendered mail, ready to be wrapped in a MIME message.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedMail {
    /// The template folder, which is also the event type.
    pub template: &'static str,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The compiled templates. Load once; rendering is read-only.
pub struct Templates {
    tera: Tera,
}

impl Templates {
    /// The templates embedded in the binary.
    pub fn embedded() -> Self {
        Self::load(None).expect("the embedded templates compile (checked by tests)")
    }

    /// The embedded templates, each replaced by `overrides/<name>` where that file exists.
    pub fn load(overrides: Option<&Path>) -> Result<Self, TemplateError> {
        let mut files = Vec::with_capacity(EMBEDDED.len());
        for (name, embedded) in EMBEDDED {
            let content = match overrides.map(|dir| dir.join(name)) {
                Some(path) if path.is_file() => {
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                _ => (*embedded).to_string(),
            };
            files.push((*name, content));
        }
        let mut tera = Tera::default();
        tera.add_raw_templates(files)
            .map_err(|e| TemplateError::render("(compiling)", &e))?;
        Ok(Self { tera })
    }

    /// Renders the mail for `event` from its typed context.
    pub fn render(&self, event: &Event) -> Result<RenderedMail, TemplateError> {
        let template = event.kind();
        let context = match event {
            Event::UserRegistered(e) => tera_context(&ConfirmationContext {
                username: display_name(e.username.as_deref(), &e.email),
                confirmation: Link::parse(template, &e.confirmation_url)?,
                expires_at: format_time(e.confirmation_expires_at),
            }),
            Event::EmailConfirmationRequested(e) => tera_context(&ConfirmationContext {
                username: display_name(e.username.as_deref(), &e.email),
                confirmation: Link::parse(template, &e.confirmation_url)?,
                expires_at: format_time(e.confirmation_expires_at),
            }),
            Event::PasswordResetRequested(e) => tera_context(&PasswordResetContext {
                username: display_name(e.username.as_deref(), &e.email),
                reset: Link::parse(template, &e.reset_url)?,
                expires_at: format_time(e.reset_expires_at),
            }),
            Event::PasswordChanged(e) => tera_context(&PasswordChangedContext {
                username: display_name(e.username.as_deref(), &e.email),
                changed_at: format_time(e.changed_at),
            }),
        }
        .map_err(|e| TemplateError::render(template, &e))?;
        let render = |part: &str| {
            let name = format!("{template}/{part}");
            self.tera
                .render(&name, &context)
                .map_err(|e| TemplateError::render(&name, &e))
        };
        // A subject is one header line: newlines from a template must not start new headers.
        let subject = render("subject.txt")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(RenderedMail {
            template,
            subject,
            text: render("body.txt")?,
            html: render("body.html")?,
        })
    }
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

fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
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
    fn a_broken_override_fails_loading_with_its_name() {
        let dir = std::env::temp_dir().join(format!("mailer-tpl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("password-changed")).unwrap();
        std::fs::write(dir.join("password-changed/body.txt"), "{% if %}").unwrap();
        let err = Templates::load(Some(&dir)).err().expect("should fail");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.to_string().contains("password-changed/body.txt"),
            "{err}"
        );
    }
}
