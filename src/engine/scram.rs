//! PostgreSQL SCRAM-SHA-256 password verifiers, computed on the client.
//!
//! `ALTER ROLE ... PASSWORD` takes no bind parameters. Sending the verifier instead of the
//! password keeps the password itself out of the statement text, hence out of server logs,
//! `pg_stat_statements` and `pg_stat_activity`. The server stores a verifier as is.
//! Format (RFC 5803 as PostgreSQL writes it):
//! `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, HmacReset, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::DbError;

/// PostgreSQL's default `scram_iterations`.
pub(crate) const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;

/// The verifier for `password` with a fresh random salt, over the password as SASLprep
/// (RFC 4013) normalises it — what libpq, sqlx and the server all hash — so any password a
/// client can log in with is stored without ever being SQL text. A password SASLprep refuses
/// (prohibited characters such as control codes) is refused here too: sqlx could not log in
/// with it.
pub(crate) fn verifier(password: &str) -> Result<String, DbError> {
    let prepared = stringprep::saslprep(password).map_err(|_| DbError::Other {
        detail: "the password contains characters SASLprep (RFC 4013) prohibits; \
                 SCRAM clients cannot log in with it"
            .into(),
    })?;
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| DbError::Other {
        detail: format!("OS random number generator failed: {e}"),
    })?;
    Ok(verifier_with_salt(prepared.as_bytes(), &salt, ITERATIONS))
}

fn verifier_with_salt(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let salted = hi(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// SCRAM's `Hi()` (RFC 5802): the first 32-byte block of PBKDF2-HMAC-SHA-256.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut mac =
        HmacReset::<Sha256>::new_from_slice(password).expect("HMAC takes a key of any length");
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize_reset().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        mac.update(&u);
        u = mac.finalize_reset().into_bytes().into();
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Key longer than a block (RFC 4231 case 6).
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hi_matches_rfc7914_vector() {
        // RFC 7914 section 11, first 32 bytes of the 64-byte output.
        assert_eq!(
            hex(&hi(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn verifier_matches_the_rfc7677_example() {
        // RFC 7677 section 3: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096
        // iterations; the server's stored key and server key as PostgreSQL stores them.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier_with_salt(b"pencil", &salt, 4096);
        let salted = hi(b"pencil", &salt, 4096);
        let client_key = hmac_sha256(&salted, b"Client Key");
        assert_eq!(
            BASE64.encode(client_key),
            // ClientProof XOR ClientSignature from the RFC's exchange, i.e. the ClientKey.
            "pg/JI9Z+hkSpLRa5btpe9GVrDHJcSEN0viVTVXaZbos="
        );
        assert_eq!(
            v,
            format!(
                "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${}:{}",
                BASE64.encode(Sha256::digest(client_key)),
                BASE64.encode(hmac_sha256(&salted, b"Server Key"))
            )
        );
    }

    #[test]
    fn verifier_has_postgres_shape_and_fresh_salt() {
        let a = verifier("pencil").unwrap();
        let b = verifier("pencil").unwrap();
        assert!(a.starts_with("SCRAM-SHA-256$4096:"));
        assert_ne!(a, b);
        assert!(!a.contains("pencil"));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"$:+/=-".contains(&c))
        );
    }

    #[test]
    fn verifier_hashes_the_saslprep_form() {
        // U+00A0 (no-break space) maps to a space, U+00AD (soft hyphen) to nothing: both
        // spellings log in as the same password, so they share a verifier for one salt.
        let salt = [7u8; SALT_LEN];
        let prepared = stringprep::saslprep("p\u{a0}ass\u{ad}word").unwrap();
        assert_eq!(prepared, "p assword");
        assert_eq!(
            verifier_with_salt(prepared.as_bytes(), &salt, 4096),
            verifier_with_salt(b"p assword", &salt, 4096)
        );
        assert!(verifier("pässword").is_ok());
        assert!(
            verifier("tab\there").is_err(),
            "control characters are prohibited"
        );
    }
}
