"""SIEM delivery: every alert, finding change and agent action, in formats SIEMs ingest
without a custom parser (ECS JSON, CEF, Splunk HEC), to each configured destination.

records.py builds one format-neutral record per change; ecs.py and cef.py write it;
senders.py carries it (syslog RFC 5424 over UDP/TCP/unix, HTTP); outbox.py queues and
retries per destination; publisher.py routes records by stream. docs/siem.md lists
every field.
"""
