//! The control API's JSON request bodies (room, endpoint, subscription):
//! serde parse and the handler's checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| control::api::parse_bodies_for_fuzzing(data));
