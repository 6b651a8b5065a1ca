//! The language of a user's mail: a BCP 47 tag given at registration or in a profile update, else
//! the best match of `Accept-Language` among the locales the mailer ships, else English.

/// Locales the mailer has templates for; the first is the fallback.
pub const SHIPPED: [&str; 2] = ["en", "fr"];

pub const INVALID_LOCALE: &str = "Enter a valid language tag, such as en or fr-CA.";

/// A syntactically valid BCP 47 tag (language, then up to a few subtags), as given: no
/// surrounding whitespace, as the OpenAPI document's pattern says.
pub fn parse(raw: &str) -> Result<String, &'static str> {
    let tag = raw;
    let mut parts = tag.split(['-', '_']);
    let language_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if tag.len() > 35 || !language_ok || !rest_ok {
        return Err(INVALID_LOCALE);
    }
    Ok(tag.replace('_', "-"))
}

/// The shipped locale that best matches an `Accept-Language` header (RFC 9110 §12.5.4): the
/// highest-weighted range whose primary language we ship; `en` when none does.
pub fn from_accept_language(header: Option<&str>) -> String {
    let mut best: Option<(f32, usize, &str)> = None;
    for (position, range) in header.unwrap_or_default().split(',').enumerate() {
        let mut fields = range.split(';');
        let tag = fields.next().unwrap_or_default().trim();
        let weight = fields
            .find_map(|f| f.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        let Some(shipped) = SHIPPED.iter().find(|s| s.eq_ignore_ascii_case(primary)) else {
            continue;
        };
        // Higher weight wins; at equal weight, the earlier range.
        let better = best.is_none_or(|(w, p, _)| weight > w || (weight == w && position < p));
        if weight > 0.0 && better {
            best = Some((weight, position, shipped));
        }
    }
    best.map_or(SHIPPED[0], |(_, _, s)| s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_shipped_locale() {
        assert_eq!(from_accept_language(Some("fr-CA,fr;q=0.9,en;q=0.8")), "fr");
        assert_eq!(from_accept_language(Some("de-DE,de;q=0.9,en;q=0.5")), "en");
        assert_eq!(from_accept_language(Some("de, fr;q=0.7, en;q=0.6")), "fr");
        assert_eq!(from_accept_language(Some("fr;q=0, en")), "en");
        assert_eq!(from_accept_language(Some("*")), "en");
        assert_eq!(from_accept_language(None), "en");
        assert_eq!(from_accept_language(Some(";;;,,q=abc")), "en");
    }

    #[test]
    fn tags_are_checked() {
        assert_eq!(parse("fr-CA").unwrap(), "fr-CA");
        assert_eq!(parse("pt_BR").unwrap(), "pt-BR");
        for bad in [
            "",
            "f",
            "french",
            "fr-",
            "fr--CA",
            "<script>",
            "fr-CA-abcdefghi",
            " fr",
            "fr\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
