//! Bearer tokens on the control API, over real HTTP against an in-process
//! node: refused tokens (401) and refused rooms or grants (403) change
//! nothing, granted ones work, failures are counted, CORS preflights need no
//! token, `sfu token` mints tokens the node accepts, and the development
//! secret refuses public addresses.

mod common;

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TEST_SECRET as SECRET, TestNode, b64};
use control::auth::{self, Claims, Grant, Verifier};
use serde_json::{Value, json};

const GCM: &str = "AEAD_AES_128_GCM";

fn endpoint(role: &str, ssrc: u32, seed: u8) -> Value {
    let mut body = json!({
        "role": role,
        "srtp": { "profile": GCM, "key": b64(&[seed; 28]) },
    });
    if role != "subscribe" {
        body["tracks"] = json!([{ "kind": "video", "ssrc": ssrc, "payload_type": 96 }]);
    }
    body
}

/// What must not change: the rooms with their endpoint counts, and the load totals.
fn snapshot(node: &TestNode) -> (Value, Value, Value) {
    let rooms = node.get("/v1/rooms");
    assert_eq!(rooms.status, 200, "{}", rooms.text);
    let load = node.get("/v1/load").json;
    (rooms.json, load["rooms"].clone(), load["endpoints"].clone())
}

/// A node with room `r1` holding one publisher; returns it and the
/// publisher's id.
fn node_with_room() -> (TestNode, String) {
    let node = TestNode::start_with_secret(1, SECRET);
    node.create_room("r1");
    let p = node.create_endpoint("r1", &endpoint("publish", 1000, 1));
    let id = p["id"]
        .as_str()
        .expect("endpoint id is a string")
        .to_owned();
    (node, id)
}

/// Every route but /healthz, with a body that would succeed with an admin
/// token (creating `r2`, an endpoint in `r1`, ...).
fn every_route(pub_id: &str) -> Vec<(&'static str, String, String)> {
    vec![
        ("GET", "/v1/rooms".into(), String::new()),
        ("GET", "/v1/load".into(), String::new()),
        ("GET", "/metrics".into(), String::new()),
        ("POST", "/v1/rooms".into(), r#"{"room": "r2"}"#.into()),
        ("DELETE", "/v1/rooms/r1".into(), String::new()),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            endpoint("publish", 2000, 2).to_string(),
        ),
        (
            "PUT",
            format!("/v1/rooms/r1/endpoints/{pub_id}/subscriptions"),
            r#"{"video": []}"#.into(),
        ),
        (
            "DELETE",
            format!("/v1/rooms/r1/endpoints/{pub_id}"),
            String::new(),
        ),
    ]
}

fn signed_raw(header: &str, claims: &str, secret: &[u8]) -> String {
    use ring::hmac;
    let unsigned = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        unsigned.as_bytes(),
    );
    format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Missing, garbage, `alg: none`, wrongly signed, expired and
/// not-yet-valid tokens get 401 with `WWW-Authenticate: Bearer` on every
/// route, and change nothing.
#[test]
fn invalid_tokens_get_401_and_change_nothing() {
    let (node, pub_id) = node_with_room();
    let now = auth::unix_now();
    let admin_claims = Claims::new("*", &[Grant::Admin], now, 3600);
    let claims_json = serde_json::to_string(&admin_claims).expect("serialises");
    let good = node.token("*", &[Grant::Admin]);
    let (good_unsigned, _) = good.rsplit_once('.').expect("three parts");
    let bearer = |t: &str| Some(format!("Bearer {t}"));

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "missing_token"),
        ("empty bearer", Some("Bearer ".into()), "missing_token"),
        (
            "basic scheme",
            Some("Basic dXNlcjpwYXNz".into()),
            "missing_token",
        ),
        ("bare token", Some(good.clone()), "missing_token"),
        ("garbage", bearer("garbage"), "malformed_token"),
        ("two parts", bearer(good_unsigned), "malformed_token"),
        (
            "alg none, no signature",
            bearer(&format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(&claims_json)
            )),
            "bad_algorithm",
        ),
        (
            "alg none, signed anyway",
            bearer(&signed_raw(
                r#"{"alg":"none"}"#,
                &claims_json,
                SECRET.as_bytes(),
            )),
            "bad_algorithm",
        ),
        (
            "HS384",
            bearer(&signed_raw(
                r#"{"alg":"HS384"}"#,
                &claims_json,
                SECRET.as_bytes(),
            )),
            "bad_algorithm",
        ),
        (
            "signed with another secret",
            bearer(&auth::mint(
                b"not the node's secret, long enough though",
                &admin_claims,
            )),
            "bad_signature",
        ),
        (
            "signed with the development secret",
            bearer(&auth::mint(auth::DEV_API_SECRET.as_bytes(), &admin_claims)),
            "bad_signature",
        ),
        (
            "signature stripped",
            bearer(&format!("{good_unsigned}.")),
            "bad_signature",
        ),
        (
            "expired",
            bearer(&auth::mint(
                SECRET.as_bytes(),
                &Claims {
                    exp: now - 3600,
                    ..admin_claims.clone()
                },
            )),
            "expired",
        ),
        (
            "not yet valid",
            bearer(&auth::mint(
                SECRET.as_bytes(),
                &Claims {
                    nbf: Some(now + 3600),
                    ..admin_claims.clone()
                },
            )),
            "not_yet_valid",
        ),
    ];

    let before = snapshot(&node);
    for (what, authorization, code) in &cases {
        for (method, path, body) in every_route(&pub_id) {
            let a = node.request_as(authorization.as_deref(), method, &path, &body);
            let ctx = format!("{what}: {method} {path}");
            assert_eq!(a.status, 401, "{ctx}: {}", a.text);
            assert_eq!(a.json["code"], *code, "{ctx}: {}", a.text);
            assert!(
                a.json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{ctx}: {}",
                a.text
            );
            assert!(
                a.www_authenticate.starts_with("Bearer realm=\"sfu\""),
                "{ctx}: {:?}",
                a.www_authenticate
            );
            if *code != "missing_token" {
                assert!(
                    a.www_authenticate.contains("invalid_token"),
                    "{ctx}: {:?}",
                    a.www_authenticate
                );
            }
        }
        assert_eq!(snapshot(&node), before, "{what} changed the node");
    }
}

/// Valid tokens for another room, or without the grant a route needs, get
/// 403 and change nothing.
#[test]
fn wrong_room_or_grant_gets_403_and_changes_nothing() {
    use Grant::{Admin, Publish, Subscribe};
    let (node, pub_id) = node_with_room();
    node.create_room("r3");
    let subs = format!("/v1/rooms/r1/endpoints/{pub_id}/subscriptions");
    let ep = format!("/v1/rooms/r1/endpoints/{pub_id}");
    let publisher = endpoint("publish", 2000, 2).to_string();
    let subscriber = endpoint("subscribe", 0, 3).to_string();
    let both = endpoint("both", 2001, 4).to_string();

    // (token room, token grants, method, path, body, code)
    type Case = (
        &'static str,
        &'static [Grant],
        &'static str,
        String,
        String,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        // Node-wide routes need room "*".
        (
            "r1",
            &[Admin],
            "GET",
            "/v1/rooms".into(),
            String::new(),
            "wrong_room",
        ),
        (
            "r1",
            &[Admin],
            "GET",
            "/v1/load".into(),
            String::new(),
            "wrong_room",
        ),
        (
            "r1",
            &[Admin],
            "GET",
            "/metrics".into(),
            String::new(),
            "wrong_room",
        ),
        // ... and admin.
        (
            "*",
            &[Publish, Subscribe],
            "GET",
            "/v1/rooms".into(),
            String::new(),
            "missing_grant",
        ),
        (
            "*",
            &[Publish, Subscribe],
            "GET",
            "/metrics".into(),
            String::new(),
            "missing_grant",
        ),
        // Rooms: admin of that room.
        (
            "r1",
            &[Admin],
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "r2"}"#.into(),
            "wrong_room",
        ),
        (
            "r2",
            &[Publish, Subscribe],
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "r2"}"#.into(),
            "missing_grant",
        ),
        (
            "*",
            &[Publish],
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "r2"}"#.into(),
            "missing_grant",
        ),
        (
            "r3",
            &[Admin],
            "DELETE",
            "/v1/rooms/r1".into(),
            String::new(),
            "wrong_room",
        ),
        (
            "r1",
            &[Publish, Subscribe],
            "DELETE",
            "/v1/rooms/r1".into(),
            String::new(),
            "missing_grant",
        ),
        // Endpoints: the grant of the role, in that room.
        (
            "r3",
            &[Admin],
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            publisher.clone(),
            "wrong_room",
        ),
        (
            "r1",
            &[Subscribe],
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            publisher.clone(),
            "missing_grant",
        ),
        (
            "r1",
            &[Publish],
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            subscriber.clone(),
            "missing_grant",
        ),
        (
            "r1",
            &[Publish],
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            both.clone(),
            "missing_grant",
        ),
        (
            "r1",
            &[Subscribe],
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            both.clone(),
            "missing_grant",
        ),
        (
            "r1",
            &[],
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            publisher.clone(),
            "missing_grant",
        ),
        // The room is checked before the body is parsed.
        (
            "r3",
            &[Admin],
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            "not json".into(),
            "wrong_room",
        ),
        (
            "r1",
            &[Publish],
            "PUT",
            subs.clone(),
            r#"{"video": []}"#.into(),
            "missing_grant",
        ),
        (
            "r3",
            &[Subscribe],
            "PUT",
            subs,
            r#"{"video": []}"#.into(),
            "wrong_room",
        ),
        (
            "r3",
            &[Admin],
            "DELETE",
            ep.clone(),
            String::new(),
            "wrong_room",
        ),
        ("r1", &[], "DELETE", ep, String::new(), "missing_grant"),
    ];

    let before = snapshot(&node);
    for (room, grants, method, path, body, code) in &cases {
        let authorization = format!("Bearer {}", node.token(room, grants));
        let a = node.request_as(Some(&authorization), method, path, body);
        let ctx = format!("room {room} {grants:?}: {method} {path} {body}");
        assert_eq!(a.status, 403, "{ctx}: {}", a.text);
        assert_eq!(a.json["code"], *code, "{ctx}: {}", a.text);
        assert!(
            a.www_authenticate.contains("insufficient_scope"),
            "{ctx}: {:?}",
            a.www_authenticate
        );
        assert_eq!(snapshot(&node), before, "{ctx} changed the node");
    }
}

/// Tokens scoped to a room do what their grants allow there.
#[test]
fn scoped_tokens_do_what_they_grant() {
    use Grant::{Admin, Publish, Subscribe};
    let node = TestNode::start_with_secret(1, SECRET);
    let as_ = |room: &str, grants: &[Grant], method: &str, path: &str, body: &str| {
        let authorization = format!("bearer {}", node.token(room, grants));
        node.request_as(Some(&authorization), method, path, body)
    };
    let a = as_("r9", &[Admin], "POST", "/v1/rooms", r#"{"room": "r9"}"#);
    assert_eq!(a.status, 201, "room admin creates its room: {}", a.text);

    let eps = "/v1/rooms/r9/endpoints";
    let a = as_(
        "r9",
        &[Publish],
        "POST",
        eps,
        &endpoint("publish", 10, 1).to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let a = as_(
        "r9",
        &[Subscribe],
        "POST",
        eps,
        &endpoint("subscribe", 0, 2).to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let sub_id = a.json["id"].as_str().expect("id").to_owned();
    let a = as_(
        "r9",
        &[Subscribe, Publish],
        "POST",
        eps,
        &endpoint("both", 11, 3).to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let a = as_(
        "*",
        &[Publish],
        "POST",
        eps,
        &endpoint("publish", 12, 4).to_string(),
    );
    assert_eq!(a.status, 201, "room * covers r9: {}", a.text);

    let subs = format!("{eps}/{sub_id}/subscriptions");
    let a = as_("r9", &[Subscribe], "PUT", &subs, r#"{"video": [10]}"#);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["consumers"][0]["producer_ssrc"], 10);
    let a = as_("r9", &[Subscribe], "DELETE", &format!("{eps}/{sub_id}"), "");
    assert_eq!(a.status, 204, "{}", a.text);
    let rooms = node.get("/v1/rooms").json;
    assert_eq!(rooms["rooms"][0]["endpoints"], 3, "{rooms}");

    let a = as_("r9", &[Admin], "DELETE", "/v1/rooms/r9", "");
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(node.get("/v1/rooms").json, json!({ "rooms": [] }));
}

/// /healthz and unknown paths answer without a token; failures are
/// counted by reason in /metrics.
#[test]
fn open_routes_and_failure_metrics() {
    let node = TestNode::start(1);
    let a = node.request_as(None, "GET", "/healthz", "");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json, json!({ "status": "ok" }));
    assert_eq!(node.request_as(None, "GET", "/nowhere", "").status, 404);

    let metrics = node.get("/metrics").text;
    for reason in auth::AuthError::ALL {
        let line = format!(
            "sfu_auth_failures_total{{reason=\"{}\"}} 0\n",
            reason.as_str()
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    node.request_as(None, "GET", "/v1/rooms", "");
    node.request_as(None, "POST", "/v1/rooms", r#"{"room": "x"}"#);
    node.request_as(Some("Bearer x.y.z"), "GET", "/v1/load", "");
    let authorization = format!("Bearer {}", node.token("other", &[Grant::Admin]));
    node.request_as(Some(&authorization), "GET", "/v1/load", "");

    let metrics = node.get("/metrics").text;
    for (reason, n) in [
        ("missing_token", 2),
        ("malformed_token", 1),
        ("wrong_room", 1),
        ("bad_signature", 0),
    ] {
        let line = format!("sfu_auth_failures_total{{reason=\"{reason}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    for line in [
        "sfu_http_requests_total{route=\"GET /v1/rooms\",status=\"401\"} 1\n",
        "sfu_http_requests_total{route=\"GET /v1/load\",status=\"401\"} 1\n",
        "sfu_http_requests_total{route=\"GET /v1/load\",status=\"403\"} 1\n",
        "sfu_http_requests_total{route=\"GET /healthz\",status=\"200\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// A browser's preflight gets the CORS answer without a token; answers to
/// real requests carry the CORS headers.
#[test]
fn cors_preflight_needs_no_token() {
    let node = TestNode::start(1);
    let origin = "https://player.example";
    for (path, method) in [
        ("/v1/rooms", "POST"),
        ("/v1/rooms/r1/endpoints/0000000000000001", "DELETE"),
        ("/v1/rooms/r1", "PATCH"),
    ] {
        let (status, headers) =
            node.preflight(path, origin, method, "authorization,content-type,if-match");
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        assert_eq!(status, 200, "{method} {path}: {headers:?}");
        assert_eq!(header("access-control-allow-origin"), "*", "{headers:?}");
        assert!(header("access-control-allow-methods").contains(&method.to_ascii_lowercase()));
        for h in ["authorization", "content-type", "if-match"] {
            assert!(
                header("access-control-allow-headers").contains(h),
                "{h}: {headers:?}"
            );
        }
    }
    let headers = node.headers("GET", "/v1/rooms", origin);
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(get("access-control-allow-origin"), "*", "{headers:?}");
    for h in ["location", "etag", "link", "accept-patch"] {
        assert!(
            get("access-control-expose-headers").contains(h),
            "{h}: {headers:?}"
        );
    }
    assert_eq!(node.get("/v1/rooms").json, json!({ "rooms": [] }));
}

/// `sfu token` prints a token signed with the configured secret that the
/// node accepts, and refuses bad arguments.
#[test]
fn sfu_token_mints_tokens_the_node_accepts() {
    let sfu = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sfu"));
        for var in ["SFU_CONFIG", "SFU_API_SECRET", "SFU_API_SECRET_FILE"] {
            cmd.env_remove(var);
        }
        cmd
    };
    let output = sfu()
        .args([
            "token", "--room", "r1", "--grant", "publish", "--ttl", "120",
        ])
        .args(["--sub", "alice"])
        .env("SFU_API_SECRET", SECRET)
        .output()
        .expect("sfu runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let minted = stdout.trim_end();
    assert_eq!(stdout, format!("{minted}\n"), "one line");
    let now = auth::unix_now();
    let claims = Verifier::new(SECRET.as_bytes())
        .verify(minted, now)
        .expect("signed with SFU_API_SECRET");
    assert_eq!(claims.room, "r1");
    assert_eq!(claims.grants, vec![Grant::Publish]);
    assert_eq!(claims.sub.as_deref(), Some("alice"));
    assert!((now + 110..=now + 121).contains(&claims.exp), "{claims:?}");
    assert_eq!(
        Verifier::new(auth::DEV_API_SECRET.as_bytes()).verify(minted, now),
        Err(auth::AuthError::Signature)
    );

    // The node takes it for what it grants, and no more.
    let node = TestNode::start_with_secret(1, SECRET);
    node.create_room("r1");
    let authorization = format!("Bearer {minted}");
    let body = endpoint("publish", 77, 7).to_string();
    let a = node.request_as(
        Some(&authorization),
        "POST",
        "/v1/rooms/r1/endpoints",
        &body,
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let body = endpoint("subscribe", 0, 8).to_string();
    let a = node.request_as(
        Some(&authorization),
        "POST",
        "/v1/rooms/r1/endpoints",
        &body,
    );
    assert_eq!(a.status, 403, "{}", a.text);

    // --api-secret beats the environment; no secret at all: the development one.
    let output = sfu()
        .args(["token", "--room", "*", "--grant", "admin"])
        .args(["--api-secret", SECRET])
        .env(
            "SFU_API_SECRET",
            "an environment secret that is long enough",
        )
        .output()
        .expect("sfu runs");
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        Verifier::new(SECRET.as_bytes())
            .verify(minted.trim(), now)
            .is_ok()
    );
    let output = sfu()
        .args(["token", "--room", "*", "--grant", "admin"])
        .output()
        .expect("sfu runs");
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).expect("UTF-8");
    let claims = Verifier::new(auth::DEV_API_SECRET.as_bytes())
        .verify(minted.trim(), now)
        .expect("the development secret by default");
    assert_eq!(claims.room, "*");
    assert!(
        (now + 3590..=now + 3601).contains(&claims.exp),
        "default TTL"
    );

    for bad in [
        &["token", "--room", "r1"][..],
        &["token", "--room", "a b", "--grant", "admin"],
        &["token", "--room", "r1", "--grant", "owner"],
        &[
            "token",
            "--room",
            "r1",
            "--grant",
            "admin",
            "--api-secret",
            "short",
        ],
    ] {
        let output = sfu().args(bad).output().expect("sfu runs");
        assert!(!output.status.success(), "{bad:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{bad:?} printed {output:?}");
    }
}

/// With the development secret the node refuses a non-loopback address,
/// in-process and as the binary (which exits before binding anything).
#[test]
fn development_secret_refuses_public_addresses() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime can be built");
    let config = control::Config {
        control_addr: "0.0.0.0:0".parse().expect("literal"),
        media_port: 0,
        workers: Some(1),
        cpus: Some(control::config::CpuList(Vec::new())),
        ..control::Config::default()
    };
    let err = rt
        .block_on(control::start(config))
        .expect_err("refused with the development secret");
    assert!(matches!(err, control::StartError::Config(_)), "{err}");
    assert!(err.to_string().contains("development"), "{err}");

    let output = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args([
            "--control-addr",
            "0.0.0.0:0",
            "--media-port",
            "0",
            "--workers",
            "1",
        ])
        .env_remove("SFU_CONFIG")
        .env_remove("SFU_API_SECRET")
        .env_remove("SFU_API_SECRET_FILE")
        .output()
        .expect("sfu runs");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("development secret") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
}
