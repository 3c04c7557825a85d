//! The single integration-test binary: every test runs the real `olm` binary
//! on the real test models (see `scripts/fetch-test-models.sh`).

// Tests may tell the reader why a check was skipped.
#![allow(clippy::print_stderr)]

mod common;

mod agents;
mod architecture;
mod bad_models;
mod bench;
mod bounds;
mod bundle;
mod chat;
mod cli;
mod doctor;
mod fakehub;
mod fakems;
mod modelscope;
mod mutation;
mod pull;
mod readme;
mod rpc;
mod run;
mod sandbox;
mod serve;
mod serve_api;
mod serve_bounds;
mod serve_fields;
mod serve_input;
mod serve_load;
mod serve_slow;
mod serve_store;
mod speed;
mod store;
mod templates;
