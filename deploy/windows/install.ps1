#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Installs or updates the Osprey collector as a Windows service.

.DESCRIPTION
    Copies osprey-collector.exe to the install directory, prepares the data directory
    (configuration and spool, readable by SYSTEM and Administrators only: the configuration holds
    NATS credentials), writes a starting configuration if there is none, registers the service
    "OspreyCollector" (LocalSystem, automatic start, restart on failure) and starts it.

    The service runs:
        "<InstallDir>\osprey-collector.exe" --service --config "<DataDir>\collector.yaml"
    --service makes the binary connect to the Service Control Manager (a plain console program
    registered as a service fails with error 1053). The configuration location is explicit
    because the collector's built-in default is the Linux path /etc/osprey/collector.yaml.

    Running it again updates the binary and the service's command line; an existing
    configuration is kept unless -ForceConfig is given.

.EXAMPLE
    .\install.ps1 -Binary .\osprey-collector.exe -NatsUrl nats://nats.example.internal:4222

.EXAMPLE
    .\install.ps1 -Binary .\osprey-collector.exe -Config .\collector.yaml -ForceConfig
#>
[CmdletBinding()]
param(
    # The osprey-collector.exe to install (built for x86_64-pc-windows-gnu or -msvc).
    [Parameter(Mandatory = $true)]
    [string] $Binary,
    [string] $InstallDir = (Join-Path $env:ProgramFiles 'Osprey'),
    [string] $DataDir = (Join-Path $env:ProgramData 'Osprey'),
    # A collector.yaml to install; without it a starting configuration is written.
    [string] $Config,
    # Replace an existing configuration with -Config (or the starting one).
    [switch] $ForceConfig,
    # NATS URL written into the starting configuration.
    [string] $NatsUrl = 'nats://127.0.0.1:4222',
    # Register the service without starting it.
    [switch] $NoStart
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$ServiceName = 'OspreyCollector'   # collector/src/service.rs SERVICE_NAME
$ExeName = 'osprey-collector.exe'

function Invoke-Native {
    # Runs a native tool and fails on a non-zero exit code (PowerShell 5.1 does not).
    param([string] $Tool, [string[]] $Arguments)
    & $Tool @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "$Tool $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

if (-not (Test-Path -LiteralPath $Binary -PathType Leaf)) {
    throw "No such file: $Binary"
}

# Stop a running instance first: its executable cannot be replaced while it runs.
$service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($service -and $service.Status -ne 'Stopped') {
    Write-Host "Stopping $ServiceName"
    Stop-Service -Name $ServiceName -Force
    $service.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(60))
}

New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
$exe = Join-Path $InstallDir $ExeName
Copy-Item -LiteralPath $Binary -Destination $exe -Force

# Data directory: configuration (NATS credentials) and the findings spool. Only SYSTEM (S-1-5-18)
# and Administrators (S-1-5-32-544); SIDs, so it works whatever the system language.
$spoolDir = Join-Path $DataDir 'spool'
New-Item -ItemType Directory -Force -Path $spoolDir | Out-Null
Invoke-Native icacls.exe @($DataDir, '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)F', '*S-1-5-32-544:(OI)(CI)F')

$configPath = Join-Path $DataDir 'collector.yaml'
if ($ForceConfig -or -not (Test-Path -LiteralPath $configPath)) {
    if ($Config) {
        Copy-Item -LiteralPath $Config -Destination $configPath -Force
    } else {
        # Single-quoted YAML strings: backslashes in Windows paths stay literal.
        @"
# osprey-collector configuration (Windows). See deploy/collector.yaml for every key.
nats:
  url: '$NatsUrl'
  # credentials: '$DataDir\host.creds'
spool:
  dir: '$spoolDir'
sensor:
  # On Windows: the ETW buffer budget of the main session, in bytes (256 KiB buffers, never
  # fewer than 64; see docs/windows.md).
  ring_buffer_bytes: 16777216
"@ | Set-Content -LiteralPath $configPath -Encoding UTF8
    }
    Write-Host "Configuration: $configPath"
} else {
    Write-Host "Keeping the existing configuration: $configPath"
}

$binPath = "`"$exe`" --service --config `"$configPath`""
if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
    # The registry value the SCM reads at the next start: `sc.exe config binPath=` would need
    # the embedded quotes to survive PowerShell 5.1's native argument passing, which they don't.
    Set-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Services\$ServiceName" -Name ImagePath -Value $binPath
    Set-Service -Name $ServiceName -StartupType Automatic
} else {
    # LocalSystem: ETW kernel sessions need administrator rights (SeSystemProfilePrivilege).
    New-Service -Name $ServiceName `
        -BinaryPathName $binPath `
        -DisplayName 'Osprey collector' `
        -Description 'Osprey host sensor: ETW process and network events, detections, findings to NATS.' `
        -StartupType Automatic | Out-Null
}

# Restart after 5 s, 5 s, then 60 s; the failure count resets after a day. failureflag 1 applies
# these actions also when the collector stops with an error exit code, not only on crashes.
Invoke-Native sc.exe @('failure', $ServiceName, 'reset=', '86400', 'actions=', 'restart/5000/restart/5000/restart/60000')
Invoke-Native sc.exe @('failureflag', $ServiceName, '1')

if (-not $NoStart) {
    Start-Service -Name $ServiceName
    (Get-Service -Name $ServiceName).WaitForStatus('Running', [TimeSpan]::FromSeconds(30))
}
Get-Service -Name $ServiceName | Format-Table -AutoSize Name, Status, StartType
