//! PostgreSQL SCRAM-SHA-256 password verifiers, computed on the client.
//!
//! `ALTER ROLE ... PASSWORD` takes no bind parameters. Sending the verifier instead of the
//! password keeps the password itself out of the statement text, hence out of server logs,
//! `pg_stat_statements` and `pg_stat_activity`. The server stores a verifier as is.
//! Format (RFC 5803 as PostgreSQL writes it):
//! `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.

use sha2::{Digest, Sha256};

use super::DbError;

/// PostgreSQL's default `scram_iterations`.
pub(crate) const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;

/// The verifier for `password` with a fresh random salt.
///
/// Only for passwords SASLprep leaves unchanged (printable ASCII, which is what rdscred
/// generates); see [`saslprep_is_identity`].
pub(crate) fn verifier(password: &str) -> Result<String, DbError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| DbError::Other {
        detail: format!("OS random number generator failed: {e}"),
    })?;
    Ok(verifier_with_salt(password.as_bytes(), &salt, ITERATIONS))
}

/// Whether SASLprep (which both libpq/sqlx and the server apply) maps the password to
/// itself. True for printable ASCII; other passwords are sent for the server to hash.
pub(crate) fn saslprep_is_identity(password: &str) -> bool {
    password.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn verifier_with_salt(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let salted = pbkdf2_sha256_block(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        base64(salt),
        base64(&stored_key),
        base64(&server_key)
    )
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block_key.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The first 32-byte block of PBKDF2-HMAC-SHA-256 (RFC 8018), which is SCRAM's `Hi()`.
fn pbkdf2_sha256_block(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = Vec::with_capacity(salt.len() + 4);
    first.extend_from_slice(salt);
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
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
    fn pbkdf2_matches_rfc7914_vector() {
        // RFC 7914 section 11, first 32 bytes of the 64-byte output.
        assert_eq!(
            hex(&pbkdf2_sha256_block(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
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
    fn saslprep_identity_is_printable_ascii_only() {
        assert!(saslprep_is_identity(" !~azAZ09"));
        assert!(!saslprep_is_identity("pässword"));
        assert!(!saslprep_is_identity("tab\there"));
    }
}
