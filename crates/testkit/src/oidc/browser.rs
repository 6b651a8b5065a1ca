//! Plays the browser at oidc-provider's development interactions: it follows redirects while they
//! stay on the provider's origin, fills in the login form, answers the consent page, and stops at
//! the first redirect that leaves the provider (the relying party's callback).

use std::sync::Arc;

use anyhow::{Context, bail};
use reqwest::{StatusCode, cookie::Jar, header::LOCATION, redirect::Policy};
use url::Url;

/// Pages and redirects one visit may go through before the driver gives up (a loop).
const MAX_STEPS: usize = 20;

/// What the user answers at the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentAnswer {
    /// "Continue": the provider redirects with a code.
    Allow,
    /// "[ Cancel ]": the provider redirects with `error=access_denied`.
    Deny,
}

/// How a visit to the provider ended.
#[derive(Debug, Clone)]
pub struct ProviderVisit {
    /// The first redirect that left the provider: the relying party's callback with `code`,
    /// `state` and `iss`, or `error`.
    pub callback: Url,
    /// Whether the provider asked for the login (no session yet, `prompt=login`, `max_age` passed).
    pub login_form_shown: bool,
    /// Whether the provider asked for consent.
    pub consent_shown: bool,
}

/// A browser for the provider's pages with its own cookie jar, so a second visit finds the
/// provider's session of the first (single sign-on, unless the request asks to log in again).
pub struct ProviderBrowser {
    http: reqwest::Client,
}

impl ProviderBrowser {
    pub fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .cookie_provider(Arc::new(Jar::default()))
            .redirect(Policy::none())
            .build()
            .context("building the browser's HTTP client")?;
        Ok(Self { http })
    }

    /// Opens `authorize_url`, logs in as `login` when the provider asks (any password), answers the
    /// consent with `answer` when it asks, and returns where the provider sent the browser.
    pub async fn visit(
        &self,
        authorize_url: &str,
        login: &str,
        answer: ConsentAnswer,
    ) -> anyhow::Result<ProviderVisit> {
        let start = Url::parse(authorize_url).context("parsing the authorize URL")?;
        let provider = start.origin();
        let mut visit = Visit {
            login_form_shown: false,
            consent_shown: false,
        };
        let mut next = Step::Get(start);
        for _ in 0..MAX_STEPS {
            let response = match next {
                Step::Get(url) => self.http.get(url).send().await?,
                Step::Post(url, form) => self.http.post(url).form(&form).send().await?,
            };
            let here = response.url().clone();
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .with_context(|| format!("a {status} without Location from {here}"))?;
                let target = here.join(location)?;
                if target.origin() != provider {
                    return Ok(visit.ended_at(target));
                }
                next = Step::Get(target);
                continue;
            }
            let page = response.text().await?;
            if status != StatusCode::OK {
                bail!(
                    "the provider answered {status} at {here}: {}",
                    visible_text(&page)
                );
            }
            next = match attribute_after(&page, "name=\"prompt\"", "value") {
                Some(prompt) if prompt == "login" => {
                    visit.login_form_shown = true;
                    let form = vec![
                        ("prompt", "login".to_string()),
                        ("login", login.to_string()),
                        ("password", "any password".to_string()),
                    ];
                    Step::Post(form_action(&page, &here)?, form)
                }
                Some(prompt) if prompt == "consent" => {
                    visit.consent_shown = true;
                    match answer {
                        ConsentAnswer::Allow => Step::Post(
                            form_action(&page, &here)?,
                            vec![("prompt", "consent".to_string())],
                        ),
                        ConsentAnswer::Deny => Step::Get(abort_link(&page, &here)?),
                    }
                }
                _ => bail!(
                    "no login or consent form at {here}: {}",
                    visible_text(&page)
                ),
            };
        }
        bail!("the provider kept the browser for more than {MAX_STEPS} pages: a redirect loop?")
    }
}

/// Signs in as `login` at the provider's dev login form and consents, in a fresh browser; returns
/// the relying party's callback URL (with `code`, `state` and `iss`).
pub async fn sign_in_at_provider(authorize_url: &str, login: &str) -> anyhow::Result<Url> {
    let visit = ProviderBrowser::new()?
        .visit(authorize_url, login, ConsentAnswer::Allow)
        .await?;
    Ok(visit.callback)
}

/// Signs in as `login` and cancels at the consent page, in a fresh browser; returns the relying
/// party's callback URL (with `error=access_denied`, `state` and `iss`).
pub async fn deny_at_provider(authorize_url: &str, login: &str) -> anyhow::Result<Url> {
    let visit = ProviderBrowser::new()?
        .visit(authorize_url, login, ConsentAnswer::Deny)
        .await?;
    Ok(visit.callback)
}

enum Step {
    Get(Url),
    Post(Url, Vec<(&'static str, String)>),
}

struct Visit {
    login_form_shown: bool,
    consent_shown: bool,
}

impl Visit {
    fn ended_at(self, callback: Url) -> ProviderVisit {
        ProviderVisit {
            callback,
            login_form_shown: self.login_form_shown,
            consent_shown: self.consent_shown,
        }
    }
}

fn form_action(page: &str, here: &Url) -> anyhow::Result<Url> {
    let action = attribute_after(page, "<form", "action")
        .with_context(|| format!("a form without action at {here}"))?;
    Ok(here.join(&action)?)
}

/// The "[ Cancel ]" link of oidc-provider's dev pages (`/interaction/<uid>/abort`).
fn abort_link(page: &str, here: &Url) -> anyhow::Result<Url> {
    let href = page
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|href| href.ends_with("/abort"))
        .with_context(|| format!("no cancel link at {here}"))?;
    Ok(here.join(&unescape(href))?)
}

/// The value of `attribute` in the tag where `marker` first occurs (at or after it), unescaped.
fn attribute_after(page: &str, marker: &str, attribute: &str) -> Option<String> {
    let at = page.find(marker)?;
    let tag_start = page[..=at].rfind('<')?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[tag_start..tag_end];
    let needle = format!("{attribute}=\"");
    let value = tag.split(&needle).nth(1)?.split('"').next()?;
    Some(unescape(value))
}

fn unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A page's text without its tags and style, shortened, for error messages (oidc-provider's error
/// page shows `error` and `error_description`).
fn visible_text(page: &str) -> String {
    let body = page.split("</style>").last().unwrap_or(page);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(600).collect()
}
