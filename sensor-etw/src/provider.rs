//! The ETW providers the sensor enables: GUIDs, keywords, event ids and opcodes.
//!
//! GUIDs are kept as `u128` (the value `GUID::from_u128` takes) so this module builds and is
//! tested everywhere; a test checks each against its registry text form.

/// Microsoft-Windows-Kernel-Process {22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}.
pub const KERNEL_PROCESS: u128 = 0x22FB2CD6_0E7B_422B_A0C7_2FAD1FD0E716;
/// WINEVENT_KEYWORD_PROCESS: process start/stop only (not threads, images, ...).
pub const KERNEL_PROCESS_KEYWORD_PROCESS: u64 = 0x10;
pub const PROCESS_START: u16 = 1;
pub const PROCESS_STOP: u16 = 2;

/// Microsoft-Windows-Kernel-Network {7DD42A49-5329-4832-8DFD-43D979153A88}.
pub const KERNEL_NETWORK: u128 = 0x7DD42A49_5329_4832_8DFD_43D979153A88;
pub const KERNEL_NETWORK_KEYWORD_IPV4: u64 = 0x10;
pub const KERNEL_NETWORK_KEYWORD_IPV6: u64 = 0x20;
/// TCPv4 "connection attempted" (outbound connect).
pub const TCP_CONNECT_V4: u16 = 12;
/// TCPv4 accept ("connection established", opcode Accept): an inbound connection.
pub const TCP_ACCEPT_V4: u16 = 15;
pub const TCP_CONNECT_V6: u16 = 28;
pub const TCP_ACCEPT_V6: u16 = 31;

/// The kernel logger's classic Process class {3D6FA8D0-FE05-11D0-9DDA-00C04FD7BA7C}: its
/// Start event carries the command line the kernel captured at creation.
pub const KERNEL_LOGGER_PROCESS: u128 = 0x3D6FA8D0_FE05_11D0_9DDA_00C04FD7BA7C;
/// Opcode of the classic Process/Start event (3 is DCStart: processes already running when the
/// session started, which [`crate::snapshot`] covers).
pub const KERNEL_LOGGER_PROCESS_START: u8 = 1;

/// Event ids enabled on the Kernel-Process provider (filtered in the kernel, not here).
pub const PROCESS_EVENT_IDS: [u16; 2] = [PROCESS_START, PROCESS_STOP];
/// Event ids enabled on the Kernel-Network provider: TCP send/receive are the bulk of its
/// traffic and would otherwise flood the session.
pub const NETWORK_EVENT_IDS: [u16; 4] =
    [TCP_CONNECT_V4, TCP_ACCEPT_V4, TCP_CONNECT_V6, TCP_ACCEPT_V6];

/// Which provider an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    KernelProcess,
    KernelNetwork,
    KernelLoggerProcess,
}

impl ProviderKind {
    pub fn from_guid(guid: u128) -> Option<Self> {
        match guid {
            KERNEL_PROCESS => Some(Self::KernelProcess),
            KERNEL_NETWORK => Some(Self::KernelNetwork),
            KERNEL_LOGGER_PROCESS => Some(Self::KernelLoggerProcess),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::KernelProcess => "Microsoft-Windows-Kernel-Process",
            Self::KernelNetwork => "Microsoft-Windows-Kernel-Network",
            Self::KernelLoggerProcess => "Kernel logger Process",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}` into the `u128` `GUID::from_u128` takes.
    fn guid(text: &str) -> u128 {
        let hex: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        assert_eq!(hex.len(), 32, "{text}");
        u128::from_str_radix(&hex, 16).expect("hex")
    }

    #[test]
    fn guids_match_their_registry_text() {
        assert_eq!(
            KERNEL_PROCESS,
            guid("{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}")
        );
        assert_eq!(
            KERNEL_NETWORK,
            guid("{7DD42A49-5329-4832-8DFD-43D979153A88}")
        );
        assert_eq!(
            KERNEL_LOGGER_PROCESS,
            guid("{3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c}")
        );
    }

    #[test]
    fn providers_are_told_apart_by_guid() {
        assert_eq!(
            ProviderKind::from_guid(KERNEL_NETWORK),
            Some(ProviderKind::KernelNetwork)
        );
        assert_eq!(ProviderKind::from_guid(0), None);
    }

    #[test]
    fn ipv6_events_are_the_ipv4_ones_plus_16() {
        assert_eq!(TCP_CONNECT_V6, TCP_CONNECT_V4 + 16);
        assert_eq!(TCP_ACCEPT_V6, TCP_ACCEPT_V4 + 16);
    }
}
