use std::{collections::HashSet, io::Read, sync::LazyLock};

use secrecy::{ExposeSecret, SecretString};

pub const TOO_SHORT: &str = "This password is too short. It must contain at least 8 characters.";
pub const NOT_ALPHANUMERIC: &str = "password must be alphanumeric";
pub const TOO_COMMON: &str = "This password is too common.";
pub const TOO_LONG: &str =
    "This password is too long. It must contain at most 71 bytes (bcrypt reads no more).";
pub const MISMATCH: &str = "passwords do not match";

/// bcrypt reads 72 bytes and the non-truncating functions reject 72; 71 is the usable maximum.
pub const MAX_BYTES: usize = 71;
const MIN_CHARS: usize = 8;
/// Django's UserAttributeSimilarityValidator default.
const MAX_SIMILARITY: f64 = 0.7;

static COMMON_PASSWORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let gz: &[u8] = include_bytes!("../../data/common-passwords.txt.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .expect("the embedded password list is valid gzip");
    text.lines().map(|l| l.trim().to_lowercase()).collect()
});

/// A password that passed every validator; only this type can be hashed into an account.
#[derive(Debug)]
pub struct NewPassword(SecretString);

/// What is wrong with a candidate password, by field (`password` or `confirm_password`).
#[derive(Debug, Default, PartialEq)]
pub struct PasswordProblems {
    pub password: Vec<String>,
    pub confirm_password: Vec<String>,
}

impl NewPassword {
    /// Runs Django's validators (length, common, similarity) plus the seed's alphanumeric rule and
    /// the bcrypt byte limit. `attributes` are the user's email and username, for similarity.
    pub fn parse(
        password: &str,
        confirm: Option<&str>,
        attributes: &[(&str, &str)],
    ) -> Result<Self, PasswordProblems> {
        let mut problems = PasswordProblems::default();
        if password.len() > MAX_BYTES {
            problems.password.push(TOO_LONG.into());
        }
        if password.chars().count() < MIN_CHARS {
            problems.password.push(TOO_SHORT.into());
        }
        if password.chars().all(char::is_alphabetic) || password.chars().all(char::is_numeric) {
            problems.password.push(NOT_ALPHANUMERIC.into());
        }
        if COMMON_PASSWORDS.contains(&password.trim().to_lowercase()) {
            problems.password.push(TOO_COMMON.into());
        }
        if let Some(name) = too_similar_to(password, attributes) {
            problems
                .password
                .push(format!("The password is too similar to the {name}."));
        }
        if confirm.is_some_and(|c| c != password) {
            problems.confirm_password.push(MISMATCH.into());
        }
        if problems == PasswordProblems::default() {
            Ok(Self(SecretString::from(password.to_string())))
        } else {
            Err(problems)
        }
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Django's UserAttributeSimilarityValidator: the password is too similar to an attribute, or to
/// one of its word-parts, when difflib's `quick_ratio` reaches 0.7.
fn too_similar_to<'a>(password: &str, attributes: &[(&'a str, &str)]) -> Option<&'a str> {
    let password = password.to_lowercase();
    for (name, value) in attributes {
        let value = value.to_lowercase();
        if value.is_empty() {
            continue;
        }
        let parts = value
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|p| !p.is_empty())
            .chain(std::iter::once(value.as_str()));
        for part in parts {
            if exceeds_length_ratio(&password, part) {
                continue;
            }
            if quick_ratio(&password, part) >= MAX_SIMILARITY {
                return Some(name);
            }
        }
    }
    None
}

/// Django skips parts so short against the password that they cannot be "too similar".
fn exceeds_length_ratio(password: &str, part: &str) -> bool {
    let password_len = password.chars().count() as f64;
    let part_len = part.chars().count() as f64;
    password_len >= 10.0 * part_len && part_len < MAX_SIMILARITY / 2.0 * password_len
}

/// difflib.SequenceMatcher.quick_ratio: 2 × (multiset intersection of characters) / total length.
fn quick_ratio(a: &str, b: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in b.chars() {
        *counts.entry(c).or_insert(0i32) += 1;
    }
    let mut matches = 0;
    for c in a.chars() {
        if let Some(n) = counts.get_mut(&c)
            && *n > 0
        {
            *n -= 1;
            matches += 1;
        }
    }
    let total = a.chars().count() + b.chars().count();
    if total == 0 {
        return 1.0;
    }
    2.0 * f64::from(matches) / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(password: &str, confirm: Option<&str>) -> PasswordProblems {
        NewPassword::parse(
            password,
            confirm,
            &[("email", "jane.doe@example.com"), ("username", "janedoe")],
        )
        .unwrap_err()
    }

    #[test]
    fn the_seed_passwords_pass() {
        for good in ["tutad1234", "NoNumbers5", "ecoms_1029"] {
            NewPassword::parse(good, Some(good), &[("email", "tuttest1@ecoms.com")]).unwrap();
        }
    }

    #[test]
    fn each_rule_has_its_message() {
        assert!(
            problems("short1", None)
                .password
                .contains(&TOO_SHORT.to_string())
        );
        assert!(
            problems("NoNumbers", None)
                .password
                .contains(&NOT_ALPHANUMERIC.to_string())
        );
        assert!(
            problems("12345678912", None)
                .password
                .contains(&NOT_ALPHANUMERIC.to_string())
        );
        assert!(
            problems("Password123", None)
                .password
                .contains(&TOO_COMMON.to_string())
        );
        assert_eq!(
            problems("NoNumbers5", Some("NoNumbers3")).confirm_password,
            [MISMATCH]
        );
        assert!(
            problems("janedoe.example", None)
                .password
                .contains(&"The password is too similar to the email.".to_string())
        );
        assert!(
            problems("janedoe12", None)
                .password
                .iter()
                .any(|m| m.starts_with("The password is too similar"))
        );
    }

    #[test]
    fn bcrypt_byte_limit() {
        let ok = format!("a1{}", "x".repeat(MAX_BYTES - 2));
        assert!(NewPassword::parse(&ok, None, &[]).is_ok());
        let too_long = format!("{ok}y");
        assert_eq!(problems(&too_long, None).password, [TOO_LONG]);
        // Multi-byte characters count by bytes: 36 two-byte characters are 72 bytes.
        let wide = format!("1{}", "é".repeat(36));
        assert!(
            problems(&wide, None)
                .password
                .contains(&TOO_LONG.to_string())
        );
    }

    #[test]
    fn quick_ratio_matches_difflib() {
        // difflib.SequenceMatcher(a="abcd", b="bcde").quick_ratio() == 0.75
        assert!((quick_ratio("abcd", "bcde") - 0.75).abs() < 1e-9);
        assert!((quick_ratio("abc", "xyz")).abs() < 1e-9);
    }
}
