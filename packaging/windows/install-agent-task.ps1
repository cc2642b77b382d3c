# Run the headless agent as a Windows start-up task (a Windows server, no one logged in).
# From an elevated PowerShell, after configuring the agent for the machine-wide settings folder:
#
#   $env:BACKAPP_AGENT_CONFIG_DIR = "C:\ProgramData\BackApp"
#   & "C:\Program Files\BackApp\backapp-agent.exe" configure --server https://backapp.example.org
#   .\install-agent-task.ps1 -Exe "C:\Program Files\BackApp\backapp-agent.exe"
#
# The task starts at boot as SYSTEM (which can read every file) and is restarted if it stops.
# Not tested on Windows by this project's CI; see packaging/README.md.
param(
    [string]$Exe = "$env:ProgramFiles\BackApp\backapp-agent.exe",
    [string]$ConfigDir = "$env:ProgramData\BackApp"
)
$ErrorActionPreference = "Stop"
$arguments = "/d /c set `"BACKAPP_AGENT_CONFIG_DIR=$ConfigDir`" && `"$Exe`" daemon"
$action = New-ScheduledTaskAction -Execute "$env:SystemRoot\System32\cmd.exe" -Argument $arguments
$trigger = New-ScheduledTaskTrigger -AtStartup
$settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -RestartCount 999 `
    -RestartInterval (New-TimeSpan -Minutes 1) -ExecutionTimeLimit ([TimeSpan]::Zero)
Register-ScheduledTask -TaskName "BackApp agent" -Action $action -Trigger $trigger `
    -Settings $settings -User "SYSTEM" -RunLevel Highest -Force | Out-Null
Start-ScheduledTask -TaskName "BackApp agent"
Write-Host "BackApp agent task installed and started."
