//! The ETW sessions: starting them with explicit buffers, feeding their events through the
//! [`Translator`](crate::Translator) to a sink, and reading their lost-event counters.
//!
//! Two real-time sessions run:
//! - `<name>` (default `Osprey-Sensor`): Microsoft-Windows-Kernel-Process (keyword 0x10,
//!   events 1 and 2) and Microsoft-Windows-Kernel-Network (keywords 0x10 | 0x20, events 12,
//!   15, 28, 31);
//! - `<name>-CmdLine`: a system-logger session (Windows 8+) with the kernel's process flag,
//!   for the command line each Process/Start carries. Its failure to start is not fatal:
//!   starts then go out without argv and the collector falls back to reading it.
//!
//! Sessions have fixed names on purpose: an ETW session outlives a crashed process, and a fixed
//! name lets the next start find and replace it instead of leaking one of the system's 64
//! session slots per crash.

use std::sync::Arc;
use std::time::Duration;

use crate::record::EtwRecord;
use crate::EtwError;

/// Where translated records go. Called on the sessions' processing threads: it may block
/// briefly (ETW then buffers), and must not panic.
pub type Sink = Arc<dyn Fn(EtwRecord) + Send + Sync>;

/// ETW's largest buffer: `BufferSize` is capped at 1 MiB.
pub const MAX_BUFFER_KIB: u32 = 1024;
/// Smallest buffer accepted: with ferrisetw's 32 KiB default, others measured 40-55% of
/// process starts lost in bursts.
pub const MIN_BUFFER_KIB: u32 = 256;
/// Smallest buffer count accepted, for the same reason.
pub const MIN_BUFFERS: u32 = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Name of the main session; the command-line session is `<name>-CmdLine`.
    pub name: String,
    /// Size of each ETW buffer, KiB (clamped to 256..=1024).
    pub buffer_kib: u32,
    /// Buffers allocated up front (at least 64).
    pub min_buffers: u32,
    /// Buffers ETW may grow to under load.
    pub max_buffers: u32,
    /// How often ETW hands partly filled buffers to us: bounds the latency of a quiet
    /// session, and how long a start may wait for its command line.
    pub flush_timer: Duration,
    /// Run the command-line session.
    pub command_lines: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            name: "Osprey-Sensor".to_string(),
            buffer_kib: MIN_BUFFER_KIB,
            min_buffers: MIN_BUFFERS,
            max_buffers: 2 * MIN_BUFFERS,
            flush_timer: Duration::from_secs(1),
            command_lines: true,
        }
    }
}

impl SessionConfig {
    /// Sizes the buffers from a memory budget per session, in bytes (the collector's
    /// `buffer_bytes`, 16 MiB by default): 256 KiB buffers, as many as the budget holds but
    /// never fewer than 64, and room to double under load.
    pub fn with_budget_bytes(mut self, bytes: u32) -> Self {
        self.buffer_kib = MIN_BUFFER_KIB;
        self.min_buffers = (bytes / (MIN_BUFFER_KIB * 1024)).max(MIN_BUFFERS);
        self.max_buffers = self.min_buffers.saturating_mul(2);
        self
    }

    pub fn command_line_session_name(&self) -> String {
        format!("{}-CmdLine", self.name)
    }

    /// The configuration actually applied: buffers within ETW's limits and no smaller than
    /// the measured minimum, at least one second of flush timer (ETW's unit).
    pub fn effective(&self) -> Self {
        let buffer_kib = self.buffer_kib.clamp(MIN_BUFFER_KIB, MAX_BUFFER_KIB);
        let min_buffers = self.min_buffers.max(MIN_BUFFERS);
        Self {
            name: self.name.clone(),
            buffer_kib,
            min_buffers,
            max_buffers: self.max_buffers.max(min_buffers),
            flush_timer: self.flush_timer.max(Duration::from_secs(1)),
            command_lines: self.command_lines,
        }
    }
}

/// Counters of the sessions, cumulative since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// `EventsLost` of the main session: events ETW could not put in a buffer.
    pub events_lost: u64,
    /// `RealTimeBuffersLost + LogBuffersLost` of the main session: full buffers dropped
    /// because we did not consume them in time.
    pub buffers_lost: u64,
    pub cmdline_events_lost: u64,
    pub cmdline_buffers_lost: u64,
    /// Events that could not be decoded (missing schema or property).
    pub malformed: u64,
}

/// Whether the sessions still deliver (cheap: no system call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionHealth {
    /// The main session's processing thread has returned: no more events will come (the
    /// session was stopped from outside, e.g. `logman stop`, or failed).
    pub main_ended: bool,
    /// The command-line session runs (started, and its thread has not returned).
    pub command_lines: bool,
}

impl SessionStats {
    /// The counters as named drop counters, alongside the Linux source's per-type ones.
    /// ETW does not say which event type a lost event was, so these are per session.
    pub fn drops(&self) -> [(&'static str, u64); 5] {
        [
            ("etw_events_lost", self.events_lost),
            ("etw_buffers_lost", self.buffers_lost),
            ("etw_cmdline_events_lost", self.cmdline_events_lost),
            ("etw_cmdline_buffers_lost", self.cmdline_buffers_lost),
            ("malformed", self.malformed),
        ]
    }
}

/// The running sessions. Dropping them stops them.
pub struct EtwSessions {
    #[cfg(windows)]
    inner: imp::Running,
    #[cfg(not(windows))]
    never: std::convert::Infallible,
}

impl EtwSessions {
    /// Starts both sessions and their processing threads. Every event from then on reaches
    /// `sink`, so a process snapshot taken afterwards leaves no gap.
    pub fn start(config: &SessionConfig, sink: Sink) -> Result<Self, EtwError> {
        #[cfg(windows)]
        {
            Ok(Self {
                inner: imp::Running::start(&config.effective(), sink)?,
            })
        }
        #[cfg(not(windows))]
        {
            let _ = (config, sink);
            Err(EtwError::Unsupported)
        }
    }

    pub fn stats(&self) -> SessionStats {
        #[cfg(windows)]
        {
            self.inner.stats()
        }
        #[cfg(not(windows))]
        match self.never {}
    }

    pub fn health(&self) -> SessionHealth {
        #[cfg(windows)]
        {
            self.inner.health()
        }
        #[cfg(not(windows))]
        match self.never {}
    }

    /// Stops both sessions; events still buffered are discarded.
    pub fn stop(self) {
        #[cfg(windows)]
        {
            self.inner.stop()
        }
        #[cfg(not(windows))]
        match self.never {}
    }
}

#[cfg(windows)]
mod imp {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ferrisetw::parser::Parser;
    use ferrisetw::provider::{kernel_providers, EventFilter, Provider};
    use ferrisetw::trace::{
        stop_trace_by_name, KernelTrace, LoggingMode, TraceError, TraceProperties, TraceTrait,
        UserTrace,
    };
    use ferrisetw::{EventRecord, SchemaLocator, GUID};
    use windows::core::PCWSTR;
    use windows::Win32::Foundation::ERROR_SUCCESS;
    use windows::Win32::System::Diagnostics::Etw::{
        ControlTraceW, CONTROLTRACE_HANDLE, EVENT_TRACE_CONTROL_QUERY, EVENT_TRACE_PROPERTIES,
    };

    use super::{SessionConfig, SessionHealth, SessionStats, Sink};
    use crate::device_path::DeviceMap;
    use crate::properties::{EventProperties, PropertyError};
    use crate::provider::{
        ProviderKind, KERNEL_NETWORK, KERNEL_NETWORK_KEYWORD_IPV4, KERNEL_NETWORK_KEYWORD_IPV6,
        KERNEL_PROCESS, KERNEL_PROCESS_KEYWORD_PROCESS, NETWORK_EVENT_IDS, PROCESS_EVENT_IDS,
    };
    use crate::translate::{EventHeader, Translator};
    use crate::EtwError;

    #[derive(Default)]
    struct Shared {
        malformed: AtomicU64,
        main_ended: AtomicBool,
        cmdline_ended: AtomicBool,
    }

    pub struct Running {
        main: Option<UserTrace>,
        cmdline: Option<KernelTrace>,
        name: String,
        cmdline_name: String,
        shared: Arc<Shared>,
    }

    /// ferrisetw's parser as a property source: raw bytes only, decoded by
    /// [`EventProperties`]' readers (ferrisetw's typed readers would panic on some types and
    /// read ports in the wrong byte order).
    struct ParserProperties<'a, 's, 'r>(&'a Parser<'s, 'r>);

    impl EventProperties for ParserProperties<'_, '_, '_> {
        fn raw(&self, name: &str) -> Result<Cow<'_, [u8]>, PropertyError> {
            self.0
                .try_parse::<Vec<u8>>(name)
                .map(Cow::Owned)
                .map_err(|_| PropertyError::Missing(name.to_string()))
        }
    }

    impl Running {
        pub fn start(config: &SessionConfig, sink: Sink) -> Result<Self, EtwError> {
            let shared = Arc::new(Shared::default());
            let devices = DeviceMap::from_system().unwrap_or_else(|err| {
                tracing::warn!(%err, "no drive-letter table: image paths stay NT device paths");
                DeviceMap::default()
            });
            let translator = Arc::new(Mutex::new(Translator::new(devices).with_reload(
                Box::new(|| DeviceMap::from_system().ok()),
                Duration::from_secs(30),
            )));

            let main = start_with_retry(&config.name, || {
                let callback = |translator: Arc<Mutex<Translator>>| {
                    let sink = Arc::clone(&sink);
                    let shared = Arc::clone(&shared);
                    move |record: &EventRecord, locator: &SchemaLocator| {
                        on_event(record, locator, &translator, &sink, &shared)
                    }
                };
                let process = Provider::by_guid(GUID::from_u128(KERNEL_PROCESS))
                    .any(KERNEL_PROCESS_KEYWORD_PROCESS)
                    .add_filter(EventFilter::ByEventIds(PROCESS_EVENT_IDS.to_vec()))
                    .add_callback(callback(Arc::clone(&translator)))
                    .build();
                let network = Provider::by_guid(GUID::from_u128(KERNEL_NETWORK))
                    .any(KERNEL_NETWORK_KEYWORD_IPV4 | KERNEL_NETWORK_KEYWORD_IPV6)
                    .add_filter(EventFilter::ByEventIds(NETWORK_EVENT_IDS.to_vec()))
                    .add_callback(callback(Arc::clone(&translator)))
                    .build();
                UserTrace::new()
                    .named(config.name.clone())
                    .set_trace_properties(properties(config, true))
                    .enable(process)
                    .enable(network)
                    .start()
            })?;
            let (main, main_handle) = main;
            spawn_processing("etw-main", Arc::clone(&shared), false, move || {
                UserTrace::process_from_handle(main_handle)
            })?;

            let cmdline_name = config.command_line_session_name();
            let cmdline = if config.command_lines {
                match start_command_line_session(config, &cmdline_name, &sink, &shared) {
                    Ok(trace) => Some(trace),
                    Err(err) => {
                        tracing::warn!(
                            %err,
                            "the command-line session did not start: process starts will \
                             arrive without argv"
                        );
                        shared.cmdline_ended.store(true, Ordering::Relaxed);
                        None
                    }
                }
            } else {
                shared.cmdline_ended.store(true, Ordering::Relaxed);
                None
            };

            tracing::info!(
                session = %config.name,
                buffer_kib = config.buffer_kib,
                min_buffers = config.min_buffers,
                max_buffers = config.max_buffers,
                command_lines = cmdline.is_some(),
                "ETW sessions started"
            );
            Ok(Self {
                main: Some(main),
                cmdline,
                name: config.name.clone(),
                cmdline_name,
                shared,
            })
        }

        pub fn stats(&self) -> SessionStats {
            let (events_lost, buffers_lost) = query_lost(&self.name).unwrap_or_else(|err| {
                tracing::debug!(%err, "querying the main ETW session");
                (0, 0)
            });
            let (cmdline_events_lost, cmdline_buffers_lost) = if self.cmdline.is_some() {
                query_lost(&self.cmdline_name).unwrap_or_else(|err| {
                    tracing::debug!(%err, "querying the command-line ETW session");
                    (0, 0)
                })
            } else {
                (0, 0)
            };
            SessionStats {
                events_lost,
                buffers_lost,
                cmdline_events_lost,
                cmdline_buffers_lost,
                malformed: self.shared.malformed.load(Ordering::Relaxed),
            }
        }

        pub fn health(&self) -> SessionHealth {
            SessionHealth {
                main_ended: self.shared.main_ended.load(Ordering::Relaxed),
                command_lines: self.cmdline.is_some()
                    && !self.shared.cmdline_ended.load(Ordering::Relaxed),
            }
        }

        pub fn stop(mut self) {
            self.stop_all();
        }

        fn stop_all(&mut self) {
            if let Some(trace) = self.cmdline.take() {
                if let Err(err) = trace.stop() {
                    tracing::warn!(?err, session = %self.cmdline_name, "stopping ETW session");
                }
            }
            if let Some(trace) = self.main.take() {
                if let Err(err) = trace.stop() {
                    tracing::warn!(?err, session = %self.name, "stopping ETW session");
                }
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop_all();
        }
    }

    fn properties(config: &SessionConfig, ordered: bool) -> TraceProperties {
        // One shared buffer keeps events in the order they were logged across CPUs (a stop
        // never precedes its start). The command-line session only feeds a lookup, and the
        // kernel logger's native mode is per-CPU buffers.
        let mut mode = LoggingMode::EVENT_TRACE_REAL_TIME_MODE;
        if ordered {
            mode |= LoggingMode::EVENT_TRACE_NO_PER_PROCESSOR_BUFFERING;
        }
        TraceProperties {
            buffer_size: config.buffer_kib,
            min_buffer: config.min_buffers,
            max_buffer: config.max_buffers,
            flush_timer: config.flush_timer,
            log_file_mode: mode,
        }
    }

    fn start_command_line_session(
        config: &SessionConfig,
        name: &str,
        sink: &Sink,
        shared: &Arc<Shared>,
    ) -> Result<KernelTrace, EtwError> {
        let translator = Arc::new(Mutex::new(Translator::new(DeviceMap::default())));
        let (trace, handle) = start_with_retry(name, || {
            let translator = Arc::clone(&translator);
            let sink = Arc::clone(sink);
            let shared = Arc::clone(shared);
            let provider = Provider::kernel(&kernel_providers::PROCESS_PROVIDER)
                .add_callback(move |record: &EventRecord, locator: &SchemaLocator| {
                    on_event(record, locator, &translator, &sink, &shared)
                })
                .build();
            // Process events only: the measured minimum holds a burst of tens of thousands
            // of starts, whatever budget the main session got.
            let sizing = SessionConfig {
                flush_timer: config.flush_timer,
                ..SessionConfig::default()
            }
            .effective();
            KernelTrace::new()
                .named(name.to_string())
                .set_trace_properties(properties(&sizing, false))
                .enable(provider)
                .start()
        })?;
        spawn_processing("etw-cmdline", Arc::clone(shared), true, move || {
            KernelTrace::process_from_handle(handle)
        })?;
        Ok(trace)
    }

    /// Starts a session; if one of that name survived a previous run, stops it and retries once.
    fn start_with_retry<T>(
        name: &str,
        mut start: impl FnMut() -> Result<T, TraceError>,
    ) -> Result<T, EtwError> {
        match start() {
            Ok(started) => Ok(started),
            Err(TraceError::EtwNativeError(
                ferrisetw::native::EvntraceNativeError::AlreadyExist,
            )) => {
                tracing::warn!(
                    session = name,
                    "replacing an ETW session left by a previous run"
                );
                if let Err(err) = stop_trace_by_name(name) {
                    tracing::warn!(?err, session = name, "stopping the stale session");
                }
                start().map_err(|err| session_error(name, err))
            }
            Err(err) => Err(session_error(name, err)),
        }
    }

    fn session_error(name: &str, err: TraceError) -> EtwError {
        let message = match err {
            TraceError::EtwNativeError(ferrisetw::native::EvntraceNativeError::IoError(io))
                if io.raw_os_error() == Some(5) =>
            {
                "access denied: ETW kernel sessions need an administrator or LocalSystem"
                    .to_string()
            }
            other => format!("{other:?}"),
        };
        EtwError::Session {
            session: name.to_string(),
            message,
        }
    }

    fn spawn_processing(
        thread: &str,
        shared: Arc<Shared>,
        cmdline: bool,
        process: impl FnOnce() -> Result<(), TraceError> + Send + 'static,
    ) -> Result<(), EtwError> {
        let name = thread.to_string();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                // ProcessTrace returns when the session stops (ours, or stopped from outside
                // with `logman stop`); either way no more events come from it.
                let result = process();
                let flag = if cmdline {
                    &shared.cmdline_ended
                } else {
                    &shared.main_ended
                };
                flag.store(true, Ordering::Relaxed);
                match result {
                    Ok(()) => tracing::info!(thread = %name, "ETW processing ended"),
                    Err(err) => tracing::error!(thread = %name, ?err, "ETW processing failed"),
                }
            })
            .map(drop)
            .map_err(|source| EtwError::Os {
                context: format!("spawning the {thread} thread"),
                source,
            })
    }

    fn on_event(
        record: &EventRecord,
        locator: &SchemaLocator,
        translator: &Mutex<Translator>,
        sink: &Sink,
        shared: &Shared,
    ) {
        let Some(provider) = ProviderKind::from_guid(record.provider_id().to_u128()) else {
            return;
        };
        let header = EventHeader {
            provider,
            event_id: record.event_id(),
            opcode: record.opcode(),
            pid: record.process_id(),
            timestamp: record.raw_timestamp(),
        };
        if !header.is_wanted() {
            return;
        }
        let schema = match locator.event_schema(record) {
            Ok(schema) => schema,
            Err(err) => {
                malformed(shared, || {
                    format!("{}: no schema: {err:?}", provider.name())
                });
                return;
            }
        };
        let parser = Parser::create(record, &schema);
        // A poisoned lock only means an earlier callback panicked mid-translation; the
        // translator holds no invariant that panic could break.
        let mut translator = translator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match translator.translate(&header, &ParserProperties(&parser)) {
            Ok(Some(out)) => sink(out),
            Ok(None) => {}
            Err(err) => malformed(shared, || err.to_string()),
        }
    }

    /// Counts a malformed event; logs the 1st, 2nd, 4th, 8th, ... so a systematic problem is
    /// visible without flooding the log.
    fn malformed(shared: &Shared, describe: impl FnOnce() -> String) {
        let count = shared.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            tracing::warn!(count, event = %describe(), "malformed ETW event");
        }
    }

    /// `EventsLost` and `RealTimeBuffersLost + LogBuffersLost` of a running session.
    fn query_lost(name: &str) -> Result<(u64, u64), EtwError> {
        /// EVENT_TRACE_PROPERTIES followed by room for the two names ControlTraceW writes back.
        #[repr(C)]
        struct Query {
            properties: EVENT_TRACE_PROPERTIES,
            names: [u16; 2048],
        }
        let mut query = Query {
            properties: EVENT_TRACE_PROPERTIES::default(),
            names: [0; 2048],
        };
        let base = std::mem::size_of::<EVENT_TRACE_PROPERTIES>() as u32;
        query.properties.Wnode.BufferSize = std::mem::size_of::<Query>() as u32;
        query.properties.LoggerNameOffset = base;
        query.properties.LogFileNameOffset = base + 1024 * 2;
        let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
        // SAFETY: `wide` is NUL-terminated; `query` is a properties block as large as its
        // Wnode.BufferSize says, with both name offsets inside it.
        let status = unsafe {
            ControlTraceW(
                CONTROLTRACE_HANDLE { Value: 0 },
                PCWSTR::from_raw(wide.as_ptr()),
                &mut query.properties,
                EVENT_TRACE_CONTROL_QUERY,
            )
        };
        if status != ERROR_SUCCESS {
            return Err(EtwError::Os {
                context: format!("ControlTraceW(QUERY, {name})"),
                source: std::io::Error::from_raw_os_error(status.0 as i32),
            });
        }
        let p = &query.properties;
        Ok((
            u64::from(p.EventsLost),
            u64::from(p.RealTimeBuffersLost) + u64::from(p.LogBuffersLost),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_never_below_the_measured_minimum() {
        let tiny = SessionConfig {
            buffer_kib: 32,
            min_buffers: 4,
            max_buffers: 8,
            flush_timer: Duration::ZERO,
            ..SessionConfig::default()
        }
        .effective();
        assert_eq!(
            (tiny.buffer_kib, tiny.min_buffers, tiny.max_buffers),
            (256, 64, 64)
        );
        assert_eq!(tiny.flush_timer, Duration::from_secs(1));
        let huge = SessionConfig {
            buffer_kib: 8 << 10,
            ..SessionConfig::default()
        }
        .effective();
        assert_eq!(huge.buffer_kib, MAX_BUFFER_KIB);
        // The collector's default budget, 16 MiB, is exactly the measured minimum.
        let budget = SessionConfig::default()
            .with_budget_bytes(16 << 20)
            .effective();
        assert_eq!(
            (budget.buffer_kib, budget.min_buffers, budget.max_buffers),
            (256, 64, 128)
        );
        let small = SessionConfig::default()
            .with_budget_bytes(1 << 20)
            .effective();
        assert_eq!(small.min_buffers, 64);
        let big = SessionConfig::default()
            .with_budget_bytes(64 << 20)
            .effective();
        assert_eq!((big.min_buffers, big.max_buffers), (256, 512));
        let default = SessionConfig::default().effective();
        assert!(default.buffer_kib * default.min_buffers >= 256 * 64);
        assert_eq!(default.command_line_session_name(), "Osprey-Sensor-CmdLine");
    }

    #[test]
    fn drop_counters_have_stable_names() {
        let stats = SessionStats {
            events_lost: 1,
            buffers_lost: 2,
            cmdline_events_lost: 3,
            cmdline_buffers_lost: 4,
            malformed: 5,
        };
        let names: Vec<_> = stats
            .drops()
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(
            names,
            [
                "etw_events_lost=1",
                "etw_buffers_lost=2",
                "etw_cmdline_events_lost=3",
                "etw_cmdline_buffers_lost=4",
                "malformed=5"
            ]
        );
    }

    #[cfg(not(windows))]
    #[test]
    fn elsewhere_the_source_says_it_needs_windows() {
        let sink: Sink = Arc::new(|_| {});
        let err = EtwSessions::start(&SessionConfig::default(), sink)
            .err()
            .expect("stub");
        assert_eq!(err.to_string(), "ETW is only available on Windows");
    }
}
