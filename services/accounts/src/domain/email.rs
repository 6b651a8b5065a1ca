use std::fmt;

/// A syntactically valid, normalized (trimmed, lower-cased) email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

pub const INVALID_EMAIL: &str = "Enter a valid email address.";

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let raw = raw.trim();
        // 254 is the longest address SMTP can carry (RFC 5321 path limit minus the brackets); the
        // raw form may be longer only by its Unicode domain, which must fit once in ASCII.
        if raw.len() > 4 * 254 || raw.chars().any(char::is_control) {
            return Err(INVALID_EMAIL);
        }
        let (local, domain) = raw.rsplit_once('@').ok_or(INVALID_EMAIL)?;
        // One spelling per domain: IDNA's ASCII form (UTS 46, STD3 rules, DNS lengths), lower-case,
        // so `bücher.de` and `xn--bcher-kva.de` are one address.
        let domain = idna::domain_to_ascii_strict(domain).map_err(|_| INVALID_EMAIL)?;
        let normalized = format!("{}@{domain}", local.to_lowercase());
        if normalized.len() > 254 || !email_address::EmailAddress::is_valid(&normalized) {
            return Err(INVALID_EMAIL);
        }
        // Accept only addresses a mail server can route: a dotted domain, no IP literals or quoting.
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if local.is_empty() || local.starts_with('"') || !domain_ok {
            return Err(INVALID_EMAIL);
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(
            EmailAddress::parse("  Ada.Lovelace@Example.COM ")
                .unwrap()
                .as_str(),
            "ada.lovelace@example.com"
        );
        assert!(EmailAddress::parse("a+tag@sub.example.co.uk").is_ok());
    }

    #[test]
    fn domains_are_stored_in_idna_ascii_form() {
        let unicode = EmailAddress::parse("U@Bücher.DE").unwrap();
        let ascii = EmailAddress::parse("u@XN--BCHER-KVA.de").unwrap();
        assert_eq!(unicode.as_str(), "u@xn--bcher-kva.de");
        assert_eq!(unicode, ascii);
        // Full-width dots and letters fold too (UTS 46 mapping).
        assert_eq!(
            EmailAddress::parse("u@ｅｘａｍｐｌｅ。com")
                .unwrap()
                .as_str(),
            "u@example.com"
        );
        for bad in [
            "u@xn--zz.de",
            "u@exa_mple.com",
            "u@-example.com",
            "u@bü cher.de",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rejects_what_cannot_be_delivered() {
        for raw in [
            "",
            "not-an-email",
            "a@b",
            "@example.com",
            "a@.example.com",
            "a@example.com.",
            "a b@example.com",
            "a@exa mple.com",
            "a@exam\u{0}ple.com",
            "\"quoted\"@example.com",
            "a@[127.0.0.1]",
            &format!("{}@example.com", "a".repeat(250)),
            "<script>@example.com",
        ] {
            assert!(EmailAddress::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
