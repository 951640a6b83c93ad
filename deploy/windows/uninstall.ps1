#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Removes the Osprey collector service.

.DESCRIPTION
    Stops and deletes the "OspreyCollector" service, stops the collector's ETW sessions if a
    crash left them running (ETW sessions outlive their process), and removes the install
    directory. The data directory (configuration, NATS credentials, unsent findings in the
    spool) is kept unless -RemoveData is given.

.EXAMPLE
    .\uninstall.ps1
.EXAMPLE
    .\uninstall.ps1 -RemoveData
#>
[CmdletBinding()]
param(
    [string] $InstallDir = (Join-Path $env:ProgramFiles 'Osprey'),
    [string] $DataDir = (Join-Path $env:ProgramData 'Osprey'),
    [switch] $RemoveData
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$ServiceName = 'OspreyCollector'   # collector/src/service.rs SERVICE_NAME
# sensor-etw/src/session.rs: SessionConfig::default().name and its command-line session.
$EtwSessions = @('Osprey-Sensor', 'Osprey-Sensor-CmdLine')

$service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($service) {
    if ($service.Status -ne 'Stopped') {
        Write-Host "Stopping $ServiceName"
        Stop-Service -Name $ServiceName -Force
        $service.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(60))
    }
    & sc.exe delete $ServiceName
    if ($LASTEXITCODE -eq 1072) {
        Write-Warning "$ServiceName is marked for deletion; it disappears once every tool holding it (e.g. services.msc) is closed."
    } elseif ($LASTEXITCODE -ne 0) {
        throw "sc.exe delete $ServiceName failed with exit code $LASTEXITCODE"
    }
} else {
    Write-Host "$ServiceName is not installed"
}

foreach ($session in $EtwSessions) {
    # Exit code non-zero when the session does not exist, the normal case after a clean stop.
    & logman.exe stop $session -ets *> $null
    if ($LASTEXITCODE -eq 0) {
        Write-Host "Stopped the leftover ETW session $session"
    }
}
$global:LASTEXITCODE = 0

if (Test-Path -LiteralPath $InstallDir) {
    Remove-Item -LiteralPath $InstallDir -Recurse -Force
}
if ($RemoveData) {
    if (Test-Path -LiteralPath $DataDir) {
        Remove-Item -LiteralPath $DataDir -Recurse -Force
    }
} elseif (Test-Path -LiteralPath $DataDir) {
    Write-Host "Kept $DataDir (configuration and spool); -RemoveData deletes it"
}
