//! Free-text profile fields and usernames: bounded, printable, and never markup-significant for
//! the mail and pages that show them (those escape anyway; these limits keep storage sane).

use unicode_normalization::UnicodeNormalization;

use super::{FieldErrors, push_error};

pub const USERNAME_INVALID: &str = "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.";

/// The limits of each free-text field, in characters.
pub fn max_len(field: &str) -> usize {
    match field {
        "username" | "first_name" | "last_name" => 150,
        "phone_number" => 32,
        "address" => 500,
        "bio" => 2000,
        "image" => 2048,
        _ => 255,
    }
}

/// Trims `value` and checks its length and characters; records a message under `field` when wrong.
pub fn text(errors: &mut FieldErrors, field: &str, value: &str) -> String {
    let max = max_len(field);
    // Counted before trimming, as the OpenAPI document's maxLength counts.
    if value.chars().count() > max {
        push_error(
            errors,
            field,
            format!("Ensure this field has no more than {max} characters."),
        );
    }
    // Newlines are fine in an address or bio; other control characters are not.
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        push_error(errors, field, "This field contains control characters.");
    }
    value.trim().to_string()
}

/// Django's username rule: letters, digits and @ . + - _ only, after NFKC normalization (so
/// compatibility forms such as full-width letters are stored as their plain equivalents).
pub fn username(errors: &mut FieldErrors, value: &str) -> Option<String> {
    // Checked as given too, so a character that only normalizes into the allowed set (`℡` into
    // `TEL`) is refused, as the document's pattern says.
    if !value.trim().chars().all(allowed_in_username) {
        push_error(errors, "username", USERNAME_INVALID);
        return None;
    }
    let value: String = value.nfkc().collect();
    let value = text(errors, "username", &value);
    if value.is_empty() {
        return None;
    }
    if !value.chars().all(allowed_in_username) {
        push_error(errors, "username", USERNAME_INVALID);
    }
    Some(value)
}

fn allowed_in_username(c: char) -> bool {
    c.is_alphanumeric() || "@.+-_".contains(c)
}

/// What a username looks like: NFKC, case-folded, then the Unicode TR 39 confusable skeleton
/// (folded again, since a skeleton may contain capitals). Usernames are unique by this value, so
/// `аdmin` (Cyrillic а) or `ＡＤＭＩＮ` cannot pose as `admin`.
pub fn username_skeleton(username: &str) -> String {
    let folded = username.nfkc().collect::<String>().to_lowercase();
    unicode_security::skeleton(&folded)
        .collect::<String>()
        .to_lowercase()
}

/// An image is a link to an http(s) resource, or nothing.
pub fn image(errors: &mut FieldErrors, value: &str) -> Option<String> {
    let value = text(errors, "image", value);
    if value.is_empty() {
        return None;
    }
    match url::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(value),
        _ => {
            push_error(errors, "image", "Enter a valid URL.");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_django() {
        let mut errors = FieldErrors::new();
        assert_eq!(
            username(&mut errors, " ada.l+1@x_y-z "),
            Some("ada.l+1@x_y-z".into())
        );
        assert!(errors.is_empty());
        username(&mut errors, "<script>");
        assert_eq!(errors["username"], [USERNAME_INVALID]);
        // NFKC would turn these into allowed characters; as given, they are not.
        for given in ["\u{2121}", "a\u{FF01}"] {
            let mut errors = FieldErrors::new();
            assert_eq!(username(&mut errors, given), None, "{given}");
            assert_eq!(errors["username"], [USERNAME_INVALID]);
        }
    }

    #[test]
    fn usernames_are_nfkc_and_unique_by_their_skeleton() {
        let mut errors = FieldErrors::new();
        assert_eq!(username(&mut errors, "ａｄｍｉｎ"), Some("admin".into()));
        assert!(errors.is_empty());
        let admin = username_skeleton("admin");
        for lookalike in ["\u{430}dmin", "ADMIN", "Admin", "ａｄｍｉｎ", "\u{410}DMIN"] {
            assert_eq!(username_skeleton(lookalike), admin, "{lookalike}");
        }
        assert_ne!(username_skeleton("admins"), admin);
        assert_ne!(username_skeleton("bob"), admin);
    }

    #[test]
    fn lengths_and_control_characters() {
        let mut errors = FieldErrors::new();
        text(&mut errors, "phone_number", &"1".repeat(33));
        text(&mut errors, "address", "line 1\nline 2");
        text(&mut errors, "first_name", "nul\u{0}");
        assert_eq!(errors.len(), 2);
        assert!(errors.contains_key("phone_number"));
        assert!(errors.contains_key("first_name"));
        let mut errors = FieldErrors::new();
        assert_eq!(image(&mut errors, "javascript:alert(1)"), None);
        assert_eq!(errors["image"], ["Enter a valid URL."]);
    }
}
