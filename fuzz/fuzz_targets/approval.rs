//! A MessagePack approval payload, decoded and verified as the responder does before acting.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| osprey_fuzz::signed::approval_bytes(bytes));
