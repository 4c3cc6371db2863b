//! In-process tests of every wire format against a mock on a real TCP port.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod anthropic;
mod bedrock;
mod cohere;
mod control;
mod google;
mod images;
mod openai;
mod rerank;
mod strict;
