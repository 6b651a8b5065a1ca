//! Settings from the environment. Unset means "use the default"; a value that is set must be valid,
//! and the error for one that is not names the variable and what it should look like.

use std::str::FromStr;

use anyhow::anyhow;
use url::Url;

/// Loads `.env` into the process environment when the file exists.
pub fn load_dotenv() -> anyhow::Result<()> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(anyhow!("could not read .env: {e}")),
    }
}

/// A source of variables: the process environment, or a map in tests.
pub struct Env<F> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(get: F) -> Self {
        Self { get }
    }

    /// The value as set, or `default` when unset.
    pub fn var(&self, name: &str, default: &str) -> String {
        (self.get)(name).unwrap_or_else(|| default.to_string())
    }

    /// The value, or `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.get)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn parse<T: FromStr>(&self, name: &str, default: &str, hint: &str) -> anyhow::Result<T> {
        parse_value(name, &self.var(name, default), hint)
    }

    /// An absolute URL with one of `schemes`.
    pub fn url(&self, name: &str, default: &str, schemes: &[&str]) -> anyhow::Result<Url> {
        let hint = format!("a URL starting with {}://", schemes.join("://, "));
        let url: Url = self.parse(name, default, &hint)?;
        if !schemes.contains(&url.scheme()) {
            return Err(anyhow!(
                "{name} has scheme {:?}; expected {hint}",
                url.scheme()
            ));
        }
        Ok(url)
    }

    /// An optional absolute URL (any scheme `Url` accepts).
    pub fn optional_url(&self, name: &str) -> anyhow::Result<Option<Url>> {
        self.optional(name)
            .map(|v| parse_value(name, &v, "an absolute http(s) URL"))
            .transpose()
    }

    /// A whole number above zero.
    pub fn positive(&self, name: &str, default: &str) -> anyhow::Result<u64> {
        match self.parse(name, default, "a positive integer")? {
            0 => Err(anyhow!(
                "{name}=0 is not valid; expected a positive integer"
            )),
            n => Ok(n),
        }
    }

    /// true/false, yes/no, on/off, 1/0; blank is false.
    pub fn flag(&self, name: &str, default: bool) -> anyhow::Result<bool> {
        match (self.get)(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                _ => Err(anyhow!("{name}={v:?} is not valid; expected true or false")),
            },
        }
    }
}

fn parse_value<T: FromStr>(name: &str, value: &str, hint: &str) -> anyhow::Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| anyhow!("{name}={value:?} is not valid; expected {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::new(move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn unset_takes_the_default_and_set_must_parse() {
        let e = env(&[("N", "7"), ("BLANK", ""), ("Z", "0"), ("U", "ftp://x")]);
        assert_eq!(e.positive("N", "1").unwrap(), 7);
        assert_eq!(e.positive("MISSING", "3").unwrap(), 3);
        for (name, err) in [
            ("BLANK", e.positive("BLANK", "3").unwrap_err()),
            ("Z", e.positive("Z", "3").unwrap_err()),
            ("U", e.url("U", "http://a", &["http"]).unwrap_err()),
            ("BLANK", e.url("BLANK", "http://a", &["http"]).unwrap_err()),
        ] {
            assert!(err.to_string().starts_with(name), "{err}");
        }
        assert_eq!(e.optional("BLANK"), None);
        assert!(!e.flag("BLANK", true).unwrap());
        assert!(e.flag("MISSING", true).unwrap());
    }
}
