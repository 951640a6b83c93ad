//! A MessagePack command payload, decoded and checked as the actuator does before acting.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| osprey_fuzz::signed::command_bytes(bytes));
