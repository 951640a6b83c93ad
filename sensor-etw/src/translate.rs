//! From one ETW event (header + properties) to one [`EtwRecord`].

use std::time::{Duration, Instant};

use crate::device_path::DeviceMap;
use crate::filetime::header_to_timestamp;
use crate::properties::{EventProperties, PropertyError};
use crate::provider::{
    ProviderKind, KERNEL_LOGGER_PROCESS_START, NETWORK_EVENT_IDS, PROCESS_START, PROCESS_STOP,
};
use crate::record::EtwRecord;
use crate::{network, process};

/// The parts of `EVENT_HEADER` the translation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    pub provider: ProviderKind,
    pub event_id: u16,
    pub opcode: u8,
    /// The pid of the process that was current when the event was logged. For process
    /// starts that is the creator; for network events it is often unrelated.
    pub pid: u32,
    /// `EVENT_HEADER.TimeStamp`: FILETIME ticks.
    pub timestamp: i64,
}

impl EventHeader {
    /// Whether the sensor uses this event at all: checked before the (costly) schema lookup.
    pub fn is_wanted(&self) -> bool {
        match self.provider {
            ProviderKind::KernelProcess => matches!(self.event_id, PROCESS_START | PROCESS_STOP),
            ProviderKind::KernelNetwork => NETWORK_EVENT_IDS.contains(&self.event_id),
            ProviderKind::KernelLoggerProcess => self.opcode == KERNEL_LOGGER_PROCESS_START,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("{provider} event {event_id}: {source}")]
    Property {
        provider: &'static str,
        event_id: u16,
        #[source]
        source: PropertyError,
    },
    #[error("{provider} event {event_id}: header timestamp {raw} is not a valid time")]
    HeaderTime {
        provider: &'static str,
        event_id: u16,
        raw: i64,
    },
}

/// Reads the host's drive letters again (a volume was attached since the last read).
pub type DeviceMapLoader = Box<dyn FnMut() -> Option<DeviceMap> + Send + Sync>;

/// Translates events; holds the device table used to map image paths.
pub struct Translator {
    devices: DeviceMap,
    reload: Option<DeviceMapLoader>,
    last_reload: Option<Instant>,
    /// Reloading on every event of an unmapped volume would cost two syscalls per drive per
    /// event: at most one reload per interval.
    reload_interval: Duration,
}

impl Translator {
    pub fn new(devices: DeviceMap) -> Self {
        Self {
            devices,
            reload: None,
            last_reload: None,
            reload_interval: Duration::from_secs(30),
        }
    }

    /// Lets the translator re-read the device table when an image lies on an unknown volume.
    pub fn with_reload(mut self, reload: DeviceMapLoader, interval: Duration) -> Self {
        self.reload = Some(reload);
        self.reload_interval = interval;
        self
    }

    /// `Ok(None)` for events the sensor does not use.
    pub fn translate(
        &mut self,
        header: &EventHeader,
        props: &dyn EventProperties,
    ) -> Result<Option<EtwRecord>, TranslateError> {
        if !header.is_wanted() {
            return Ok(None);
        }
        let context = |source| TranslateError::Property {
            provider: header.provider.name(),
            event_id: header.event_id,
            source,
        };
        let time = header_to_timestamp(header.timestamp).ok_or(TranslateError::HeaderTime {
            provider: header.provider.name(),
            event_id: header.event_id,
            raw: header.timestamp,
        })?;
        let record = match header.provider {
            ProviderKind::KernelProcess if header.event_id == PROCESS_START => {
                let (mut record, known) =
                    process::start(time, header.pid, props, &self.devices).map_err(context)?;
                if !known && self.reload_devices() {
                    process::remap_image(&mut record, &self.devices);
                }
                Some(EtwRecord::ProcessStart(record))
            }
            ProviderKind::KernelProcess => Some(EtwRecord::ProcessStop(
                process::stop(time, props).map_err(context)?,
            )),
            ProviderKind::KernelNetwork => {
                network::connection(time, header.event_id, header.pid, props)
                    .map_err(context)?
                    .map(EtwRecord::Connection)
            }
            ProviderKind::KernelLoggerProcess => Some(EtwRecord::KernelProcessStart(
                process::kernel_start(time, props).map_err(context)?,
            )),
        };
        Ok(record)
    }

    /// Re-reads the device table if allowed now; true when a new table was installed.
    fn reload_devices(&mut self) -> bool {
        let Some(reload) = self.reload.as_mut() else {
            return false;
        };
        let now = Instant::now();
        if self
            .last_reload
            .is_some_and(|last| now.duration_since(last) < self.reload_interval)
        {
            return false;
        }
        self.last_reload = Some(now);
        match reload() {
            Some(devices) => {
                tracing::debug!(?devices, "reloaded the drive-letter table");
                self.devices = devices;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filetime::UNIX_EPOCH_AS_FILETIME;
    use crate::fixture::{utf16z, Fixture};
    use crate::record::Direction;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const T0: i64 = (UNIX_EPOCH_AS_FILETIME + 17_000_000_000_000_000) as i64;

    fn header(provider: ProviderKind, event_id: u16, opcode: u8) -> EventHeader {
        EventHeader {
            provider,
            event_id,
            opcode,
            pid: 4,
            timestamp: T0,
        }
    }

    fn start_props(image: &str) -> Fixture {
        Fixture::new()
            .with("ProcessID", 10u32.to_le_bytes().to_vec())
            .with("CreateTime", (T0 as u64).to_le_bytes().to_vec())
            .with("ParentProcessID", 9u32.to_le_bytes().to_vec())
            .with("SessionID", 1u32.to_le_bytes().to_vec())
            .with("ImageName", utf16z(image))
    }

    #[test]
    fn header_time_becomes_the_record_time() {
        let mut t = Translator::new(DeviceMap::default());
        let rec = t
            .translate(
                &header(ProviderKind::KernelProcess, 1, 1),
                &start_props(r"C:\a.exe"),
            )
            .expect("valid")
            .expect("process start");
        assert_eq!(rec.time().to_string(), "2023-11-14T22:13:20.000000000Z");
    }

    #[test]
    fn unwanted_events_are_skipped_without_reading_properties() {
        let mut t = Translator::new(DeviceMap::default());
        let empty = Fixture::new();
        assert_eq!(
            t.translate(&header(ProviderKind::KernelProcess, 5, 0), &empty),
            Ok(None)
        );
        assert_eq!(
            t.translate(&header(ProviderKind::KernelNetwork, 10, 10), &empty),
            Ok(None)
        );
        // Kernel logger DCStart (3): the processes running when the session began.
        assert_eq!(
            t.translate(&header(ProviderKind::KernelLoggerProcess, 0, 3), &empty),
            Ok(None)
        );
    }

    #[test]
    fn malformed_events_and_bad_times_are_errors() {
        let mut t = Translator::new(DeviceMap::default());
        let err = t
            .translate(
                &header(ProviderKind::KernelNetwork, 12, 12),
                &Fixture::new(),
            )
            .expect_err("no properties");
        assert!(
            err.to_string()
                .contains("Microsoft-Windows-Kernel-Network event 12"),
            "{err}"
        );
        let mut bad = header(ProviderKind::KernelProcess, 1, 1);
        bad.timestamp = 0;
        assert!(matches!(
            t.translate(&bad, &start_props(r"C:\a.exe")),
            Err(TranslateError::HeaderTime { raw: 0, .. })
        ));
    }

    #[test]
    fn unknown_volume_triggers_one_rate_limited_reload() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let mut t = Translator::new(DeviceMap::default()).with_reload(
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Some(DeviceMap::new([("F:", r"\Device\HarddiskVolume7")], None))
            }),
            Duration::from_secs(3600),
        );
        let h = header(ProviderKind::KernelProcess, 1, 1);
        let rec = t
            .translate(&h, &start_props(r"\Device\HarddiskVolume7\usb\tool.exe"))
            .expect("valid");
        match rec {
            Some(EtwRecord::ProcessStart(p)) => {
                assert_eq!(p.exe.as_deref(), Some(r"F:\usb\tool.exe"))
            }
            other => panic!("unexpected {other:?}"),
        }
        // Another unknown volume within the interval does not reload again.
        let rec = t
            .translate(&h, &start_props(r"\Device\HarddiskVolume8\x.exe"))
            .expect("valid");
        assert!(matches!(rec, Some(EtwRecord::ProcessStart(ref p))
            if p.exe.as_deref() == Some(r"\\?\GLOBALROOT\Device\HarddiskVolume8\x.exe")));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn network_and_kernel_logger_events_route_to_their_translators() {
        let mut t = Translator::new(DeviceMap::default());
        let props = Fixture::new()
            .with("PID", 5u32.to_le_bytes().to_vec())
            .with("daddr", vec![1, 1, 1, 1])
            .with("saddr", vec![10, 0, 0, 2])
            .with("dport", vec![0, 53])
            .with("sport", vec![0xC0, 0x00]);
        let rec = t.translate(&header(ProviderKind::KernelNetwork, 15, 15), &props);
        assert!(matches!(rec, Ok(Some(EtwRecord::Connection(ref c)))
            if c.direction == Direction::Inbound && c.destination_port == 53 && c.pid == 5));

        let props = Fixture::new()
            .with("ProcessId", 10u32.to_le_bytes().to_vec())
            .with("ParentId", 9u32.to_le_bytes().to_vec())
            .with("CommandLine", utf16z("a.exe -x"));
        let rec = t.translate(&header(ProviderKind::KernelLoggerProcess, 0, 1), &props);
        assert!(matches!(rec, Ok(Some(EtwRecord::KernelProcessStart(ref k)))
            if k.command_line == "a.exe -x"));
    }
}
