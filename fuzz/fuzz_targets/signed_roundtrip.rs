//! Structure-aware: arbitrary commands and approvals, signed or not, through the wire and the
//! receiver's checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: osprey_fuzz::signed::Structured| {
    osprey_fuzz::signed::structured(input)
});
