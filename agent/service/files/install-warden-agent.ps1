#Requires -RunAsAdministrator
<#
.SYNOPSIS
  Installs (or re-installs) the Warden endpoint agent as the Windows service "WardenAgent".

.DESCRIPTION
  `warden-agent install-service` writes this script next to warden-agent.exe and
  runs it. To roll out by hand, or from Intune / SCCM / a GPO startup script:

    $env:WARDEN_AGENT_SERVER_URL    = 'https://warden.example.org'
    $env:WARDEN_AGENT_ENROLL_SECRET = '<enrollment secret>'
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File install-warden-agent.ps1

  Every WARDEN_AGENT_* variable of this shell becomes part of the service's
  environment, except the enrollment secret: the service's registry key is
  readable by every user, so the secret goes to a file only SYSTEM and
  Administrators can read, and the service gets its path
  (WARDEN_AGENT_ENROLL_SECRET_FILE).

  The Service Control Manager runs python.exe on warden-agent-service.py (the
  agent's service host, agent/service/windows.py) as LocalSystem: python.exe itself,
  because a launcher such as warden-agent.exe or a venv's python.exe would start
  Python as a child process, which cannot answer the SCM (errors 1053, 1063).
  The agent logs to %ProgramData%\Warden\logs\agent.log unless
  WARDEN_AGENT_LOG_FILE says otherwise.
#>
param(
    [string]$Python = {{PYTHON}},
    [string]$PythonFlags = {{PYTHON_FLAGS}},
    [string]$Launcher = {{LAUNCHER}},
    [string]$StateDir = {{STATE_DIR}}
)
$ErrorActionPreference = 'Stop'
$Name = 'WardenAgent'
$ConfigDir = Join-Path $env:ProgramData 'Warden'

foreach ($file in @($Python, $Launcher)) {
    if (-not (Test-Path -LiteralPath $file -PathType Leaf)) { throw "not found: $file" }
}
$flags = @($PythonFlags -split ' ' | Where-Object { $_ })

# Pre-flight, with this shell's settings: the agent's packages load and the
# settings are valid, or the install stops here rather than at service start.
# It also refuses a Warden folder (or state folder) this script did not make:
# one that a user owns, or that grants anyone but SYSTEM, Administrators and
# TrustedInstaller the right to change it or anything in it (agent/host/ownership.py).
# A user can create %ProgramData%\Warden before the install and put an
# agent.toml there whose notify_command is their program; taking that folder
# over would keep their file and run their program as SYSTEM.
& $Python @flags $Launcher --check
if ($LASTEXITCODE -ne 0) { throw "the agent's pre-flight check failed (exit $LASTEXITCODE); see above" }

# The agent token, the spool and the secret live here: SYSTEM (S-1-5-18) and
# Administrators (S-1-5-32-544) only, inherited by every file created inside.
# A folder that exists passed the pre-flight and is left as it is. One made here
# is given to Administrators and closed at once; anything inside it then was
# planted in the moment between (ProgramData lets users add files to a new
# folder until its inherited access is removed), and the install stops.
function New-PrivateDirectory([string]$Path) {
    if (Test-Path -LiteralPath $Path) { return }
    New-Item -ItemType Directory -Path $Path | Out-Null
    & icacls.exe $Path /setowner '*S-1-5-32-544' /C | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls could not give $Path to Administrators" }
    & icacls.exe $Path /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' /C | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls could not restrict $Path" }
    if (Get-ChildItem -LiteralPath $Path -Force) {
        throw "$Path is not empty though this install just created it: someone put files there meanwhile. Look at them, remove the folder (Remove-Item -LiteralPath '$Path' -Recurse -Force) and run the install again"
    }
}
New-PrivateDirectory $ConfigDir
New-PrivateDirectory $StateDir
New-PrivateDirectory (Join-Path $ConfigDir 'logs')

$environment = @("WARDEN_AGENT_STATE_DIR=$StateDir")
if (-not $env:WARDEN_AGENT_LOG_FILE) {
    $environment += "WARDEN_AGENT_LOG_FILE=$(Join-Path $ConfigDir 'logs\agent.log')"
}
Get-ChildItem env: |
    Where-Object { $_.Name -like 'WARDEN_AGENT_*' -and $_.Name -notin @('WARDEN_AGENT_ENROLL_SECRET', 'WARDEN_AGENT_STATE_DIR') } |
    ForEach-Object { $environment += "$($_.Name)=$($_.Value)" }
if ($env:WARDEN_AGENT_ENROLL_SECRET) {
    $secretFile = Join-Path $ConfigDir 'enroll-secret'
    Set-Content -LiteralPath $secretFile -Value $env:WARDEN_AGENT_ENROLL_SECRET -NoNewline -Encoding ASCII
    $environment += "WARDEN_AGENT_ENROLL_SECRET_FILE=$secretFile"
}

$binaryPath = (@("`"$Python`"") + $flags + @("`"$Launcher`"")) -join ' '
$serviceKey = "HKLM:\SYSTEM\CurrentControlSet\Services\$Name"
$existing = Get-Service -Name $Name -ErrorAction SilentlyContinue
if ($existing) {
    if ($existing.Status -ne 'Stopped') { Stop-Service -Name $Name -Force }
    # The command line goes to the registry as is: passed to sc.exe, Windows
    # PowerShell 5.1 would mangle its embedded quotes.
    Set-ItemProperty -LiteralPath $serviceKey -Name ImagePath -Value $binaryPath
} else {
    New-Service -Name $Name -BinaryPathName $binaryPath -DisplayName 'Warden agent' `
        -Description 'Detects banned messaging apps, points users to the approved alternative, reports to the Warden server.' `
        -StartupType Automatic | Out-Null
}
function Invoke-Sc([string[]]$Arguments) {
    & sc.exe @Arguments | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "sc.exe $($Arguments -join ' ') failed (exit $LASTEXITCODE)" }
}
# Delayed start: the agent is not worth slowing the boot for.
Invoke-Sc @('config', $Name, 'start=', 'delayed-auto')
# Restart after 5 s, 30 s, then every minute; forget failures after a day.
Invoke-Sc @('failure', $Name, 'reset=', '86400', 'actions=', 'restart/5000/restart/30000/restart/60000')
# Also restart when it exits with an error code, not only when it crashes.
Invoke-Sc @('failureflag', $Name, '1')
New-ItemProperty -Path $serviceKey -Name Environment `
    -PropertyType MultiString -Value $environment -Force | Out-Null

Start-Service -Name $Name
Get-Service -Name $Name | Format-Table -AutoSize Name, Status, StartType
