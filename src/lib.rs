//! olm's modules, public so that integration tests and fuzz targets reach the
//! pure parts. The binary's entry point is `main.rs`.

pub mod gguf;
