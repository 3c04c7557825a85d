//! The single integration-test binary: every test runs the real `olm` binary
//! on the real test models (see `scripts/fetch-test-models.sh`).

mod common;

mod bad_models;
mod bench;
mod chat;
mod cli;
mod run;
