use super::*;

fn issued(secs: u64) -> Result<Issued, String> {
    Ok(Issued { access_token: Secret("tok".into()), expires_in_secs: secs })
}

#[test]
fn the_first_request_starts_one_exchange_and_the_others_wait_for_it() {
    let mut s = State::default();
    let Step::Wait { flag, start: true } = s.step(1000) else { panic!("the first request starts") };
    for _ in 0..63 {
        match s.step(1001) {
            Step::Wait { flag: f, start: false } => assert!(Arc::ptr_eq(&f, &flag)),
            _ => panic!("the others wait for the same exchange"),
        }
    }
    s.complete(issued(3600), 1000, 1200, 300_000);
    assert!(matches!(s.step(1300), Step::Use(h) if &*h == "Bearer tok"));
}

#[test]
fn a_token_due_for_refresh_is_still_used_while_exactly_one_refresh_runs() {
    let mut s = State { refreshing: Some(Arc::new(AtomicBool::new(false))), ..State::default() };
    s.complete(issued(3600), 0, 100, 300_000);
    // Refresh at 3600 - 300 s.
    assert!(matches!(s.step(3_299_999), Step::Use(_)));
    assert!(matches!(s.step(3_300_000), Step::UseAndRefresh(..)));
    for _ in 0..63 {
        assert!(matches!(s.step(3_300_001), Step::Use(_)), "no second refresh while one runs");
    }
}

#[test]
fn short_lived_tokens_refresh_half_way_through_their_life() {
    let mut s = State::default();
    s.complete(issued(4), 10_000, 10_050, 300_000);
    assert!(matches!(s.step(11_999), Step::Use(_)));
    assert!(matches!(s.step(12_000), Step::UseAndRefresh(..)));
}

#[test]
fn a_failed_refresh_keeps_the_old_token_while_valid_then_fails_with_the_reason() {
    let mut s = State::default();
    s.complete(issued(10), 0, 0, 300_000);
    let Step::UseAndRefresh(..) = s.step(5_000) else { panic!() };
    s.complete(Err("the token endpoint answered 500".into()), 5_000, 5_100, 300_000);
    assert!(matches!(s.step(5_200), Step::Use(_)), "old token, within the back-off");
    assert!(matches!(s.step(6_100), Step::UseAndRefresh(..)), "retried after the back-off");
    s.complete(Err("the token endpoint answered 500".into()), 6_100, 6_200, 300_000);
    assert!(matches!(s.step(8_100), Step::Use(_)), "old token, within the second back-off (2 s)");
    // Expired: requests wait for a new try, and it fails too.
    assert!(matches!(s.step(10_000), Step::Wait { start: true, .. }));
    s.complete(Err("the token endpoint answered 500".into()), 10_000, 10_100, 300_000);
    // Expired and within the back-off (4 s now): the reason, at once.
    match s.step(12_000) {
        Step::Fail(why) => assert!(why.contains("answered 500"), "{why}"),
        _ => panic!("an expired token is never used"),
    }
    assert!(matches!(s.step(14_100), Step::Wait { start: true, .. }), "after the back-off, a new try");
    s.complete(issued(10), 14_100, 14_200, 300_000);
    assert!(matches!(s.step(14_300), Step::Use(_)));
    assert_eq!((s.failures, s.failure.as_deref()), (0, None));
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let mut s = State::default();
    let mut delays = Vec::new();
    for _ in 0..7 {
        s.complete(Err("x".into()), 0, 0, 0);
        delays.push(s.retry_at_ms);
    }
    assert_eq!(delays, [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
}

#[test]
fn token_answers_are_read_and_refusals_say_only_the_error() {
    let ok = parse_token_response(200, br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#);
    assert_eq!(ok, Ok(Issued { access_token: Secret("ya29.x".into()), expires_in_secs: 3599 }));
    let entra_v1 = parse_token_response(200, br#"{"access_token":"eyJ0","expires_in":"3599"}"#).unwrap();
    assert_eq!(entra_v1.expires_in_secs, 3599);
    let refused = parse_token_response(
        400,
        br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature.","assertion":"eyJhbGciOi.secret"}"#,
    )
    .unwrap_err();
    assert_eq!(refused, "the token endpoint answered 400: invalid_grant: Invalid JWT Signature.");
    assert_eq!(
        parse_token_response(502, b"<html>client_secret=abc</html>").unwrap_err(),
        "the token endpoint answered 502"
    );
    assert!(parse_token_response(200, br#"{"access_token":"a\r\nb","expires_in":5}"#).is_err());
    assert!(parse_token_response(200, br#"{"access_token":"a","expires_in":0}"#).is_err());
    assert!(parse_token_response(200, br#"{"expires_in":5}"#).is_err());
}

#[test]
fn token_endpoints_must_be_https_or_loopback() {
    assert!(check_endpoint("https://oauth2.googleapis.com/token").is_ok());
    assert!(check_endpoint("http://127.0.0.1:8080/token").is_ok());
    assert!(check_endpoint("http://[::1]:9/token").is_ok());
    assert!(check_endpoint("http://localhost/token").is_ok());
    assert!(check_endpoint("http://evil.example/token").is_err());
    assert!(check_endpoint("http://127.0.0.1.evil.example/token").is_err());
    assert!(check_endpoint("file:///etc/passwd").is_err());
}

const KEY_FILE: &str = include_str!("../../../tests/fixtures/tokens/service_account.json");

#[test]
fn the_google_jwt_is_signed_rs256_with_the_claims_google_checks() {
    let grant = Grant::google_service_account(KEY_FILE, GOOGLE_SCOPE).unwrap();
    let Grant::GoogleServiceAccount { key, .. } = &grant else { panic!() };
    let body = grant.exchange_body(1_700_000_000).unwrap();
    let jwt = body.strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=").unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |p: &str| crate::base64::decode(&p.replace('-', "+").replace('_', "/")).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "test-key-1"}));
    let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
    assert_eq!(
        claims,
        serde_json::json!({"iss": "gateway@switchyard-test.iam.gserviceaccount.com", "scope": GOOGLE_SCOPE,
            "aud": "https://oauth2.googleapis.com/token", "iat": 1_700_000_000u64, "exp": 1_700_003_600u64})
    );
    let public =
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key.public().as_ref());
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(public.verify(signed.as_bytes(), &decode(parts[2])).is_ok(), "the signature verifies");
    assert!(public.verify(b"other", &decode(parts[2])).is_err());
    assert!(!format!("{grant:?}").contains("PRIVATE"), "Debug hides the key");
}

#[test]
fn unusable_key_files_are_named_without_their_content() {
    assert!(Grant::google_service_account("{", GOOGLE_SCOPE).unwrap_err().contains("not a service account JSON key"));
    let user = r#"{"type":"authorized_user","client_secret":"shh"}"#;
    assert!(Grant::google_service_account(user, GOOGLE_SCOPE).unwrap_err().contains("\"authorized_user\""));
    let mut v: serde_json::Value = serde_json::from_str(KEY_FILE).unwrap();
    v["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
    let e = Grant::google_service_account(&v.to_string(), GOOGLE_SCOPE).unwrap_err();
    assert!(e.contains("not a usable RSA key") && !e.contains("AAAA"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(KEY_FILE).unwrap();
    v["token_uri"] = "http://attacker.example/token".into();
    assert!(Grant::google_service_account(&v.to_string(), GOOGLE_SCOPE)
        .unwrap_err()
        .contains("token_uri must be an https URL"));
}

#[test]
fn equal_credentials_share_one_cache_and_different_ones_do_not() {
    let a =
        TokenSource::shared(Grant::google_service_account(KEY_FILE, GOOGLE_SCOPE).unwrap(), "key file a", 300).unwrap();
    let b =
        TokenSource::shared(Grant::google_service_account(KEY_FILE, GOOGLE_SCOPE).unwrap(), "key file b", 300).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let other_scope =
        TokenSource::shared(Grant::google_service_account(KEY_FILE, "s").unwrap(), "key file a", 300).unwrap();
    assert!(!Arc::ptr_eq(&a, &other_scope));
    let entra = |secret: &str| {
        TokenSource::shared(
            Grant::entra(ENTRA_AUTHORITY, "t", "c", Secret(secret.into()), ENTRA_SCOPE).unwrap(),
            "t",
            300,
        )
        .unwrap()
    };
    let (x, y, z) = (entra("s1"), entra("s1"), entra("s2"));
    assert!(Arc::ptr_eq(&x, &y) && !Arc::ptr_eq(&x, &z), "a rotated secret gets a fresh cache");
    assert!(!format!("{x:?}").contains("s1"));
}

#[test]
fn entra_form_fields_are_url_encoded() {
    let g = Grant::entra(
        "https://login.example/",
        "contoso.onmicrosoft.com",
        "cid",
        Secret("a+b&c=d é".into()),
        ENTRA_SCOPE,
    )
    .unwrap();
    assert_eq!(g.token_url(), "https://login.example/contoso.onmicrosoft.com/oauth2/v2.0/token");
    assert_eq!(
        g.exchange_body(0).unwrap(),
        "grant_type=client_credentials&client_id=cid&client_secret=a%2Bb%26c%3Dd+%C3%A9&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
    );
    assert!(!format!("{g:?}").contains("a+b"), "Debug hides the secret");
    assert!(Grant::entra("https://l", "../x", "c", Secret("s".into()), ENTRA_SCOPE).is_err());
}
