//! One eBPF ring-buffer record, decoded and translated as the collector's source does.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| osprey_fuzz::ring::record(bytes));
