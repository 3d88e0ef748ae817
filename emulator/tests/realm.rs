//! Registry token realm: JWT shape, kid, signature, grants.

mod common;

use common::*;
use data_encoding::{BASE64, BASE64URL_NOPAD};
use serde_json::Value;

const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn basic(user: &str, pass: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Basic {}", BASE64.encode(format!("{user}:{pass}").as_bytes())))]
}

fn spki_from_cert_pem(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = BASE64.decode(b64.as_bytes()).unwrap();
    let at = der.windows(26).position(|w| w == P256_SPKI_PREFIX).unwrap();
    der[at..at + 26 + 65].to_vec()
}

fn libtrust_kid(spki: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(spki);
    let b = data_encoding::BASE32_NOPAD.encode(&d[..30]);
    b.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":")
}

fn decode_part(p: &str) -> Value {
    serde_json::from_slice(&BASE64URL_NOPAD.decode(p.as_bytes()).unwrap()).unwrap()
}

async fn realm(env: &Env, service: &str, scope: &str, auth: &[(String, String)]) -> Resp {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("account", "cr_temp_user")
        .append_pair("scope", scope)
        .append_pair("service", service)
        .finish();
    send(&env.base(), "GET", &format!("/auth?{q}"), auth, b"").await.unwrap()
}

async fn ee_password(env: &Env, creds: &Creds, region: &str, instance: &str) -> String {
    let r = env.cr(region, "GetAuthorizationToken", &[("InstanceId", instance)], creds).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["AuthorizationToken"].as_str().unwrap().to_string()
}

fn svc_a(env: &Env) -> String {
    let _ = env;
    acr_emulator::World::dev().instance_token_service(INSTANCE_A).unwrap().to_string()
}

#[tokio::test]
async fn jwt_has_registry_shape_kid_and_valid_signature() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let pw = ee_password(&env, &node, "cn-hangzhou", INSTANCE_A).await;
    let service = svc_a(&env);
    let r = realm(&env, &service, "repository:ns/app:pull,push", &basic("cr_temp_user", &pw)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 300);
    let issued = v["issued_at"].as_str().unwrap();
    assert!(issued.ends_with('Z') && issued.contains('T'), "RFC 3339: {issued}");
    let token = v["token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let header = decode_part(parts[0]);
    let claims = decode_part(parts[1]);
    assert_eq!(header["alg"], "ES256");
    let cert = env.emu.token_signing_cert_pem();
    let spki = spki_from_cert_pem(&cert);
    assert_eq!(header["kid"], libtrust_kid(&spki).as_str());
    assert_eq!(claims["iss"], "acr-emulator");
    assert_eq!(claims["aud"], service.as_str(), "aud is a plain string");
    for k in ["exp", "nbf", "iat"] {
        assert!(claims[k].is_i64() || claims[k].is_u64(), "{k} is an integer");
    }
    assert!(claims["jti"].is_string() && claims["sub"].is_string());
    assert_eq!(claims["access"], serde_json::json!([{"type": "repository", "name": "ns/app", "actions": ["pull"]}]));
    let sig = BASE64URL_NOPAD.decode(parts[2].as_bytes()).unwrap();
    assert_eq!(sig.len(), 64, "raw r||s");
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &spki[26..]);
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
    assert!(env.emu.issued_secrets().iter().any(|s| s == token));
    assert_eq!(env.emu.count("RegistryToken"), 1);
}

#[tokio::test]
async fn credentials_only_work_for_their_own_registry() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let pw = ee_password(&env, &node, "cn-hangzhou", INSTANCE_A).await;
    let dev = acr_emulator::World::dev();
    let svc_b = dev.instance_token_service(INSTANCE_B).unwrap();
    let r = realm(&env, svc_b, "repository:ns/app:pull", &basic("cr_temp_user", &pw)).await;
    assert_eq!(r.status, 401);
    let r = realm(&env, &svc_a(&env), "repository:ns/app:pull", &basic("cr_temp_user", &format!("{pw}x"))).await;
    assert_eq!(r.status, 401, "wrong password");
    let r = realm(&env, &svc_a(&env), "repository:ns/app:pull", &basic("someone", &pw)).await;
    assert_eq!(r.status, 401, "wrong user name");
    let r = realm(&env, &svc_a(&env), "repository:ns/app:pull", &[]).await;
    assert_eq!(r.status, 200, "anonymous gets a token");
    let claims = decode_part(r.json()["token"].as_str().unwrap().split('.').nth(1).unwrap());
    assert_eq!(claims["access"], serde_json::json!([]));

    // The cross-account user role pulls from B's registry.
    let user = env.user_creds().await;
    let pw_b = ee_password(&env, &user, "cn-beijing", INSTANCE_B).await;
    let r = realm(&env, svc_b, "repository:team/img:pull", &basic("cr_temp_user", &pw_b)).await;
    let claims = decode_part(r.json()["token"].as_str().unwrap().split('.').nth(1).unwrap());
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));

    // Expired temporary passwords are refused.
    env.advance(3601);
    let r = realm(&env, &svc_a(&env), "repository:ns/app:pull", &basic("cr_temp_user", &pw)).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn personal_credentials_work_on_the_personal_registry() {
    let env = Env::dev().await;
    let node = env.node_creds().await;
    let mut req = V3::rpc("2016-06-07", "GetAuthorizationToken", "/region/cn-hangzhou/tokens", &[]);
    req.method = "GET";
    let pw = env.call(&req, &node).await.json()["data"]["authorizationToken"].as_str().unwrap().to_string();
    let svc = acr_emulator::World::dev().personal_token_service(A, "cn-hangzhou").unwrap().to_string();
    let r = realm(&env, &svc, "repository:me/app:pull", &basic("cr_temp_user", &pw)).await;
    let claims = decode_part(r.json()["token"].as_str().unwrap().split('.').nth(1).unwrap());
    assert_eq!(claims["access"][0]["name"], "me/app");
    let r = realm(&env, &svc_a(&env), "repository:me/app:pull", &basic("cr_temp_user", &pw)).await;
    assert_eq!(r.status, 401, "personal credentials are not valid on an EE instance");
}

#[tokio::test]
async fn admin_tokens_can_push() {
    let env = Env::dev().await;
    let t = env.emu.mint_registry_token("registry.test", "eci_test/nginx", &["pull", "push"]);
    let claims = decode_part(t.split('.').nth(1).unwrap());
    assert_eq!(claims["aud"], "registry.test");
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull", "push"]));
}
