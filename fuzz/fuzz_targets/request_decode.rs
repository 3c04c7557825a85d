//! T-D4: arbitrary bytes as the body of each generation route (OpenAI chat
//! and completions, Ollama chat and generate), through the handlers' own
//! decoding and range checks (`olm::server::fuzzing`). Invariants: no panic,
//! and a refused body is the client's fault (4xx), never the server's.
//!
//! A schema that passes the checks goes on to llama.cpp's JSON-schema
//! converter, as it does in the server, so a crash there shows up too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use olm::server::fuzzing::{decode_request, Route};

fuzz_target!(|data: &[u8]| {
    for route in Route::ALL {
        if let Err(refused) = decode_request(route, data) {
            assert!(
                (400..500).contains(&refused.status),
                "{} answered {} ({})",
                route.path(),
                refused.status,
                refused.message
            );
        }
    }
});
