"""MDM connectors: phones and tablets, and the apps on them, read from the organisation's MDM.

A connector is a server-side sensor (docs/mobile.md). Each vendor module
(`intune`, `jamf`, `android`) turns its API into a stream of `MobileDevice` and
`MobileInstall` values (`inventory`), page by page; `sync` evaluates the apps
with the active policy and brings hosts and findings up to date through the same
finding lifecycle the agent API uses; `runner` runs syncs on demand and on each
connector's interval, one at a time across server processes (a lease in the
database).
"""
