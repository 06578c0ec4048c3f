//! People: the user record, username rules and the password policy (NIST SP 800-63B 5.1.1.2).

use serde::Serialize;

use crate::clock::UnixTime;

/// A person who can sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Stable id, the `sub` of their tokens.
    pub id: String,
    /// Sign-in name, stored lower-case.
    pub username: String,
    /// Email address.
    pub email: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// Phone number (the `phone` scope).
    pub phone_number: Option<String>,
    /// Postal address, formatted (the `address` scope).
    pub address: Option<String>,
    /// Roles (RBAC), released in access tokens.
    pub roles: Vec<String>,
    /// Argon2id PHC string; `None` when the user has no password.
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Locked by the operator (`user lock`).
    pub locked: bool,
    /// Wrong passwords in a row since the last success.
    pub failed_logins: i32,
    /// Locked out after too many wrong passwords, until then.
    pub locked_until: Option<UnixTime>,
    /// Creation time.
    pub created_at: UnixTime,
}

/// Usernames: 1 to 64 characters of `a-z 0-9 . _ - @ +`, compared lower-case. (`:` is reserved
/// for federated users such as `google:<sub>`.)
pub fn normalize_username(name: &str) -> Result<String, String> {
    let lower = name.trim().to_lowercase();
    let ok = (1..=64).contains(&lower.len())
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_@+".contains(&b));
    if ok {
        Ok(lower)
    } else {
        Err("username must be 1 to 64 characters of a-z 0-9 . _ - @ +".into())
    }
}

/// A username to look up: a local one (normalised as above) or a federated one
/// (`google:<sub>`, `github:<id>`), taken exactly as the upstream subject was.
pub fn lookup_username(name: &str) -> Result<String, String> {
    let name = name.trim();
    if let Some((provider, subject)) = name.split_once(':') {
        let federated = matches!(provider, "google" | "github")
            && (1..=255).contains(&subject.len())
            && subject.bytes().all(|b| b.is_ascii_graphic());
        if federated {
            return Ok(name.to_owned());
        }
    }
    normalize_username(name)
}

/// Shipped list of common passwords (Openwall's password.lst, public domain).
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// NIST SP 800-63B: at least 8 and at most 128 characters, not a common password, not the
/// username; no composition rules.
pub fn check_password_policy(password: &str, username: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < 8 {
        return Err("the password must have at least 8 characters".into());
    }
    if chars > 128 {
        return Err("the password must have at most 128 characters".into());
    }
    let lower = password.to_lowercase();
    if lower == username.to_lowercase() {
        return Err("the password must not be the username".into());
    }
    let common = COMMON_PASSWORDS
        .lines()
        .filter(|l| !l.starts_with("#!comment"))
        .any(|l| l.eq_ignore_ascii_case(&lower));
    if common {
        return Err("the password is too common; choose another".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_password_policy("short", "u").is_err());
        assert!(check_password_policy(&"x".repeat(129), "u").is_err());
        assert!(
            check_password_policy("password1", "u").is_err(),
            "in the list"
        );
        assert!(
            check_password_policy("PASSWORD1", "u").is_err(),
            "case-insensitive"
        );
        assert!(check_password_policy("alice@example", "alice@example").is_err());
        assert!(check_password_policy("tulip-granite-oboe", "u").is_ok());
        // No composition rules: a long lower-case passphrase is fine.
        assert!(check_password_policy("correcthorsebatterystaple", "u").is_ok());
    }

    #[test]
    fn usernames() {
        assert_eq!(normalize_username(" Alice ").unwrap(), "alice");
        assert!(normalize_username("a b").is_err());
        assert!(normalize_username("google:123").is_err());
        assert_eq!(lookup_username("google:123").unwrap(), "google:123");
        assert_eq!(lookup_username("github:42").unwrap(), "github:42");
        assert_eq!(lookup_username(" Bob ").unwrap(), "bob");
        assert!(lookup_username("other:1").is_err());
        assert!(lookup_username("google:").is_err());
        assert!(normalize_username("").is_err());
    }
}
