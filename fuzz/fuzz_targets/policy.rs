//! A policy file's text, loaded, compiled and evaluated against fixed events.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| osprey_fuzz::rules_text::load("policy.yaml", bytes));
