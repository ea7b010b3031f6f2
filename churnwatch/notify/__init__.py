"""The notifier: alert transitions from `churnwatch.alerts` to Slack, PagerDuty and webhooks.

Pure modules (no I/O, no clock): `transition` (parse the wire form), `routes` (which routes
take a transition), `payloads` (what each target receives), `ratelimit` (token bucket), `retry`
(backoff and Retry-After). I/O: `delivery` (HTTP with retries), `ledger` (dedupe and snooze),
`service` (the `Notifier` the agent calls), `metrics`.
"""
