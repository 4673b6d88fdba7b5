"""Alerts: tell people when a deny finding opens, by webhook and/or syslog.

`AlertDispatcher` owns one worker thread and a bounded queue, so delivering an
alert (and retrying a slow or failing receiver) never holds up event ingestion.
"""

from server.alerts.dispatcher import AlertDispatcher
from server.alerts.summary import slack_text, summary_text
from server.alerts.syslog import SyslogSender, format_rfc5424
from server.alerts.webhook import WebhookSender

__all__ = [
    "AlertDispatcher",
    "SyslogSender",
    "WebhookSender",
    "format_rfc5424",
    "slack_text",
    "summary_text",
]
