//! Request authentication for carrier traffic (`specs/telephony.md` §2.9 and §3.1), pure.
//!
//! - **Twilio** signs every webhook and the Media Streams upgrade with `X-Twilio-Signature`:
//!   base64(HMAC-SHA1(auth token, URL + the POST params sorted by name then value, each name
//!   immediately followed by its value)). Proxies change the scheme or the port, so the URL is
//!   also tried with the port added or removed, and a WebSocket upgrade is tried as `wss://`
//!   as well as `https://`.
//! - **Exotel** authenticates a Voicebot stream with HTTP Basic credentials in the stream URL
//!   (`wss://KEY:TOKEN@host/…` arrives as `Authorization: Basic base64(KEY:TOKEN)`).
//!
//! Comparisons are constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<sha1::Sha1>;

/// The Twilio signature of `url` with form `params` (empty for GET and WebSocket upgrades).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let Ok(mut mac) = HmacSha1::new_from_slice(auth_token.as_bytes()) else {
        // HMAC takes keys of any length; this branch cannot be reached.
        return String::new();
    };
    mac.update(url.as_bytes());
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    sorted.sort();
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    B64.encode(mac.finalize().into_bytes())
}

/// The forms of a URL Twilio may have signed: as given, with the default port added or removed,
/// and (for WebSocket upgrades, `wss`) with the scheme swapped between `wss`/`https` and
/// `ws`/`http`.
pub fn twilio_url_variants(url: &str) -> Vec<String> {
    let mut schemes = vec![url.to_owned()];
    for (a, b) in [
        ("wss://", "https://"),
        ("https://", "wss://"),
        ("ws://", "http://"),
        ("http://", "ws://"),
    ] {
        if let Some(rest) = url.strip_prefix(a) {
            schemes.push(format!("{b}{rest}"));
        }
    }
    let mut out = Vec::new();
    for candidate in schemes {
        let Some((scheme, rest)) = candidate.split_once("://") else {
            out.push(candidate);
            continue;
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let default_port = if matches!(scheme, "https" | "wss") {
            "443"
        } else {
            "80"
        };
        out.push(candidate.clone());
        match authority.rsplit_once(':') {
            Some((host, port)) if port == default_port => {
                out.push(format!("{scheme}://{host}{path}"))
            }
            Some(_) => {}
            None => out.push(format!("{scheme}://{authority}:{default_port}{path}")),
        }
    }
    out.dedup();
    out
}

/// Whether `header` is a valid Twilio signature for any accepted form of `url`.
pub fn verify_twilio(auth_token: &str, url: &str, params: &[(&str, &str)], header: &str) -> bool {
    let header = header.trim().as_bytes();
    let mut valid = false;
    for candidate in twilio_url_variants(url) {
        let expected = twilio_signature(auth_token, &candidate, params);
        valid |= bool::from(expected.as_bytes().ct_eq(header));
    }
    valid
}

/// Whether an `Authorization` header carries exactly the Basic credentials `user:password`.
pub fn verify_basic(expected_user_password: &str, authorization: &str) -> bool {
    let Some(encoded) = authorization
        .strip_prefix("Basic ")
        .or_else(|| authorization.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = B64.decode(encoded.trim()) else {
        return false;
    };
    bool::from(decoded.as_slice().ct_eq(expected_user_password.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const PARAMS: &[(&str, &str)] = &[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];

    #[test]
    fn published_vectors() {
        assert_eq!(
            twilio_signature("12345", URL, PARAMS),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                PARAMS
            ),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            twilio_signature(
                "12345",
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                PARAMS
            ),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        let duplicates = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ];
        assert_eq!(
            twilio_signature("12345", URL, &duplicates),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
        let json_url = format!(
            "{URL}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        assert_eq!(
            twilio_signature("12345", &json_url, &[]),
            "a9nBmqA0ju/hNViExpshrM61xv4="
        );
    }

    #[test]
    fn port_and_scheme_variants_verify() {
        // Signed with :443, checked against the URL without it, and the reverse.
        assert!(verify_twilio(
            "12345",
            URL,
            PARAMS,
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(verify_twilio(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            PARAMS,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // A stream upgrade signed as wss:// verifies when the server sees https://.
        let signed = twilio_signature("tok", "wss://gw.example.com/stream/twilio", &[]);
        assert!(verify_twilio(
            "tok",
            "https://gw.example.com/stream/twilio",
            &[],
            &signed
        ));
        assert!(verify_twilio(
            "tok",
            "wss://gw.example.com:443/stream/twilio",
            &[],
            &signed
        ));
    }

    #[test]
    fn wrong_token_url_params_or_header_fail() {
        assert!(!verify_twilio(
            "54321",
            URL,
            PARAMS,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify_twilio(
            "12345",
            "https://mycompany.com/other",
            PARAMS,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify_twilio(
            "12345",
            URL,
            &PARAMS[1..],
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify_twilio("12345", URL, PARAMS, ""));
        assert!(!verify_twilio(
            "12345",
            URL,
            PARAMS,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8"
        ));
    }

    #[test]
    fn url_variants_cover_ports_and_schemes() {
        let variants = twilio_url_variants("wss://gw.example.com/stream/twilio");
        for expected in [
            "wss://gw.example.com/stream/twilio",
            "wss://gw.example.com:443/stream/twilio",
            "https://gw.example.com/stream/twilio",
            "https://gw.example.com:443/stream/twilio",
        ] {
            assert!(
                variants.iter().any(|v| v == expected),
                "{expected} not in {variants:?}"
            );
        }
        let odd_port = twilio_url_variants("https://gw.example.com:8443/x");
        assert!(odd_port.iter().all(|v| v.contains(":8443")), "{odd_port:?}");
    }

    #[test]
    fn basic_credentials() {
        let header = format!("Basic {}", B64.encode("key:token"));
        assert!(verify_basic("key:token", &header));
        assert!(!verify_basic("key:other", &header));
        assert!(!verify_basic("key:token", "Bearer abc"));
        assert!(!verify_basic("key:token", "Basic !!!"));
        assert!(!verify_basic("key:token", ""));
    }
}
