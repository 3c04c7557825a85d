//! olm's modules, public so that integration tests and fuzz targets reach the
//! pure parts. The binary's entry point is `main.rs`.

pub mod bench;
pub mod catalog;
pub mod chat;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod env;
pub mod files;
pub mod gguf;
pub mod hub;
pub mod human;
pub mod process;
pub mod promptcache;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod ui;
