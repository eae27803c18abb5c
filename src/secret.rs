//! Secret values: a string type that never prints, the standard RDS credential JSON, and
//! password generation from the OS CSPRNG.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crd::{EngineKind, PasswordSpec};

/// A secret string. `Debug` and `Display` print `<redacted>`; the value is only reachable
/// through [`SecretString::expose`], so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The value. Call only where it is handed to a database driver, AWS or a Secret's data.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        // Overwrite the bytes before the allocation is freed (zeroize's volatile writes are
        // not optimised away as a plain fill before a free can be).
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The credential JSON RDS and the Secrets Manager rotation templates use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RdsSecretValue {
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_instance_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_cluster_identifier: Option<String>,
    /// alternating-users: the user whose privileges the clone copies (as in the AWS template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masterarn: Option<String>,
}

/// Error parsing a secret string. Never contains the secret text.
#[derive(Debug, thiserror::Error)]
pub enum SecretParseError {
    #[error("secret is not the RDS credential JSON shape: {0}")]
    Shape(String),
}

impl RdsSecretValue {
    /// Parses a SecretString. Accepts `port` as number or string (RDS writes a number, some
    /// tools a string) and the master secret RDS manages (`username` + `password` only).
    pub fn parse(raw: &str) -> Result<Self, SecretParseError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Port {
            Num(u16),
            Str(String),
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Loose {
            #[serde(default)]
            engine: Option<String>,
            #[serde(default)]
            host: Option<String>,
            #[serde(default)]
            port: Option<Port>,
            username: String,
            password: SecretString,
            #[serde(default)]
            dbname: Option<String>,
            #[serde(default)]
            db_instance_identifier: Option<String>,
            #[serde(default)]
            db_cluster_identifier: Option<String>,
            #[serde(default)]
            masterarn: Option<String>,
        }
        // serde_json's error text can quote input; report only its category and position.
        let loose: Loose = serde_json::from_str(raw).map_err(|e| {
            SecretParseError::Shape(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let port = match loose.port {
            None => 0,
            Some(Port::Num(p)) => p,
            Some(Port::Str(s)) => s
                .trim()
                .parse()
                .map_err(|_| SecretParseError::Shape("port is not a number".into()))?,
        };
        Ok(RdsSecretValue {
            engine: loose.engine.unwrap_or_default(),
            host: loose.host.unwrap_or_default(),
            port,
            username: loose.username,
            password: loose.password,
            dbname: loose.dbname,
            db_instance_identifier: loose.db_instance_identifier,
            db_cluster_identifier: loose.db_cluster_identifier,
            masterarn: loose.masterarn,
        })
    }

    /// The JSON text stored as SecretString. Holds the password: hand it only to AWS.
    pub fn to_secret_json(&self) -> SecretString {
        SecretString::new(serde_json::to_string(self).expect("plain struct serializes"))
    }
}

/// Error generating a password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password policy leaves fewer than 10 usable characters")]
    AlphabetTooSmall,
    #[error("OS random number generator failed: {0}")]
    Rng(String),
}

/// The alphabet a policy allows, in a fixed order.
pub fn password_alphabet(policy: &PasswordSpec) -> Vec<char> {
    let excluded = policy.exclude_characters.as_deref().unwrap_or("");
    (0x21u8..=0x7e)
        .map(char::from)
        .filter(|c| !policy.alphanumeric_only || c.is_ascii_alphanumeric())
        .filter(|c| !excluded.contains(*c))
        .collect()
}

/// A new password from the OS CSPRNG, uniform over the policy's alphabet (rejection sampling,
/// no modulo bias). Any printable ASCII character may appear when the policy allows it: the
/// engines bind or quote passwords, never paste them into SQL.
pub fn generate_password(
    policy: &PasswordSpec,
    _engine: EngineKind,
) -> Result<SecretString, PasswordError> {
    let alphabet = password_alphabet(policy);
    if alphabet.len() < 10 {
        return Err(PasswordError::AlphabetTooSmall);
    }
    let n = alphabet.len() as u32;
    // Largest multiple of n below 256: bytes at or above it are rejected.
    let limit = 256 - (256 % n);
    let want = policy.length.clamp(16, 128) as usize;
    let mut out = String::with_capacity(want);
    let mut buf = [0u8; 64];
    while out.len() < want {
        getrandom::fill(&mut buf).map_err(|e| PasswordError::Rng(e.to_string()))?;
        for &b in &buf {
            if (b as u32) < limit && out.len() < want {
                out.push(alphabet[(b as u32 % n) as usize]);
            }
        }
    }
    Ok(SecretString::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_never_prints() {
        let s = SecretString::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        let v = RdsSecretValue {
            engine: "postgres".into(),
            host: "h".into(),
            port: 5432,
            username: "app".into(),
            password: s,
            dbname: None,
            db_instance_identifier: None,
            db_cluster_identifier: None,
            masterarn: None,
        };
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(v.to_secret_json().expose().contains("hunter2-very-secret"));
    }

    #[test]
    fn parse_accepts_string_port_and_master_secret_shape() {
        let v =
            RdsSecretValue::parse(r#"{"username":"a","password":"p","port":"5432","host":"h"}"#)
                .unwrap();
        assert_eq!(v.port, 5432);
        let m = RdsSecretValue::parse(r#"{"username":"postgres","password":"x"}"#).unwrap();
        assert_eq!(m.host, "");
    }

    #[test]
    fn parse_error_does_not_echo_input() {
        let err =
            RdsSecretValue::parse(r#"{"username":"a","password":"topsecret", nope}"#).unwrap_err();
        assert!(!err.to_string().contains("topsecret"));
    }

    #[test]
    fn generated_passwords_follow_policy() {
        let policy = PasswordSpec {
            length: 64,
            exclude_characters: Some("abc".into()),
            alphanumeric_only: false,
        };
        for _ in 0..50 {
            let p = generate_password(&policy, EngineKind::Postgres).unwrap();
            assert_eq!(p.expose().len(), 64);
            assert!(!p.expose().chars().any(|c| "abc".contains(c)));
        }
        let a = generate_password(&PasswordSpec::default(), EngineKind::Mysql).unwrap();
        let b = generate_password(&PasswordSpec::default(), EngineKind::Mysql).unwrap();
        assert_ne!(a, b);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn tiny_alphabet_is_refused() {
        let policy = PasswordSpec {
            length: 16,
            exclude_characters: Some(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123".into(),
            ),
            alphanumeric_only: true,
        };
        assert!(matches!(
            generate_password(&policy, EngineKind::Postgres),
            Err(PasswordError::AlphabetTooSmall)
        ));
    }
}
