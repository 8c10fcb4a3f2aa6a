//! Rooms on demand and the closing of empty rooms: a token for a room that
//! does not exist yet creates it with its first endpoint or WHIP/WHEP
//! session (so a restart or a late operator needs nobody to recreate it),
//! and a room left empty closes after `empty_room_timeout_secs`.

mod common;

use std::time::{Duration, Instant};

use common::{TEST_SECRET, TestNode, b64, test_config};
use control::auth::Grant;
use serde_json::{Value, json};

const WHEP_OFFER: &str = include_str!("fixtures/chrome-whep-offer.sdp");

fn rooms(node: &TestNode) -> Vec<(String, u64)> {
    let a = node.get("/v1/rooms");
    assert_eq!(a.status, 200, "{}", a.text);
    a.json["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| {
            (
                r["room"].as_str().expect("name").to_owned(),
                r["endpoints"].as_u64().expect("count"),
            )
        })
        .collect()
}

fn subscriber() -> String {
    json!({ "role": "subscribe", "srtp": { "profile": "AEAD_AES_128_GCM", "key": b64(&[3; 28]) } })
        .to_string()
}

fn whep(node: &TestNode, room: &str, token: &str) -> (u16, String) {
    node.post_sdp(&format!("/whep/{room}"), token, WHEP_OFFER)
}

#[test]
fn a_token_for_a_new_room_creates_it_with_its_first_session() {
    let node = TestNode::start(2);
    // A WHEP session with a subscribe token for "town".
    let (status, text) = whep(&node, "town", &node.token("town", &[Grant::Subscribe]));
    assert_eq!(status, 201, "{text}");
    assert_eq!(rooms(&node), vec![("town".to_owned(), 1)]);
    // An API endpoint with a token for "hall".
    let token = format!("Bearer {}", node.token("hall", &[Grant::Subscribe]));
    let a = node.request_as(
        Some(&token),
        "POST",
        "/v1/rooms/hall/endpoints",
        &subscriber(),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.json["room"], "hall");
    // The token still bounds the room: one for "hall" cannot create "yard".
    let a = node.request_as(
        Some(&token),
        "POST",
        "/v1/rooms/yard/endpoints",
        &subscriber(),
    );
    assert_eq!(
        (a.status, a.json["code"].clone()),
        (403, Value::from("wrong_room"))
    );
    // And a name a path could misread is still refused.
    let dots = format!("Bearer {}", node.token("*", &[Grant::Subscribe]));
    let a = node.request_as(
        Some(&dots),
        "POST",
        "/v1/rooms/..x/endpoints",
        &subscriber(),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    let names: Vec<String> = rooms(&node).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["hall", "town"]);
}

#[test]
fn without_rooms_on_demand_unknown_rooms_are_404() {
    let node = TestNode::start_without_rooms_on_demand(1);
    let (status, text) = whep(&node, "town", &node.token("town", &[Grant::Subscribe]));
    assert_eq!(status, 404, "{text}");
    assert!(rooms(&node).is_empty());
}

#[test]
fn an_empty_room_closes_after_its_timeout() {
    let mut config = test_config(1, TEST_SECRET);
    config.empty_room_timeout_secs = 1;
    let node = TestNode::start_with_config(config);
    node.create_room("idle");
    node.create_room("busy");
    let busy = node.create_endpoint("busy", &serde_json::from_str(&subscriber()).expect("JSON"));
    let wait_for = |want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let names: Vec<String> = rooms(&node).into_iter().map(|(n, _)| n).collect();
            if names == want {
                return;
            }
            assert!(Instant::now() < deadline, "rooms {names:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&["busy"]);
    // Still there a while later: it has an endpoint.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rooms(&node), vec![("busy".to_owned(), 1)]);
    let id = busy["id"].as_str().expect("id");
    assert_eq!(
        node.delete(&format!("/v1/rooms/busy/endpoints/{id}"))
            .status,
        204
    );
    wait_for(&[]);
}
