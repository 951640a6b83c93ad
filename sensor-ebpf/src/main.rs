//! Osprey's Linux sensor: the eBPF programs.
//!
//! Programs stay small: they copy what the kernel knows at the moment it knows it (argv before
//! the process can rewrite it, the connect destination before the socket is reused) into the
//! `EVENTS` ring buffer, and count every record they could not deliver. Everything else —
//! joining, enrichment, policy — happens in the collector.
#![no_std]
#![no_main]

mod kernel;
mod maps;
mod network;
mod process;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a loaded program: the verifier rejects any path that could get here.
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
