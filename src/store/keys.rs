//! API key secrets: generation, the stored hash and the display prefix. Pure, no I/O but the
//! operating system's random source.

use sha2::{Digest, Sha256};

/// What every secret starts with.
pub const KEY_PREFIX: &str = "vgw_";

/// Characters of the secret kept, in clear, for display (`vgw_` and 8 hex digits).
pub const DISPLAY_CHARS: usize = KEY_PREFIX.len() + 8;

/// A fresh secret: `vgw_` and 64 hex digits of 32 random bytes. Shown once, never stored.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

/// The stored form of a secret: hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The part of a secret kept for display (the whole string if it is shorter).
pub fn display_prefix(secret: &str) -> &str {
    secret.get(..DISPLAY_CHARS).unwrap_or(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secrets_are_random_and_well_formed() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert!(a.starts_with(KEY_PREFIX));
        assert!(a[KEY_PREFIX.len()..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(display_prefix(&a).len(), DISPLAY_CHARS);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    proptest! {
        #[test]
        fn prefix_never_panics(s in ".*") {
            let p = display_prefix(&s);
            prop_assert!(s.starts_with(p));
            prop_assert_eq!(hash_secret(&s).len(), 64);
        }
    }
}
