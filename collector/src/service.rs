//! Running the collector as a Windows service.
//!
//! The Service Control Manager starts a service's executable and expects it to connect back
//! through `StartServiceCtrlDispatcherW` within 30 seconds; a plain console program registered
//! as a service never does and fails with error 1053. `main` calls [`run_service`] when started
//! with `--service` (the command line `deploy/windows/install.ps1` registers); the collector's
//! usual run function goes in, and gets a [`ShutdownSignal`] that fires on Stop or system
//! shutdown.
#![cfg(windows)]

use std::ffi::OsString;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::{define_windows_service, service_dispatcher};

/// The name the service is registered under (deploy/windows/install.ps1 uses the same).
pub const SERVICE_NAME: &str = "OspreyCollector";

/// How long the SCM should wait for a stop before it considers the service hung: the
/// collector flushes its publisher (a few seconds) and stops its ETW sessions.
const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

/// `StartServiceCtrlDispatcherW` from a process the SCM did not start.
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;

type ServiceRun = Box<dyn FnOnce(ShutdownSignal) -> anyhow::Result<()> + Send>;

/// The run function, handed from `run_service` to the service thread the SCM starts.
static RUN: Mutex<Option<ServiceRun>> = Mutex::new(None);
/// What the run function returned, handed back to `run_service`.
static OUTCOME: Mutex<Option<anyhow::Result<()>>> = Mutex::new(None);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "--service is for the installed Windows service (deploy/windows/install.ps1); \
         this process was not started by the Service Control Manager: run without --service \
         in a console"
    )]
    NotUnderScm,
    #[error("Windows service dispatcher: {0}")]
    Dispatcher(#[source] windows_service::Error),
    #[error("{0:#}")]
    Run(anyhow::Error),
}

/// Resolves when the SCM asks the service to stop (Stop, or the system shutting down).
#[derive(Clone, Debug)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// Waits for the stop request (pass this where the console build waits for Ctrl+C).
    pub async fn requested(mut self) {
        // An error means the sender is gone, which only happens once the service is ending.
        let _ = self.0.wait_for(|&stop| stop).await;
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs `run` as the service: connects to the SCM (blocking this thread until the service
/// stops), reports Running, calls `run` on the service thread with a [`ShutdownSignal`], and
/// reports Stopped with its outcome (a failure makes the SCM apply the recovery actions).
pub fn run_service<F>(run: F) -> Result<(), ServiceError>
where
    F: FnOnce(ShutdownSignal) -> anyhow::Result<()> + Send + 'static,
{
    *lock(&RUN) = Some(Box::new(run));
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => {}
        Err(windows_service::Error::Winapi(err))
            if err.raw_os_error() == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) =>
        {
            return Err(ServiceError::NotUnderScm);
        }
        Err(err) => return Err(ServiceError::Dispatcher(err)),
    }
    if lock(&RUN).take().is_some() {
        // The dispatcher returned without ever starting the service (seen under wine).
        return Err(ServiceError::NotUnderScm);
    }
    match lock(&OUTCOME).take() {
        Some(Err(err)) => Err(ServiceError::Run(err)),
        _ => Ok(()),
    }
}

define_windows_service!(ffi_service_main, service_main);

/// Called by the SCM on a thread of its own. Arguments given to `sc start` are ignored: the
/// configuration comes from the registered command line (`--config`).
fn service_main(_arguments: Vec<OsString>) {
    if let Err(err) = run_under_scm() {
        // Only registration can fail before a status handle exists: nothing to report to.
        *lock(&OUTCOME) = Some(Err(err));
    }
}

/// A status handle the control handler (on the dispatcher thread) can use too.
#[derive(Clone, Copy)]
struct StatusHandle(ServiceStatusHandle);

// SAFETY: a SERVICE_STATUS_HANDLE is an opaque token that SetServiceStatus accepts from any
// thread of the service's process; it owns no memory and needs no closing.
unsafe impl Send for StatusHandle {}
unsafe impl Sync for StatusHandle {}

/// Registers with the SCM and runs; the run's outcome goes to `OUTCOME` before Stopped is
/// reported (after Stopped the dispatcher returns and `run_service` reads it).
fn run_under_scm() -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let status: Arc<OnceLock<StatusHandle>> = Arc::new(OnceLock::new());
    let handler_status = Arc::clone(&status);
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(handle) = handler_status.get() {
                report(
                    *handle,
                    ServiceState::StopPending,
                    ServiceExitCode::Win32(0),
                );
            }
            let _ = stop_tx.send(true);
            ServiceControlHandlerResult::NoError
        }
        // The SCM asks for the current status; SetServiceStatus already told it.
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .map_err(|err| anyhow::anyhow!("registering the service control handler: {err}"))?;
    let handle = StatusHandle(handle);
    let _ = status.set(handle);

    report(handle, ServiceState::Running, ServiceExitCode::Win32(0));
    let result = match lock(&RUN).take() {
        Some(run) => run(ShutdownSignal(stop_rx)),
        None => Err(anyhow::anyhow!("the service started twice in one process")),
    };
    // A service-specific exit code marks the stop as a failure, so the SCM's recovery actions
    // (restart, set by install.ps1) apply.
    let exit = match &result {
        Ok(()) => ServiceExitCode::Win32(0),
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "the collector service failed");
            ServiceExitCode::ServiceSpecific(1)
        }
    };
    *lock(&OUTCOME) = Some(result);
    report(handle, ServiceState::Stopped, exit);
    Ok(())
}

fn report(handle: StatusHandle, state: ServiceState, exit_code: ServiceExitCode) {
    let pending = matches!(state, ServiceState::StopPending);
    let status = ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if matches!(state, ServiceState::Running) {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code,
        checkpoint: u32::from(pending),
        wait_hint: if pending {
            STOP_WAIT_HINT
        } else {
            Duration::ZERO
        },
        process_id: None,
    };
    if let Err(err) = handle.0.set_service_status(status) {
        tracing::warn!(%err, ?state, "reporting the service status");
    }
}

/// A poisoned lock only means a panic elsewhere; the Option inside is still meaningful.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
