//! The languages mail is written in, how a payload's locale tag picks one, and how each of them
//! writes a date.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Utc};

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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
        let [en, fr] = &LOCALES;
        assert_eq!(en.format_time(at), "November 23, 2026 at 14:05 UTC");
        assert_eq!(fr.format_time(at), "23 novembre 2026 à 14:05 UTC");
        let first = Utc.with_ymd_and_hms(2027, 2, 1, 9, 0, 0).unwrap();
        assert_eq!(en.format_time(first), "February 1, 2027 at 09:00 UTC");
        assert_eq!(fr.format_time(first), "1er février 2027 à 09:00 UTC");
    }
}
