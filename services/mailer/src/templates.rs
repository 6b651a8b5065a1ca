//! Mail templates, per locale: `templates/<locale>/<event-type>/{subject.txt,body.html,body.txt}`,
//! each body extending its locale's `base.html` / `base.txt`. They are embedded in the binary; a
//! file of the same relative name in the override directory (`<dir>/fr/password-changed/body.txt`)
//! replaces the embedded one. A locale that lacks a file uses the `en` one, and a payload whose
//! locale we don't ship gets `en`. Names ending in `.html` are autoescaped.

mod context;
mod locale;
mod sample;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use events::Event;
use tera::Tera;

pub use locale::{FALLBACK_LOCALE, LOCALES, MailLocale};
pub use sample::sample_event;

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
            "mfa-enabled/subject.txt", "mfa-enabled/body.txt", "mfa-enabled/body.html",
            "mfa-disabled/subject.txt", "mfa-disabled/body.txt", "mfa-disabled/body.html",
            "recovery-code-used/subject.txt", "recovery-code-used/body.txt",
            "recovery-code-used/body.html",
            "mfa-failures/subject.txt", "mfa-failures/body.txt", "mfa-failures/body.html",
            "recovery-codes-replaced/subject.txt", "recovery-codes-replaced/body.txt",
            "recovery-codes-replaced/body.html",
            "identity-linked/subject.txt", "identity-linked/body.txt", "identity-linked/body.html",
            "identity-unlinked/subject.txt", "identity-unlinked/body.txt",
            "identity-unlinked/body.html",
            "passkey-added/subject.txt", "passkey-added/body.txt", "passkey-added/body.html",
            "passkey-removed/subject.txt", "passkey-removed/body.txt", "passkey-removed/body.html",
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

impl TemplateError {
    fn render(name: &str, error: &tera::Error) -> Self {
        Self::Render {
            name: name.to_string(),
            // Tera nests the useful part (the file, the line and the cause) in its source chain.
            message: telemetry::error_chain(error),
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
                .find(|(code, _)| *code == locale.code())
                .map_or(&[][..], |(_, files)| *files);
            let mut files = Vec::new();
            let mut sources = BTreeMap::new();
            for name in template_names() {
                let own = read(&format!("{}/{name}", locale.code()))?;
                let legacy = if locale.code() == FALLBACK_LOCALE.code() {
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
                                    locale: locale.code(),
                                    message: format!("{name} is missing"),
                                });
                            }
                        },
                    },
                };
                if locale.code() == FALLBACK_LOCALE.code() {
                    english.insert(name.clone(), (content.clone(), source.clone()));
                }
                sources.insert(name.clone(), source);
                files.push((name, content));
            }
            let mut tera = Tera::default();
            tera.add_raw_templates(files)
                .map_err(|e| TemplateError::Compile {
                    locale: locale.code(),
                    message: telemetry::error_chain(&e),
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
            .find(|l| l.locale.code() == locale.code())
            .and_then(|l| l.sources.get(name))
    }

    /// Renders the mail for `event` in its locale, from a typed context.
    pub fn render(&self, event: &Event) -> Result<RenderedMail, TemplateError> {
        let template = event.kind();
        let wanted = MailLocale::for_payload(event.locale());
        let compiled = self
            .locales
            .iter()
            .find(|l| l.locale.code() == wanted.code())
            .or_else(|| self.locales.first())
            .ok_or_else(|| TemplateError::Render {
                name: template.to_string(),
                message: "no templates are loaded".to_string(),
            })?;
        let locale = compiled.locale;
        let mut context = context::for_event(event, locale)?;
        context.insert("product", &self.product);
        let render = |part: &str| {
            let name = format!("{template}/{part}");
            compiled
                .tera
                .render(&name, &context)
                .map_err(|e| TemplateError::render(&format!("{}/{name}", locale.code()), &e))
        };
        // A subject is one header line: newlines from a template must not start new headers.
        let subject = render("subject.txt")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(RenderedMail {
            template,
            locale: locale.code(),
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
        .flat_map(|locale| template_names().map(move |name| format!("{}/{name}", locale.code())))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_locale_embeds_every_template() {
        for (code, files) in EMBEDDED {
            assert!(LOCALES.iter().any(|l| l.code() == code), "{code}");
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
}
