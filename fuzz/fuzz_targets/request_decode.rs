//! T-D4: arbitrary bytes as the body of each generation and embedding route
//! (OpenAI chat, completions and embeddings; Ollama chat, generate and
//! embed), through the handlers' own decoding and range checks
//! (`olm::server::fuzzing`). Invariants: no panic, and a refused body is the
//! client's fault (4xx), never the server's.
//!
//! llama.cpp's JSON-schema converter is not reached: the server leaves it
//! to the model's worker process, where a crash ends that process only.

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
